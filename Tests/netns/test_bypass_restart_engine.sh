#!/usr/bin/env bash
# tcpsplice test: a restarted engine picks up flows it does not know as bypass.
# A 64 MiB download (rate-limited to ~8 s) runs through spliced; spliced is
# killed with SIGKILL at about a quarter, a new spliced is started on the same
# queue and control socket at about half, and the new engine sees the flow's
# packets and lists the flow in mode bypass while the download goes on. The
# download completes byte-exact.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_bin spliced >/dev/null
need_bin splicectl >/dev/null
topo_create
rules_install "$NS_R" --ports 5001 --queues 0
spliced_start --queue 0

SIZE=$((64 << 20))
RATE=$((8 << 20))
DATA="$TEST_TMP/data"
make_random_file "$DATA" 64
WANT=$(sha256_of "$DATA")
OUT="$TEST_TMP/got"

bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DATA" --rate "$RATE"
wait_port "$NS_S" 5001
bg_start fetch "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$OUT"

arrived() { (($(file_size "$OUT") >= $1)); }
wait_for 30 "a quarter of the download" arrived $((SIZE / 4))
first=$(queue_packets_total)
((first > 0)) || fail "the first spliced saw no packets"
rc=0
bg_kill spliced KILL || rc=$?
[[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
log "first spliced killed at $(file_size "$OUT") bytes after $first packets"

wait_for 30 "half of the download" arrived $((SIZE / 2))
bg_alive fetch || fail "the download ended before the engine was restarted"
SPLICED_BG=spliced2 spliced_start --queue 0
log "second spliced started at $(file_size "$OUT") bytes"

picked_up() {
    (($(queue_packets_total) > 0)) || return 1
    FLOW=$(find_flow "$CLIENT_IP" "$SERVER_IP" 5001 "" bypass) || return 1
}
FLOW=""
deadline=$((SECONDS + 15))
until picked_up; do
    bg_alive fetch || fail "the download ended before the new engine listed its flow"
    ((SECONDS < deadline)) || { flows_json >&2 || true; fail "the new spliced did not list the mid-stream flow in mode bypass within 15 s"; }
    sleep 0.2
done
log "the new engine picked up the flow mid-stream: $FLOW"

bg_wait fetch 120 || fail "the download failed (see fetch.log)"
got=$(sha256_of "$OUT")
[[ "$got" == "$WANT" ]] || fail "download differs: sha256 $got, want $WANT"
log "download completed byte-exact across the engine restart"
log "PASS"
