#!/usr/bin/env bash
# tcpsplice test: the proxy (variant proxy) or the engine (variant engine) is killed with
# SIGKILL while some transfers are already spliced and others are still PENDING, and no
# transfer notices (seed 003 on top of seed 000: every state of a splice survives either
# death).
#
# Resilient rules and spliced for the transfer ports; a splice rule on those ports and their
# first bytes (neither HTTP nor TLS); splice-proxy with --min-pending-ms, so that each splice stays PENDING for
# a while (its senders see a zero window, the relay holds nothing back) and can be caught
# there. Half the transfers (of the issue's 50, of 8 MiB, half downloads and half uploads,
# paced and held: lib.sh xfers_servers_start) start first and are all spliced; then the other half start, and once at least a
# third of them are PENDING the proxy or spliced is killed. Every transfer completes with the
# SHA-256 it left with; no end drops a segment for an old timestamp (PAWS).
#   proxy:  the spliced flows stay spliced (the engine never sees their data); the pending
#           ones go to bypass (proxy-died), their splices counted failed, their senders'
#           windows reopened at once by the engine.
#   engine: the spliced flows never needed it (their conntrack mark keeps them out of the
#           queue); the pending ones fail open (their zero windows end at the senders' next
#           window probe); splice-proxy stays up and lets go of its connections silently.
#
# variants: proxy engine
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VARIANT=${VARIANTS:-proxy}
[[ "$VARIANT" == proxy || "$VARIANT" == engine ]] || fail "unknown variant '$VARIANT' (proxy or engine)"
xfers_size_defaults
HALF=$((N / 2))

topo_create
paws_baseline
resilient_start
# On the first bytes (a download's request line, an upload's first data: neither HTTP nor
# TLS), read by the proxy, so that it decides and steps out through PENDING (a rule on the
# port alone would be applied by the engine at the SYN, and the engine reading the bytes
# itself would splice them at once: the proxy would never see those connections).
splicectl rules default --request-reader proxy >/dev/null || fail "splicectl rules default --request-reader proxy failed"
splicectl rules add --ports "$XF_DOWN_PORT,$XF_UP_PORT" --proto other --action splice --name transfers >/dev/null \
    || fail "splicectl rules add failed"
proxy_start splice-proxy --min-pending-ms 3000
PROXY_PID=$(bg_pid splice-proxy)

# count_flows FIELD VALUE: flows of the transfer ports whose FIELD is VALUE.
count_flows() {
    flows_json | python3 -c '
import json, sys
field, value = sys.argv[1], sys.argv[2]
print(sum(1 for f in json.load(sys.stdin) if str(f.get(field)) == value))' "$1" "$2"
}

# The first half, all spliced.
xfers_prepare $((HALF / 2)) $((HALF - HALF / 2)) "$MIB" a
xfers_servers_start "$RATE" hold
xfers_start "$SERVER_IP"
FIRST=("${XF_NAMES[@]}")
xfers_wait_connected 30
_all_spliced() { (($(count_flows splice spliced) >= HALF)); }
wait_for 30 "the first $HALF transfers to be spliced" _all_spliced
log "the first $HALF transfers are spliced"

# The second half, caught pending.
xfers_prepare $(((N - HALF) / 2)) $((N - HALF - (N - HALF) / 2)) "$MIB" b
xfers_start "$SERVER_IP"
SECOND=("${XF_NAMES[@]}")
XF_NAMES=("${FIRST[@]}" "${SECOND[@]}")
_some_pending() { (($(count_flows splice pending) >= (N - HALF) / 3)); }
wait_for 30 "a third of the second half to be pending" _some_pending
capture_start paws
# The drained count first: a splice pending when the flows are counted drains after it, or
# fails at the kill (counted the other way round, one that drained in between was neither).
drained_n=$(status_json | json_get splices.drained)
spliced_n=$(count_flows splice spliced)
pending_n=$(count_flows splice pending)
log "at the kill: $spliced_n flows spliced, $pending_n pending, the rest not yet decided"
if [[ "$VARIANT" == proxy ]]; then
    proxy_kill_now
    wait_no_proxy 10
else
    rc=0
    bg_kill spliced KILL || rc=$?
    [[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
    log "spliced killed with SIGKILL"
    wait_for 5 "the kernel to unbind queue 0" test "$(queue_bound_count "$NS_R")" -eq 0
fi
sleep 3
capture_stop paws
if [[ "$VARIANT" == proxy ]]; then
    # Counted while the transfers still run (held until xfers_wait releases them):
    # once they end, their flows are closed and the table forgets how they were carried.
    after=$(count_flows splice spliced)
    moved=$(count_flows reason proxy-died)
    ((after >= spliced_n)) || fail "$after flows are spliced 3 s after the kill, $spliced_n were before"
    log "3 s after the kill: $after flows spliced, $moved in bypass (proxy-died)"
fi

xfers_wait 240
xfers_verify
paws_report "over the kill"
if [[ "$VARIANT" == proxy ]]; then
    s=$(status_json | json_get splices)
    log "status.splices: $s"
    failed=$(json_get failed <<<"$s")
    # Each splice pending when counted failed at the kill, or drained in the instant before it.
    late=$(($(json_get drained <<<"$s") - drained_n))
    ((failed + late >= pending_n)) \
        || fail "status counts $failed failed splices and $late drained just before the kill, but $pending_n were pending"
    log "of the $pending_n pending when counted: $failed failed at the kill, $late drained just before it"
else
    bg_alive splice-proxy || fail "splice-proxy exited when spliced died"
fi
log "PASS"
