#!/usr/bin/env bash
# tcpsplice test: one-way joins (seed 003's unidirectional splices; Docs/balancer.md,
# "One-way joins"). Client, router, three backends (Tests/netns/backend.py, whose
# PUT /duplex/FILE sends FILE while it reads the request's body: both directions busy at once).
# Splice rules with --one-way join one direction and leave the other to the proxy:
#   /duplex/down/  --one-way to-client: the backend's response is joined (the engine carries
#                  it), the client's body is relayed by the proxy on its sockets;
#   /duplex/up/    --one-way to-server: the client's upload is joined, the backend's response
#                  relayed.
# DOWN exchanges of each kind run at once over IPv4 (each with its own body), and one of each
# over IPv6 (a service address of its own). Checks: every response and every body byte-exact (the client's SHA-256 of the response against the file's, the
# backend's logged SHA-256 of the body against the client's); `splicectl flows` showed the
# joined pairs one way (sampled while they ran) with their backend; each exchange was joined
# one way and, once its relayed direction ended, both ways (spliced's counters); the engine
# carried packets both to and from the proxy's sockets; no flow of the client is left open;
# no PAWS reject at the client or the backends. Last, the proxy is killed (SIGKILL) while it
# relays a body to backend 1 in a one-way join: the client and the backend are both reset (the
# backend never sees the cut body end with a FIN, as if whole); then the engine is killed in
# the same state (with a new proxy), with the same outcome.
# Sizes: ONEWAY_EXCHANGES (exchanges of each kind). The client's and backend 1's packets are
# captured (headers only) in the test's directory, for a failure's post-mortem.
# Variant `impaired`: the same, smaller, on links with 1% loss and 1% duplication both ways
# (PAWS rejects reported there, not held to 0: Docs/testing.md).
# variants: clean impaired
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
balancer_topology

VARIANT=${VARIANTS:-clean}
[[ "$VARIANT" == clean || "$VARIANT" == impaired ]] || fail "unknown variant '$VARIANT'"
if [[ "$VARIANT" == clean ]]; then
    BIG=$((16 << 20)) SMALL=$((1 << 20)) DOWN=4
else
    BIG=$((2 << 20)) SMALL=$((256 << 10)) DOWN=2
fi
DOWN=${ONEWAY_EXCHANGES:-$DOWN}
WWW="$TEST_TMP/www"
mkdir -p "$WWW/down" "$WWW/up" "$WWW/kill"
head -c "$BIG" /dev/urandom >"$WWW/down/big"
ln -s ../down/big "$WWW/kill/big"
head -c "$SMALL" /dev/urandom >"$WWW/up/small"
SHA_BIG=$(sha256sum <"$WWW/down/big" | cut -d' ' -f1)
SHA_SMALL=$(sha256sum <"$WWW/up/small" | cut -d' ' -f1)
# IPv6: a service address of its own, whose pool is backend 1 (listening on both families).
VIP6=fd77:9::1
ip -n "$NS_R" addr add "$VIP6/128" dev lo || fail "cannot put $VIP6 on the router's lo"
for i in 1 2 3; do
    ns=${BACKEND_NS[$((i - 1))]}
    addr=${BACKENDS[$((i - 1))]}
    [[ $i == 1 ]] && addr="::"
    bg_start "backend$i" "$ns" python3 "$NETNS_DIR/backend.py" "backend$i" "$addr" 80 "$WWW"
    wait_port "$ns" 80
done
[[ "$VARIANT" != impaired ]] || impair_links 0.01 0.01 0

rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80,[$VIP6]:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=web" --service "[$VIP6]:80=web6" --forwarded-for
splicectl pools add web --method round-robin --backend "${BACKENDS[0]}:80" --backend "${BACKENDS[1]}:80" \
    --backend "${BACKENDS[2]}:80" >/dev/null || fail "pools add web failed"
splicectl pools add web6 --backend "[$SERVER_IP6]:80" >/dev/null || fail "pools add web6 failed"
splicectl pools add one --backend "${BACKENDS[0]}:80" >/dev/null || fail "pools add one failed"
splicectl rules add --path-prefix /duplex/down/ --action splice --one-way to-client >/dev/null || fail "rules add to-client failed"
splicectl rules add --path-prefix /duplex/up/ --action splice --one-way to-server >/dev/null || fail "rules add to-server failed"
splicectl rules add --path-prefix /duplex/kill/ --action splice --pool one --one-way to-client >/dev/null || fail "rules add kill failed"
log "rules:"$'\n'"$(splicectl rules)"

