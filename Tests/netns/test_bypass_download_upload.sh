#!/usr/bin/env bash
# tcpsplice test: flows in bypass mode through a running spliced arrive intact.
# Rules in the router for ports 5001 (download) and 5002 (upload), queue 0;
# spliced bound to queue 0. A 64 MiB download and a 64 MiB upload of random
# data (rate-limited, so that they last a few seconds, and run at once) arrive
# with the same SHA-256. While they run, `splicectl status --json` shows queue
# packets and `splicectl flows --json` shows both flows ESTABLISHED in mode
# bypass with the right addresses and ports. Afterwards status shows the queue
# counters. An IPv6 download (64 MiB) goes through the same engine intact too.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_bin spliced >/dev/null
need_bin splicectl >/dev/null
topo_create
rules_install "$NS_R" --ports 5001,5002 --queues 0
spliced_start --queue 0

RATE=$((16 << 20))   # bytes/s: 64 MiB in ~4 s
DOWN="$TEST_TMP/down.src"
UP="$TEST_TMP/up.src"
make_random_file "$DOWN" 64
make_random_file "$UP" 64
WANT_DOWN=$(sha256_of "$DOWN")
WANT_UP=$(sha256_of "$UP")

bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DOWN" --rate "$RATE"
bg_start serve-recv "$NS_S" python3 "$XFER" serve-recv --port 5002 --out-dir "$TEST_TMP/recv"
wait_port "$NS_S" 5001
wait_port "$NS_S" 5002

bg_start fetch "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$TEST_TMP/down.got"
bg_start push "$NS_C" python3 "$XFER" push --host "$SERVER_IP" --port 5002 --file "$UP" --rate "$RATE"
log "64 MiB download and 64 MiB upload started at $((RATE >> 20)) MiB/s each"

# While both run: the engine sees packets and lists both flows.
both_flows_seen() {
    local pk
    pk=$(queue_packets_total)
    ((pk > 0)) || return 1
    DOWN_FLOW=$(find_flow "$CLIENT_IP" "$SERVER_IP" 5001 ESTABLISHED bypass) || return 1
    UP_FLOW=$(find_flow "$CLIENT_IP" "$SERVER_IP" 5002 ESTABLISHED bypass) || return 1
}
DOWN_FLOW="" UP_FLOW=""
deadline=$((SECONDS + 15))
until both_flows_seen; do
    if ! bg_alive fetch || ! bg_alive push; then
        flows_json >&2 || true
        fail "a transfer ended before spliced listed both flows ESTABLISHED in mode bypass"
    fi
    if ((SECONDS >= deadline)); then
        echo "status:" >&2; status_json >&2 || true
        echo "flows:" >&2; flows_json >&2 || true
        fail "spliced did not list both flows (client $CLIENT_IP -> $SERVER_IP ports 5001, 5002) ESTABLISHED/bypass within 15 s"
    fi
    sleep 0.2
done
bg_alive fetch || fail "download already finished when the flows were checked"
bg_alive push || fail "upload already finished when the flows were checked"
log "during the transfers: queue packets $(queue_packets_total)"
log "download flow: $DOWN_FLOW"
log "upload flow:   $UP_FLOW"
for f in "$DOWN_FLOW" "$UP_FLOW"; do
    fam=$(printf '%s' "$f" | json_get family)
    [[ "$fam" == 4 ]] || fail "flow family is '$fam', expected 4: $f"
    sport=$(printf '%s' "$f" | json_get sport)
    ((sport >= 1024)) || fail "flow source port '$sport' is not the client's ephemeral port: $f"
done

bg_wait fetch 180 || fail "download failed (see fetch.log)"
bg_wait push 180 || fail "upload failed (see push.log)"
got_down=$(sha256_of "$TEST_TMP/down.got")
[[ "$got_down" == "$WANT_DOWN" ]] || fail "download differs: sha256 $got_down, want $WANT_DOWN"
log "download sha256 match: $got_down"
wait_for 10 "the server to store the upload" test -e "$TEST_TMP/recv/1.sha256"
got_up=$(cut -d' ' -f1 "$TEST_TMP/recv/1.sha256")
[[ "$got_up" == "$WANT_UP" ]] || fail "upload differs at the server: sha256 $got_up, want $WANT_UP"
log "upload sha256 match: $got_up"

# IPv6 through the same engine.
# The server still serves the 64 MiB file on 5001, paced like the first (~4 s).
bg_start fetch6 "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP6" --port 5001 --out "$TEST_TMP/down6.got"
bg_wait fetch6 180 || fail "IPv6 download failed (see fetch6.log)"
got6=$(sha256_of "$TEST_TMP/down6.got")
[[ "$got6" == "$WANT_DOWN" ]] || fail "IPv6 download differs: sha256 $got6, want $WANT_DOWN"
log "IPv6 download sha256 match"

# Afterwards: the queue counters.
st=$(status_json)
log "status after: $(printf '%s' "$st" | json_get pick queues verdicts flows)"
printf '%s' "$st" | flowcheck bypass-status || fail "status after the transfers is not as expected"
log "PASS"
