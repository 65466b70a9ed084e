#!/usr/bin/env bash
# tcpsplice test: the proxy dies in the middle of 50 transfers over links that
# lose, duplicate and reorder packets, and none of the transfers notices.
#
# Both links (client<->router, router<->server), both directions: 1% loss (at
# the receiver's ingress: the link lost it), 1% duplication, 3% of the packets
# through a slow HTB class that makes some of them wait a few milliseconds, so
# that they arrive after their successors (lib.sh impair_links: netem is not
# built in this kernel), one MTU-sized segment per packet. 50 concurrent
# transfers of 8 MiB (25 downloads, 25 uploads, IPv4 and IPv6 alternately)
# through splice-proxy (resilient/policy, the proxy holding both sockets of
# each). A third of the way, splice-proxy is killed with SIGKILL. Every transfer
# completes with the SHA-256 it left with, the flows are bypass/proxy-died, and
# the counters show that every impairment happened on every link direction
# (drops, duplicates, packets made to wait in the slow class) with no packet
# larger than the MTU.
#
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

xfers_size_defaults

topo_create
impair_links 0.01 0.01 0.03
resilient_start
# What the ends send again while the proxy holds their connections (reported, not held to a
# bound: the links' own loss sets most of it). Before 2026-12-07 the proxy's clamped ACKs
# carried its sockets' SACK blocks and the ends resent what the proxy held: 12% of the client's
# segments in a capture, 24-40% of some uploads' (Docs/resilient.md, sackTakenOffClamped).
# resent_counts NS: segments NS has retransmitted, and sent in all, so far.
resent_counts() { echo "$(ns_counter "$1" TcpRetransSegs) $(ns_counter "$1" TcpOutSegs)"; }
# resent_share WHO NS BASE: "WHO R of O (P%)" since BASE (resent_counts' output then).
resent_share() {
    local r0 o0 r o
    read -r r0 o0 <<<"$3"
    read -r r o < <(resent_counts "$2")
    awk -v w="$1" -v r=$((r - r0)) -v o=$((o - o0)) 'BEGIN { printf "%s %d of %d (%.1f%%)", w, r, o, o ? 100 * r / o : 0 }'
}
RESENT_C=$(resent_counts "$NS_C")
RESENT_S=$(resent_counts "$NS_S")
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP" "$SERVER_IP6"

xfers_wait_progress 333 120
xfers_assert_running
report "segments the ends sent again while proxied (TcpRetransSegs of TcpOutSegs):" \
    "$(resent_share client "$NS_C" "$RESENT_C"), $(resent_share server "$NS_S" "$RESENT_S");" \
    "SACK taken off clamped ACKs: $(resilient_stat sackTakenOffClamped)"
log "before the kill: $(impair_counts | tr '\n' ';')"
# How long the ends' packets waited in the engine's queues (spliced's own stamps; the proxy's
# packets carry none): the reader does not keep up with 50 transfers sent as MTU-sized
# packets, and until 2026-12-08 the servers' queue held 500-1,000 of them, ~120 ms each
# (Docs/packet-path.md, "Waiting in the queue"). Reported, not held to a bound.
waits=$(status_json | flowcheck queue-waits) || fail "the queues' waits were not measured"
while IFS= read -r line; do report "waited in the queue: $line"; done <<<"$waits"
proxy_kill_now
wait_no_proxy 10
flows_assert_all bypass proxy-died "$N"

# The rest at the paced rate: unpaced, the 50 senders fill the links' slow class (3% of
# the packets at 12 Mbit/s), whose queue then delays packets by seconds (timeouts; the
# rest took ~70 s instead of ~10).
xfers_release "$RATE"
xfers_wait 240
xfers_verify
# Transfers end seconds apart under loss: the flows of the first ones may have left
# the table by now; every flow still listed is bypass/proxy-died.
flows_assert_all bypass proxy-died 1
log "status.resilient: $(status_json | json_get resilient)"
impair_assert_active
log "PASS"
