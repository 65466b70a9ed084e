#!/usr/bin/env bash
# tcpsplice test: a request through the resilient path gets its answer without waiting for a
# retransmission timer (the first-byte stall: ~205 ms per connection while splice-proxy
# corked every short request with MSG_MORE).
#
# On lossless links, curl in the client makes REQUESTS (20) requests to nginx, each on a new
# connection (1 KiB answers), through splice-proxy and then through HAProxy. No end and no
# proxy socket may retransmit anything (TcpRetransSegs and TcpExtTCPTimeouts unchanged in
# the client, the router and the server): a retransmission there is a segment the path
# lost or held. Every answer is byte-exact; the times to the first byte are printed.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-20}

topo_create
crowd_prepare 1024
nginx_start "$NS_S" "$XF_DOWN_PORT"
resilient_start --proxy-pidfile "$TEST_TMP/haproxy.pid"

retrans_total() {
    local ns sum=0 v
    for ns in "$NS_C" "$NS_R" "$NS_S"; do
        for c in TcpRetransSegs TcpExtTCPTimeouts; do
            v=$(ns_counter "$ns" "$c")
            sum=$((sum + ${v:-0}))
        done
    done
    echo "$sum"
}

# requests NAME: REQUESTS curl downloads, each on a new connection, checked; no retransmission.
requests() {
    local name=$1 before after i out firsts=()
    before=$(retrans_total)
    for ((i = 1; i <= REQUESTS; i++)); do
        out=$(nsx "$NS_C" curl -sS --max-time 10 -o "$TEST_TMP/got-$name" \
            -w '%{time_starttransfer}' "http://$SERVER_IP:$XF_DOWN_PORT/f") || fail "$name: request $i failed"
        [[ "$(sha256_of "$TEST_TMP/got-$name")" == "$CROWD_SHA" ]] || fail "$name: request $i: the answer is not byte-exact"
        firsts+=("$out")
    done
    after=$(retrans_total)
    log "$name: first byte after (s): ${firsts[*]}"
    check "$name: no segment retransmitted in $REQUESTS connections (retransmissions and timeouts: $((after - before)))" \
        [ "$((after - before))" -eq 0 ]
}

proxy_start
requests splice-proxy
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 20
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
requests haproxy
st=$(status_json)
check "the requests went through the proxies ($(json_get 'd["resilient"]["flows"]' <<<"$st") resilient flows)" \
    [ "$(json_get 'd["resilient"]["flows"]' <<<"$st")" -ge $((2 * REQUESTS)) ]
log "PASS: $((2 * REQUESTS)) requests through splice-proxy and HAProxy, none waiting on a retransmission"
