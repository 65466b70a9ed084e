#!/usr/bin/env bash
# tcpsplice test: a request through the resilient path gets its answer without waiting for a
# retransmission timer (the first-byte stall: ~205 ms per connection while splice-proxy
# corked every short request with MSG_MORE).
#
# On lossless links, curl in the client makes REQUESTS (20) requests to nginx, each on a new
# connection (1 KiB answers), through splice-proxy and then through HAProxy, with tcpdump at
# the client's and the server's interface. No handshake segment and no segment carrying data
# (the request, the answer) may appear twice on either link: a segment sent again is one the
# path lost or held past a retransmission timer. Every answer is byte-exact; the times to the
# first byte are printed.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-20}

topo_create
crowd_prepare 1024
nginx_start "$NS_S" "$XF_DOWN_PORT"
resilient_start --proxy-pidfile "$TEST_TMP/haproxy.pid"

# resent NAME: the handshake and data segments that appear more than once in a capture.
resent() {
    local ns
    for ns in c s; do
        tcpdump -n -tt -S -r "$TEST_TMP/$1-$ns.pcap" 2>/dev/null | python3 -c '
import re, sys, collections
seen = collections.Counter()
for line in sys.stdin:
    m = re.search(r"IP6? (\S+) > (\S+): Flags \[([^\]]*)\](?:, seq (\d+)(?::(\d+))?)?.*length (\d+)", line)
    if not m:
        continue
    src, dst, flags, seq, end, length = m.groups()
    if "S" not in flags and int(length) == 0:
        continue   # pure ACKs and bare FINs: not the handshake, the request or the answer
    seen[(src, dst, flags, seq, end)] += 1
for k, n in seen.items():
    if n > 1:
        print("%s: %s sent %d times" % (sys.argv[1], k, n))' "$ns"
    done
}

# requests NAME: REQUESTS curl downloads, each on a new connection, checked; nothing resent.
requests() {
    local name=$1 i out firsts=() again
    capture_start "$name"
    for ((i = 1; i <= REQUESTS; i++)); do
        out=$(nsx "$NS_C" curl -sS --max-time 10 -o "$TEST_TMP/got-$name" \
            -w '%{time_starttransfer}' "http://$SERVER_IP:$XF_DOWN_PORT/f") || fail "$name: request $i failed"
        [[ "$(sha256_of "$TEST_TMP/got-$name")" == "$CROWD_SHA" ]] || fail "$name: request $i: the answer is not byte-exact"
        firsts+=("$out")
    done
    capture_stop "$name"
    log "$name: first byte after (s): ${firsts[*]}"
    again=$(resent "$name")
    check "$name: no handshake, request or answer segment sent twice in $REQUESTS connections: $again" [ -z "$again" ]
}

proxy_start
requests splice-proxy
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 20
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
requests haproxy
st=$(status_json)
check "the requests went through the proxies ($(json_get resilient.flows <<<"$st") resilient flows)" \
    [ "$(json_get resilient.flows <<<"$st")" -ge $((2 * REQUESTS)) ]
log "PASS: $((2 * REQUESTS)) requests through splice-proxy and HAProxy, none waiting on a retransmission"