counter() { status_json | json_get "balancer.$1"; }
paws_b() { local i s=0; for i in 1 2 3; do s=$((s + $(ns_counter "${BACKEND_NS[$((i - 1))]}" TcpExtPAWSEstab))); done; echo "$s"; }
paws_c0=$(ns_counter "$NS_C" TcpExtPAWSEstab)
paws_b0=$(paws_b)
cancelled0=$(counter cancelled)

# The flows, sampled while the exchanges run.
# (Plain splicectl, never `fail`, in the background.)
CTL_BIN=$(need_bin splicectl)
(
    trap - EXIT
    while :; do
        nsx "$NS_R" "$CTL_BIN" --socket "$CTL_SOCK" flows --json >>"$TEST_TMP/flows.samples" 2>/dev/null || true
        echo >>"$TEST_TMP/flows.samples"
        sleep 0.1
    done
) &
sampler=$!
on_cleanup "kill $sampler 2>/dev/null || true"

bg_start pcap-client "$NS_C" tcpdump -i eth0 -n --immediate-mode -s 96 -U -w "$TEST_TMP/client.pcap" "tcp port 80"
bg_start pcap-backend1 "${BACKEND_NS[0]}" tcpdump -i eth0 -n --immediate-mode -s 96 -U -w "$TEST_TMP/backend1.pcap" "tcp port 80"
sleep 0.3

# DOWN exchanges each way at once: to the client, a BIG response while the proxy relays a
# paced body of SMALL; to the server, a paced upload of BIG (64 chunks 5 ms apart, so that the
# one-way phase outlasts the flows' sampling every 0.1 s also on the impaired variant's smaller
# sizes) while it relays a response of SMALL.
pids=()
for k in $(seq 1 "$DOWN"); do
    nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP" 80 /duplex/down/big "$SMALL" --seed "$k" --chunk 16384 --pace-ms 10 \
        >"$TEST_TMP/down$k.json" 2>"$TEST_TMP/down$k.err" &
    pids+=($!)
    nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP" 80 /duplex/up/small "$BIG" --seed $((100 + k)) --chunk $((BIG / 64)) --pace-ms 5 \
        >"$TEST_TMP/up$k.json" 2>"$TEST_TMP/up$k.err" &
    pids+=($!)
done
# And one of each over IPv6.
nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP6" 80 /duplex/down/big "$SMALL" --seed 200 --chunk 16384 --pace-ms 10 \
    >"$TEST_TMP/down6.json" 2>"$TEST_TMP/down6.err" &
pids+=($!)
nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP6" 80 /duplex/up/small "$BIG" --seed 300 --chunk $((BIG / 64)) --pace-ms 5 \
    >"$TEST_TMP/up6.json" 2>"$TEST_TMP/up6.err" &
pids+=($!)
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
((failed == 0)) || fail "$failed exchanges failed: $(cat "$TEST_TMP"/down*.json "$TEST_TMP"/up*.json "$TEST_TMP"/*.err 2>/dev/null | tr '\n' ' ')"

# Byte-exact both ways: the response at the client, the body at the backend.
for k in $(seq 1 "$DOWN") 6; do
    for kind in down up; do
        out=$(cat "$TEST_TMP/$kind$k.json")
        want=$SHA_BIG; [[ $kind == up ]] && want=$SHA_SMALL
        [[ "$(json_get responseSha <<<"$out")" == "$want" ]] || fail "$kind $k: the response is not the file: $out"
        sent=$(json_get sentSha <<<"$out")
        bytes=$(json_get sentBytes <<<"$out")
        grep -qh "^DUPLEX backend[123] /duplex/$kind/[a-z]* $bytes $sent\$" "$TEST_TMP"/backend?.log \
            || fail "$kind $k: no backend received the body the client sent ($bytes bytes, $sent): $(grep -h DUPLEX "$TEST_TMP"/backend?.log | tr '\n' ';')"
    done
done
log "$DOWN + 1 (IPv6) responses of $BIG bytes joined to the client while the proxy relayed their $SMALL-byte bodies, and $DOWN + 1 (IPv6) uploads of $BIG bytes joined to the backends while it relayed their $SMALL-byte responses: all byte-exact both ways"

# Shown one way while they ran, each with its backend.
shown() {
    python3 - "$TEST_TMP/flows.samples" "$1" <<'PY'
import json, sys
seen = set()
for block in open(sys.argv[1]).read().split("\n\n"):
    block = block.strip()
    if not block:
        continue
    try:
        flows = json.loads(block)
    except ValueError:
        continue
    for f in flows:
        if f.get("joinOneWay") == sys.argv[2] and f.get("join") == "joined" and f.get("joinedTo"):
            seen.add((f["src"], f["sport"], f["dport"]))
print(len(seen))
PY
}
n_down=$(shown to-client)
n_up=$(shown to-server)
((n_down > 0)) || fail "splicectl flows never showed a connection joined one-way to-client"
((n_up > 0)) || fail "splicectl flows never showed a connection joined one-way to-server"
log "splicectl flows showed $n_down connections joined to-client and $n_up to-server (one way, each with its backend), sampled every 0.1 s"

