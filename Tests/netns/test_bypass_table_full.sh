#!/usr/bin/env bash
# tcpsplice test: a full flow table never breaks a connection.
# spliced runs with --max-flows 2; six concurrent 8 MiB downloads go through
# it. Every download arrives byte-exact (flows past the capacity are let
# through untracked), status counts flows.tableFull > 0, and the table never
# holds more than 2 flows.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_bin spliced >/dev/null
need_bin splicectl >/dev/null
topo_create
rules_install "$NS_R" --ports 5001 --queues 0
spliced_start --queue 0 --max-flows 2

DATA="$TEST_TMP/data"
make_random_file "$DATA" 8
WANT=$(sha256_of "$DATA")
# ~2 s each, so that they overlap
bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DATA" --rate $((4 << 20))
wait_port "$NS_S" 5001
for i in 1 2 3 4 5 6; do
    bg_start "fetch$i" "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$TEST_TMP/got$i"
done
max_total=0
while bg_alive fetch1 || bg_alive fetch6; do
    t=$(status_json | json_get flows.total)
    ((t > max_total)) && max_total=$t
    sleep 0.3
done
for i in 1 2 3 4 5 6; do
    bg_wait "fetch$i" 60 || fail "download $i failed with the table full (see fetch$i.log)"
    [[ $(sha256_of "$TEST_TMP/got$i") == "$WANT" ]] || fail "download $i differs with the table full"
done
st=$(status_json)
full=$(printf '%s' "$st" | json_get flows.tableFull)
((full > 0)) || fail "flows.tableFull is $full after 6 concurrent flows with --max-flows 2: $st"
((max_total <= 2)) || fail "the table held $max_total flows with --max-flows 2"
log "6 downloads intact; table peaked at $max_total flows, tableFull=$full"
log "PASS"
