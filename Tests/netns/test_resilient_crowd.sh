#!/usr/bin/env bash
# tcpsplice test: a crowd of 10,000 concurrent short downloads through the resilient path,
# with splice-proxy and with HAProxy as the proxy, every one byte-exact.
#
# nginx in the server namespace serves a 16 KiB file; crowd.py in the client starts
# CROWD_N (10,000) connections at once, each downloading it once (Connection: close), and
# checks every body's SHA-256. In one run, one after the other:
#   1  bypass: the rules and spliced, no proxy registered (the reference for the time)
#   2  resilient mode with splice-proxy: all byte-exact, every flow through the proxy;
#      the proxy holds two descriptors per connection and stops accepting at its budget
#      (the clients wait in its listen queue, none is refused)
#   3  resilient mode with HAProxy (maxconn 9900): all byte-exact, every flow through it
# The times are printed side by side with their ratio to bypass (the aim: within 2x), the
# packets the engine saw per download and what its queues dropped, and the slowest downloads
# (their ports, to find them in a capture), never asserted. A crowd of this size brings the
# engine to its packet rate and leaves tens of thousands of packets waiting; the kernel holds
# at most 65,536 per queue, so the resilient layout has a queue per direction and the reader
# drains the fullest first (Docs/packet-path.md). When a queue overflowed, a few downloads
# waited out retransmission timeouts of ~10 s and the crowd took 3-5x bypass.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${CROWD_N:-10000}
BYTES=${CROWD_BODY_BYTES:-16384}

topo_create
for ns in "$NS_C" "$NS_R" "$NS_S"; do load_sysctls "$ns"; done
[[ "$BYTES" -gt 0 ]] || fail "CROWD_BODY_BYTES must be positive"
crowd_prepare "$BYTES"
nginx_start "$NS_S" "$XF_DOWN_PORT"
resilient_start --proxy-pidfile "$TEST_TMP/haproxy.pid"

# modes_of_client: how the client's flows are spread over modes, reasons and proxies.
modes_of_client() {
    flows_json | flowcheck modes --src "$CLIENT_IP"
}
# validated: handshakes replayed to a proxy so far (spliced's count of clients validated).
validated() { status_json | json_get 'resilient.clientsValidated?0'; }
# engine_packets: packets spliced has seen, and what its queues dropped (full).
engine_packets() {
    local st
    st=$(status_json)
    echo "$(json_get packets.total <<<"$st") $(json_get sum 'queues.*.queueDropped' <<<"$st")"
}
declare -A PACKETS DROPS SYNACKS WAITS
# crowd NAME: N downloads at once, all byte-exact or the test fails. Counts the engine's packets per
# download and its queues' drops meanwhile, how long the ends' packets waited in its queues
# (Docs/packet-path.md, "Waiting in the queue"), and the SYN-ACKs the server had to send again.
crowd() {
    local p0 d0 p1 d1 s0 x0 rc=0
    read -r p0 d0 < <(engine_packets)
    status_json >"$TEST_TMP/status-before-$1.json"
    s0=$(ns_counter "$NS_S" TcpExtTCPSynRetrans)
    x0=$(tx_dropped "$NS_S" eth0)
    crowd_run "$1" "$SERVER_IP" "$XF_DOWN_PORT" "$N" --timeout 60 --deadline 300 || rc=$?
    SYNACKS[$1]="$(($(ns_counter "$NS_S" TcpExtTCPSynRetrans) - s0)) SYN-ACKs sent again by the server (its link refused $(($(tx_dropped "$NS_S" eth0) - x0)) packets)"
    ((rc == 0)) || fail "crowd $1: $(cat "$TEST_TMP/crowd-$1.out"); first failures: $(head -n 5 "$TEST_TMP/crowd-$1.failed" | tr '\n' ' '); ${SYNACKS[$1]}"
    read -r p1 d1 < <(engine_packets)
    PACKETS[$1]=$(((p1 - p0) / N))
    DROPS[$1]=$((d1 - d0))
    WAITS[$1]=$(status_json | flowcheck queue-waits --since "$TEST_TMP/status-before-$1.json" | tr '\n' ';') \
        || fail "crowd $1: the queues' waits were not measured"
}

# 1. Bypass.
crowd bypass

through_proxy() {
    local run=$1 what=$2 v0 n
    v0=$(validated)
    crowd "$run"
    n=$(($(validated) - v0))
    check "every download went through $what ($n of $N handshakes replayed to it; the client's flows: $(modes_of_client))" [ "$n" -ge "$N" ]
}

# 2. splice-proxy.
proxy_start
through_proxy splice-proxy splice-proxy
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 20

# 3. HAProxy.
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
through_proxy haproxy HAProxy

st=$(status_json)
log "engine: $(json_get packets.total <<<"$st") packets, queue drops $(json_get pairs queues number queueDropped <<<"$st"), FIN/RST held $(json_get resilient.finRstHeld <<<"$st"), replays the proxy left unanswered (those flows went on in bypass) $(json_get resilient.replaysAbandoned <<<"$st"), RSS $(json_get mib memory.residentBytes <<<"$st") MiB"
b=$(crowd_field bypass seconds)
for run in bypass splice-proxy haproxy; do
    s=$(crowd_field "$run" seconds)
    report "$run: $N downloads of $CROWD_BYTES bytes in $s s ($(awk -v s="$s" -v b="$b" 'BEGIN { printf "%.2f", s / b }')x bypass), connect $(crowd_field "$run" connect_ms.p50) ms p50, total $(crowd_field "$run" total_ms.p99) ms p99; the engine saw ${PACKETS[$run]} packets per download, its queues dropped ${DROPS[$run]}; waits: ${WAITS[$run]} ${SYNACKS[$run]}; slowest: $(crowd_field "$run" slowest | tr -d '\n' | cut -c1-300)"
done
log "PASS: $N concurrent downloads byte-exact through splice-proxy and through HAProxy"
