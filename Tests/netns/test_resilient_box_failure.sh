#!/usr/bin/env bash
# tcpsplice test: the whole splice router dies in the middle of 50 transfers
# through its proxy, the ends route around it, and none of the transfers notices
# (seed 000, FIG. 2E, claim 5).
#
# Topology: client -- splice router -- server as usual, plus a second path
# client eth1 -- alt -- server eth1 (alt: plain forwarding, no tcpsplice). The
# ends prefer the splice router (metric 10) over alt (metric 100) and ignore
# routes whose link is down. 50 concurrent transfers of 8 MiB (25 downloads, 25
# uploads; IPv4 and IPv6 alternately) run through splice-proxy in the splice
# router (flows resilient/policy, the proxy holding both sockets of each, alt has
# forwarded nothing of them). A third of the way, the splice router's links go
# down (its veth ends, inside its namespace): the ends' routes through it go
# linkdown and the kernel routes the IPv4 transfers over alt (checked: alt's
# IPv4 counter grows while its IPv6 one does not). IPv6 sockets keep their cached
# route through the dead link (a kernel behaviour, the same without tcpsplice),
# so the ends' IPv6 routes through the splice router are then withdrawn, as a
# routing protocol would. Every transfer completes with the SHA-256 it left with;
# alt forwarded at least the bytes that were left, and the splice router's links
# carried nothing more.
#
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

xfers_size_defaults
SIZE=$((MIB << 20))

topo_create
topo_add_alt
for dst in "$NS_C $SERVER_IP" "$NS_C $SERVER_IP6" "$NS_S $CLIENT_IP" "$NS_S $CLIENT_IP6"; do
    read -r ns ip <<<"$dst"
    dev=$(route_dev "$ns" "$ip")
    [[ "$dev" == eth0 ]] || fail "before the failure $ns routes $ip through '$dev', expected eth0 (the splice router)"
done

resilient_start
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP" "$SERVER_IP6"
alt_before=$(alt_forwarded_packets)
((alt_before == 0)) || fail "alt forwarded $alt_before packets of the transfers while the splice router was up"
log "alt has forwarded nothing of the transfers so far"

# The box dies, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
ip -n "$NS_R" link set rc0 down
ip -n "$NS_R" link set rs0 down
# What was received by then is all the ends got through the splice router.
read -r _ max_at_down < <(xfers_progress_permille)
router_tx() { nsx "$NS_R" cat /sys/class/net/rc0/statistics/tx_packets /sys/class/net/rs0/statistics/tx_packets | paste -sd+ | bc; }
tx_at_down=$(router_tx)
log "splice router's links down at progress max $max_at_down per mille"
for dst in "$NS_C $SERVER_IP" "$NS_C $SERVER_IP6" "$NS_S $CLIENT_IP" "$NS_S $CLIENT_IP6"; do
    read -r ns ip <<<"$dst"
    wait_for 5 "$ns to route $ip through eth1 (alt)" test "$(route_dev "$ns" "$ip")" == eth1
done
log "the ends route through alt now: $(ip -n "$NS_C" route get "$SERVER_IP" | head -n 1)"
_alt4_moving() { (($(alt_forwarded_packets 4) > 0)); }
wait_for 15 "the IPv4 transfers to cross alt (linkdown alone)" _alt4_moving
log "IPv4 transfers cross alt: $(alt_forwarded_packets 4) packets; IPv6: $(alt_forwarded_packets 6)"
alt_withdraw_router_routes6
_alt6_moving() { (($(alt_forwarded_packets 6) > 0)); }
wait_for 15 "the IPv6 transfers to cross alt (routes withdrawn)" _alt6_moving
log "IPv6 routes through the splice router withdrawn; IPv6 transfers cross alt: $(alt_forwarded_packets 6) packets"

xfers_wait 240
xfers_verify
alt_bytes=$(alt_forwarded_bytes)
# Bytes not received when the links went down had to cross alt (95%: a margin
# for the rounding of the per mille).
left=$((N * (SIZE / 1000) * (1000 - max_at_down) * 95 / 100))
log "alt forwarded $(alt_forwarded_packets) packets, $alt_bytes bytes of the transfers; at least $left bytes were left at the failure"
((alt_bytes >= left)) || fail "alt forwarded $alt_bytes bytes, fewer than the $left bytes left at the failure"
tx_end=$(router_tx)
((tx_end == tx_at_down)) || fail "the splice router's links sent $((tx_end - tx_at_down)) packets after they went down"
log "PASS"
