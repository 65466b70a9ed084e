#!/usr/bin/env bash
# tcpsplice test: real clients get through spoofed floods through the resilient path as
# they do through plain forwarding, and a flood never reaches the proxy.
#
# hping3 in the client namespace floods the server's port with SYNs (then ACKs) from random
# spoofed sources while REAL (40) real clients download a 64 KiB file from nginx, 10 at a
# time, each SHA-256 checked. spliced runs with a small table (--max-flows 16384) that a
# flood fills in a moment, and the ends' handshakes on a queue of their own (--syn-queue).
#   1  plain forwarding (no rules) under a flood as fast as hping3 goes: the reference
#   2  resilient mode under a flood the engine keeps up with (20,000 SYN/s): every real
#      download byte-exact and through the proxy (mode resilient) although the table is
#      full (early drops made room); the proxy engaged for the real clients only (clients
#      validated by their ACK, no overflow of its listener's queue)
#   3  resilient mode under the flood as fast as hping3 goes (past what one engine thread
#      takes): every real download byte-exact, latencies printed beside plain forwarding's;
#      the handshakes the engine could not see went by unseen (those flows in bypass),
#      still never a flood's handshake to the proxy
#   4  an ACK flood (lone ACKs, picked up mid-stream): every real download byte-exact, the
#      pickups shed (early drops)
# Sizes: FLOOD_REAL_CLIENTS, FLOOD_MAX_FLOWS, FLOOD_PPS (phase 2).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REAL=${FLOOD_REAL_CLIENTS:-40}
MAXFLOWS=${FLOOD_MAX_FLOWS:-16384}
PPS=${FLOOD_PPS:-20000}

topo_create
for ns in "$NS_C" "$NS_R" "$NS_S"; do load_sysctls "$ns"; done
flood_route
crowd_prepare 65536
nginx_start "$NS_S" "$XF_DOWN_PORT"

# real_clients NAME: the crowd of real clients, all byte-exact or the test fails. Their
# packets are captured at the client and the server (headers only); on a failure the last
# packets of each connection that failed are printed, with what spliced lists for it.
real_clients() {
    local rc=0
    bg_start "pcap-$1" "$NS_C" tcpdump -i eth0 -n --immediate-mode -s 96 -U -w "$TEST_TMP/real-$1.pcap" \
        "tcp and host $CLIENT_IP and port $XF_DOWN_PORT"
    bg_start "pcaps-$1" "$NS_S" tcpdump -i eth0 -n --immediate-mode -s 96 -U -w "$TEST_TMP/real-$1-server.pcap" \
        "tcp and host $CLIENT_IP and port $XF_DOWN_PORT"
    sleep 0.3
    crowd_run "$1" "$SERVER_IP" "$XF_DOWN_PORT" "$REAL" --concurrency 10 --timeout 30 --deadline 120 || rc=$?
    if ((rc != 0)); then
        sleep 1 # the capture's last packets (a reset ends the client's wait) written out
        bg_kill "pcap-$1" INT >/dev/null || true
        bg_kill "pcaps-$1" INT >/dev/null || true
        explain_failures "$1"
        fail "real clients under the flood ($1): $(cat "$TEST_TMP/crowd-$1.out")"
    fi
    bg_kill "pcap-$1" INT >/dev/null || true
    bg_kill "pcaps-$1" INT >/dev/null || true
}
# explain_failures NAME: for each client connection that failed (crowd.py's list, at most 5),
# its last packets at the client and what spliced lists for it.
explain_failures() {
    local pcap="$TEST_TMP/real-$1.pcap" port kind
    while read -r port kind _; do
        [[ $port == - ]] && { log "failure before the connection was up: $kind"; continue; }
        log "$kind: client port $port, its last packets at the client:"
        tcpdump -n -tt -S -r "$pcap" "port $port" 2>/dev/null | tail -n 25 | sed 's/^/    /'
        log "$kind: client port $port, its last packets at the server:"
        tcpdump -n -tt -S -r "${pcap%.pcap}-server.pcap" "port $port" 2>/dev/null | tail -n 25 | sed 's/^/    /'
        log "$kind: client port $port in spliced: $(flows_json | json_get count-in . sport "$port") flow(s); $(flows_json | flowcheck list --sport "$port")"
    done < <(head -n 5 "$TEST_TMP/crowd-$1.failed")
}
# real_flows MODE [REASON]: how many flows of the real client's address have that mode (and reason).
real_flows() {
    flows_json | flowcheck count --src "$CLIENT_IP" --mode "$1" --reason "${2:-}"
}
stat_of() { local st=$1; shift; json_get "$@" <<<"$st"; }

