#!/usr/bin/env bash
# tcpsplice test: engine death is harmless to a flow in bypass (fail-open).
# A 64 MiB download (rate-limited to ~8 s) runs through the router with spliced
# bound to the queue; once spliced has seen packets of it and about a quarter
# has arrived, spliced is killed with SIGKILL. The queue is then unbound, the
# kernel forwards (--queue-bypass), and the download completes byte-exact.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_bin spliced >/dev/null
need_bin splicectl >/dev/null
topo_create
rules_install "$NS_R" --ports 5001 --queues 0
spliced_start --queue 0

SIZE=$((64 << 20))
RATE=$((8 << 20))    # ~8 s for 64 MiB
DATA="$TEST_TMP/data"
make_random_file "$DATA" 64
WANT=$(sha256_of "$DATA")
OUT="$TEST_TMP/got"

bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DATA" --rate "$RATE"
wait_port "$NS_S" 5001
bg_start fetch "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$OUT"
log "64 MiB download started at $((RATE >> 20)) MiB/s"

# Wait until spliced has seen packets and the flow, and a quarter has arrived.
engine_busy() {
    (($(file_size "$OUT") >= SIZE / 4)) || return 1
    SEEN_PACKETS=$(queue_packets_total)
    ((SEEN_PACKETS > 0)) || return 1
    SEEN_FLOW=$(find_flow "$CLIENT_IP" "$SERVER_IP" 5001 "" bypass) || return 1
}
SEEN_PACKETS=0 SEEN_FLOW=""
deadline=$((SECONDS + 30))
until engine_busy; do
    bg_alive fetch || fail "the download ended before spliced was killed"
    ((SECONDS < deadline)) || fail "after 30 s: $(file_size "$OUT") bytes arrived, spliced saw $SEEN_PACKETS packets and flow '${SEEN_FLOW}'"
    sleep 0.2
done
at_kill=$(file_size "$OUT")
log "spliced saw $SEEN_PACKETS packets and the flow $SEEN_FLOW"

pid=$(bg_pid spliced)
rc=0
bg_kill spliced KILL || rc=$?
[[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
log "spliced (pid $pid) killed with SIGKILL at $at_kill of $SIZE bytes"
((at_kill < SIZE)) || fail "the download had already completed at the kill: the test proves nothing"
wait_for 5 "the kernel to unbind queue 0" test "$(queue_bound_count "$NS_R")" -eq 0

bg_wait fetch 120 || fail "the download failed after the engine was killed (see fetch.log)"
got=$(sha256_of "$OUT")
[[ "$got" == "$WANT" ]] || fail "download differs after the engine was killed: sha256 $got, want $WANT"
log "download completed byte-exact after the kill: sha256 $got"
log "PASS"