# Joined one way, then both ways once the relayed direction ended; both of the proxy's
# sockets carried the relayed direction through the engine.
settle() { local d=$((SECONDS + 10)); until "$@"; do ((SECONDS < d)) || return 1; sleep 0.1; done; }
completed_all() { (( $(counter oneWayCompleted) == $(counter oneWayJoined) )); }
settle completed_all || true
joined=$(counter oneWayJoined)
completed=$(counter oneWayCompleted)
cancelled=$(( $(counter cancelled) - cancelled0 ))
if [[ "$VARIANT" == clean ]]; then
    ((joined == 2 * DOWN + 2)) || fail "$((2 * DOWN + 2)) exchanges, $joined joined one way ($cancelled joins given up)"
else
    ((joined + cancelled == 2 * DOWN + 2 && joined > 0)) || fail "$((2 * DOWN + 2)) exchanges: $joined joined one way, $cancelled given up"
fi
((completed == joined)) || fail "$joined one-way joins, $completed joined both ways at their end; balancer counters: $(status_json | json_get balancer); still joined one way: $(flows_json | python3 -c 'import json, sys; print([f for f in json.load(sys.stdin) if f.get("joinOneWay") not in (None, "none")])')"
((  $(counter oneWayToProxy) > 0 && $(counter oneWayFromProxy) > 0 )) \
    || fail "the proxy's sockets carried nothing through the engine: $(status_json | json_get balancer)"
open_flows() {
    echo $(( $(flows_json | flowcheck count --src "$CLIENT_IP" --state ESTABLISHED)
           + $(flows_json | flowcheck count --src "$CLIENT_IP6" --state ESTABLISHED) ))
}
no_open() { (( $(open_flows) == 0 )); }
settle no_open \
    || fail "$(open_flows) of the client's connections still ESTABLISHED: $(flows_json | flowcheck list --src "$CLIENT_IP" --state ESTABLISHED)"
paws_c=$(( $(ns_counter "$NS_C" TcpExtPAWSEstab) - paws_c0 ))
paws_bk=$(( $(paws_b) - paws_b0 ))
# Which segments, if any: those on the wire with a TSval older than one the end had seen.
for end in client backend1; do wire_old_tsvals "$TEST_TMP/$end.pcap" "$end" "$TEST_TMP/paws-$end.txt"; done
((paws_c == 0 && paws_bk == 0)) || [[ "$VARIANT" == impaired ]] || fail "PAWS rejects: client +$paws_c, backends +$paws_bk"
log "one-way joins $joined (given up $cancelled), joined both ways at their end $completed; PAWS rejects client +$paws_c, backends +$paws_bk"
log "balancer counters: $(status_json | json_get 'balancer?none')"
[[ "$VARIANT" != impaired ]] || log "impairments: $(impair_counts | tr '\n' ';')"

# The kills on links without loss (impaired: duplication stays): their point is the resets, and
# a reset lost on the way is never made again (backend 1, only reading, sends nothing that would
# draw another).
[[ "$VARIANT" != impaired ]] || impair_loss_off
# The body the kills cut: 1 MiB paced at 8 KiB every 20 ms (~2.6 s) in both variants, so that
# the kill (0.3 s after the join is seen, polled every 0.1 s) lands in its middle. (The
# impaired variant's SMALL, 256 KiB, lasted ~0.65 s: the kill found 192 of its 256 KiB read,
# and in 3 of 9 runs, CI's among them, it came after the last byte and the exchange succeeded.)
KILL_BODY=$((1 << 20))

# The proxy killed (SIGKILL) while a connection is joined one way to the client and the proxy
# relays its body to backend 1: both ends are reset (the proxy's sockets reset when closed by
# anything but the join's end): the backend never takes the cut body for a whole one (a FIN),
# and the client does not wait.
joined0=$(counter oneWayJoined)
nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP" 80 /duplex/kill/big "$KILL_BODY" --seed 400 --chunk 8192 --pace-ms 20 \
    --timeout 30 >"$TEST_TMP/kill.json" 2>"$TEST_TMP/kill.err" &