# 1. Plain forwarding under the flood.
flood_start flood-plain syn
sleep 2
real_clients plain
bg_kill flood-plain KILL >/dev/null || true

# 2. The resilient path under a flood the engine keeps up with.
resilient_start --max-flows "$MAXFLOWS"
proxy_start
overflows0=$(ns_counter "$NS_R" TcpExtListenOverflows)
flood_start flood-paced syn "$PPS"
_table_full() {
    local st
    st=$(status_json)
    (($(json_get flows.total <<<"$st") >= $(json_get flows.capacity <<<"$st") - 16))
}
wait_for 30 "the SYN flood to fill spliced's table ($MAXFLOWS flows)" _table_full
real_clients resilient-paced
st=$(status_json)
bg_kill flood-paced KILL >/dev/null || true
log "under $PPS SYN/s: flows $(stat_of "$st" flows.total) of $MAXFLOWS, early drops $(stat_of "$st" 'flows.earlyDrops?None'), clients validated $(stat_of "$st" 'resilient.clientsValidated?None'), RSS $(stat_of "$st" mib memory.residentBytes) MiB"
check "a full table makes room for new flows (early drops > 0)" \
    [ "$(stat_of "$st" 'flows.earlyDrops?0')" -gt 0 ]
n=$(real_flows resilient)
check "every real client's flow went through the proxy although the flood filled the table ($n of $REAL resilient)" [ "$n" -ge "$REAL" ]
# The proxy saw the real clients only: REAL validated (a retransmitted SYN may add a few).
v=$(stat_of "$st" 'resilient.clientsValidated?0')
check "the proxy is engaged for the $REAL real clients only ($v clients validated)" [ "$v" -ge "$REAL" -a "$v" -le $((REAL + 5)) ]

# 3. The flood as fast as hping3 goes.
flood_start flood-max syn
sleep 2
real_clients resilient-max
st=$(status_json)
bg_kill flood-max KILL >/dev/null || true
v2=$(stat_of "$st" 'resilient.clientsValidated?0')
q=$(stat_of "$st" where queues role handshakes)
log "as fast as hping3 goes: $((v2 - v)) of $REAL real clients through the proxy, the others let by unseen (bypass, $(real_flows bypass handshake-unseen) handshake-unseen, $(real_flows bypass picked-up-mid-stream) picked up); handshake queue: $q"
check "no flood handshake reached the proxy ($((v2 - v)) clients validated for $REAL real ones)" [ $((v2 - v)) -le $((REAL + 5)) ]
overflows1=$(ns_counter "$NS_R" TcpExtListenOverflows)
check "the proxy's listen queue never overflowed ($((overflows1 - overflows0)) overflows)" [ "$((overflows1 - overflows0))" -eq 0 ]

# 4. An ACK flood: lone ACKs picked up mid-stream.
dropped0=$(status_json | json_get 'flows.earlyDrops?0')
flood_start flood-ack ack
sleep 2
real_clients resilient-ack
st=$(status_json)
bg_kill flood-ack KILL >/dev/null || true
log "under the ACK flood: flows $(stat_of "$st" flows.total) of $MAXFLOWS, picked up $(stat_of "$st" flows.pickedUp), early drops $(stat_of "$st" 'flows.earlyDrops?None'), table full $(stat_of "$st" flows.tableFull)"
check "the ACK flood's pickups were shed (early drops grew)" \
    [ "$(stat_of "$st" 'flows.earlyDrops?0')" -gt "$dropped0" ]

# Latencies side by side (printed, not asserted).
for run in plain resilient-paced resilient-max resilient-ack; do
    report "latency $run: connect $(crowd_field "$run" connect_ms) total $(crowd_field "$run" total_ms) in $(crowd_field "$run" seconds) s"
done
log "PASS: real clients byte-exact through SYN and ACK floods, the proxy engaged for them only"
