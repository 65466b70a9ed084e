#!/usr/bin/env bash
# tcpsplice test: a request through the resilient path gets its answer without waiting for a
# retransmission timer (the first-byte stall: ~205 ms per connection while splice-proxy
# corked every short request with MSG_MORE).
#
# On lossless links, curl in the client makes REQUESTS (20) requests to nginx, each on a new
# connection (1 KiB answers), through splice-proxy and then through HAProxy, with tcpdump at
# the client's and the server's interface. No retransmission timer may fire at either end
# (TcpExtTCPTimeouts: the stall was one), and no handshake segment and no request may appear
# twice. An answer segment sent twice is reported: the server's tail loss probe, a few ms after
# it (the clamped ACK comes later than its handshake's round trip suggested), is no stall.
# Every answer is byte-exact; the times to the first byte are printed. nginx closes with its
# answer's last bytes (FIN on the data); splice-proxy passes the FIN on in the same segment
# (checked for three in four answers at least, a FIN arriving after its data going alone):
# one packet fewer through the engine's queue per connection. HAProxy's is reported.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-20}

topo_create
crowd_prepare 1024
nginx_start "$NS_S" "$XF_DOWN_PORT"
resilient_start --proxy-pidfile "$TEST_TMP/haproxy.pid"

# resent NAME: the handshake and data segments that appear more than once in the captures
# (Tests/netns/resent.py: "KIND NAME: SEGMENT sent N times, again after MS ms").
resent() {
    local ns
    for ns in c s; do
        tcpdump -n -tt -S -r "$TEST_TMP/$1-$ns.pcap" 2>/dev/null | python3 "$NETNS_DIR/resent.py" "$1-$ns"
    done
}

# fins_on_data NAME: "WITH ALL": of the FINs from the server's address the client saw, those
# that carried data.
fins_on_data() {
    tcpdump -n -r "$TEST_TMP/$1-c.pcap" "src host $SERVER_IP and tcp[tcpflags] & tcp-fin != 0" 2>/dev/null \
        | awk '{ all++; if ($NF + 0 > 0) with++ } END { print with + 0, all + 0 }'
}

# requests NAME: REQUESTS curl downloads, each on a new connection, checked; no retransmission
# timer fired at either end, and no handshake or request segment was sent twice.
requests() {
    local name=$1 i out firsts=() again ns timeouts=() probes=() before_t=() before_p=()
    for ns in "$NS_C" "$NS_S"; do
        before_t+=("$(ns_counter "$ns" TcpExtTCPTimeouts)")
        before_p+=("$(ns_counter "$ns" TcpExtTCPLossProbes)")
    done
    capture_start "$name"
    for ((i = 1; i <= REQUESTS; i++)); do
        out=$(nsx "$NS_C" curl -sS --max-time 10 -o "$TEST_TMP/got-$name" \
            -w '%{time_starttransfer}' "http://$SERVER_IP:$XF_DOWN_PORT/f") || fail "$name: request $i failed"
        [[ "$(sha256_of "$TEST_TMP/got-$name")" == "$CROWD_SHA" ]] || fail "$name: request $i: the answer is not byte-exact"
        firsts+=("$out")
    done
    capture_stop "$name"
    i=0
    for ns in "$NS_C" "$NS_S"; do
        timeouts+=($(($(ns_counter "$ns" TcpExtTCPTimeouts) - before_t[i])))
        probes+=($(($(ns_counter "$ns" TcpExtTCPLossProbes) - before_p[i])))
        i=$((i + 1))
    done
    log "$name: first byte after (s): ${firsts[*]}"
    local twice
    twice=$(resent "$name")
    # A server whose answer is acknowledged only once the client has it (the clamp) measures a
    # longer round trip than its handshake showed, and may probe with its last segment a few
    # milliseconds later (a tail loss probe, RFC 8985): no stall, reported. A retransmission
    # timer (the 205 ms stall) never fires, and the handshake and the request go once.
    local with all
    read -r with all < <(fins_on_data "$name")
    FINS_ON_DATA[$name]="$with of $all"
    report "$name: retransmission timeouts client +${timeouts[0]}, server +${timeouts[1]}; tail loss probes client +${probes[0]}, server +${probes[1]}; answers' FINs on their last data: $with of $all${twice:+; segments seen twice: $(tr '\n' ';' <<<"$twice")}"
    check "$name: no retransmission timer fired at either end in $REQUESTS connections (TcpExtTCPTimeouts: client +${timeouts[0]}, server +${timeouts[1]}; $twice)" \
        [ "${timeouts[0]}" -eq 0 -a "${timeouts[1]}" -eq 0 ]
    again=$(grep '^handshake ' <<<"$twice" || true)
    check "$name: no handshake segment sent twice in $REQUESTS connections: $again" [ -z "$again" ]
    again=$(grep -F -e "$name-c: ('$CLIENT_IP." -e "$name-s: ('$CLIENT_IP." <<<"$twice" || true)
    check "$name: no request sent twice in $REQUESTS connections: $again" [ -z "$again" ]
}

declare -A FINS_ON_DATA
proxy_start
requests splice-proxy
read -r with all <<<"${FINS_ON_DATA[splice-proxy]/ of / }"
check "splice-proxy passed the server's FIN on with the answer's last bytes ($with of $all FINs carried data)" \
    [ "$all" -ge "$REQUESTS" -a $((4 * with)) -ge $((3 * all)) ]
# Without splice rules splice-proxy asks spliced nothing about its connections (no `decide`,
# a control message per connection that could only answer `proxy`).
st=$(status_json)
decided=$(( $(json_get splices.decidedProxy <<<"$st") + $(json_get splices.decidedSplice <<<"$st") + $(json_get splices.decidedBypass <<<"$st") + $(json_get splices.refused <<<"$st") ))
check "splice-proxy without rules sent no decide for its $REQUESTS connections ($decided decided)" [ "$decided" -eq 0 ]
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 20
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
requests haproxy
st=$(status_json)
check "the requests went through the proxies ($(json_get resilient.flows <<<"$st") resilient flows)" \
    [ "$(json_get resilient.flows <<<"$st")" -ge $((2 * REQUESTS)) ]
log "PASS: $((2 * REQUESTS)) requests through splice-proxy and HAProxy, none waiting on a retransmission"