kpid=$!
joined_one_more() { (( $(counter oneWayJoined) > joined0 )); }
settle joined_one_more || fail "the exchange to kill the proxy in was not joined one way"
sleep 0.3
bg_kill splice-proxy KILL >/dev/null 2>&1 || true
rc=0
wait "$kpid" || rc=$?
out=$(cat "$TEST_TMP/kill.json")
((rc != 0)) || fail "the proxy was killed in the middle of the client's body, yet the exchange succeeded: $out"
# (A reset seen on a send shows as a broken pipe.)
grep -qiE "reset|broken pipe" <<<"$(json_get error <<<"$out")" || fail "the client was not reset when the proxy died (it must not wait): $out"
got=$(awk '$3 == "/duplex/kill/big" { print $4 }' "$TEST_TMP/backend1.log" | tail -n 1)
[[ -n "$got" ]] || fail "backend 1 logged no end of the body of /duplex/kill/big"
((got < KILL_BODY)) || fail "backend 1 read the whole body ($got bytes) although the proxy died in its middle"
grep -q "ConnectionResetError" "$TEST_TMP/backend1.log" \
    || fail "backend 1 saw the cut body end without a reset (a FIN would make it look whole): $(tail -n 5 "$TEST_TMP/backend1.log")"
log "the proxy killed in a one-way join: the client reset ($(json_get error <<<"$out"); its response $(json_get responseBytes <<<"$out") of $BIG bytes), backend 1 reset after $got of $KILL_BODY body bytes"

# The engine killed (SIGKILL) in the same state, with a new proxy: the proxy loses its control
# connection and ends the one-way join (Docs/balancer.md, "Failure"): its sockets closed with a
# reset each, then a tickle to each far end, whose answer draws a reset at exactly the place
# the end is at from the closed port. Here the sockets' resets toward backend 1 are dropped in
# the router (a rule in raw OUTPUT; as if lost: inexact when bytes died in the engine's
# queue, and answered with a challenge ACK the backend's rate limit may skip), so that backend
# 1 can learn of the end only from the tickle. The client's next packets find no socket and
# draw resets. Both ends are reset, the backend never takes the cut body for a whole one.
proxy_start splice-proxy2 --service "$VIP:80=web" --service "[$VIP6]:80=web6" --forwarded-for
DROP_RST=(-p tcp -d "${BACKENDS[0]}" --sport 61000:65535 --tcp-flags RST,ACK RST,ACK -m comment --comment "tstest: the proxy's resets to backend 1 lost")
nsx "$NS_R" iptables -w 5 -t raw -I OUTPUT 1 "${DROP_RST[@]}" -j DROP || fail "cannot add the rule dropping the proxy's resets"
resets0=$(grep -c "ConnectionResetError" "$TEST_TMP/backend1.log" || true)
joined0=$(counter oneWayJoined)
nsx "$NS_C" python3 "$NETNS_DIR/duplex.py" "$VIP" 80 /duplex/kill/big "$KILL_BODY" --seed 500 --chunk 8192 --pace-ms 20 \
    --timeout 30 >"$TEST_TMP/kill-engine.json" 2>"$TEST_TMP/kill-engine.err" &
kpid=$!
settle joined_one_more || fail "the exchange to kill the engine in was not joined one way"
sleep 0.3
bg_kill spliced KILL >/dev/null 2>&1 || true
rc=0
wait "$kpid" || rc=$?
out=$(cat "$TEST_TMP/kill-engine.json")
((rc != 0)) || fail "the engine was killed in the middle of the client's body, yet the exchange succeeded: $out"
grep -qiE "reset|broken pipe" <<<"$(json_get error <<<"$out")" || fail "the client was not reset when the engine died (it must not wait): $out"
backend_reset() { (( $(grep -c "ConnectionResetError" "$TEST_TMP/backend1.log" || true) > resets0 )); }
settle backend_reset || fail "backend 1 saw the cut body end without a reset when the engine died: $(tail -n 5 "$TEST_TMP/backend1.log")"
dropped=$(nsx "$NS_R" iptables -w 5 -t raw -L OUTPUT -v -n -x | awk '/tstest: the proxy.s resets to backend 1 lost/ { print $1 }')
((${dropped:-0} > 0)) || fail "the rule dropped none of the proxy's resets to backend 1: the tickle was not what reset it"
got=$(awk '$3 == "/duplex/kill/big" { print $4 }' "$TEST_TMP/backend1.log" | tail -n 1)
((got < KILL_BODY)) || fail "backend 1 read the whole body ($got bytes) although the engine died in its middle"
log "the engine killed in a one-way join: the client reset ($(json_get error <<<"$out"); its response $(json_get responseBytes <<<"$out") of $BIG bytes), backend 1 reset after $got of $KILL_BODY body bytes (by the tickle: the proxy's $dropped reset(s) to it dropped on the way)"
log "PASS: one-way joins to the client and to the server, the other direction relayed, byte-exact both ways"
