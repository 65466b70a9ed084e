#!/usr/bin/env bash
# tcpsplice test: a router that clamps the MSS of the handshakes it forwards.
#
# The usual cure for a path whose hops drop large packets without saying so (a tunnel or a
# PPPoE link beyond the router, ICMP filtered on the way): `-j TCPMSS --set-mss` in the router's
# FORWARD chain, so that both ends send segments the path takes. Here "near" (behind the
# client's namespace) and "far" (behind the server's) sit behind 1,400-byte links whose
# forwarders send no too-big error, and the router clamps handshakes to an MSS of 1300 (IPv4 in
# filter FORWARD, IPv6 in mangle FORWARD: both places operators use). Plain forwarding moves an
# upload and a download whole. Through splice-proxy the proxy's sockets, built from the
# handshake the engine saw before the router's rules ran, took the MSS the ends offered (1460):
# their large segments vanished on the small links and the transfers hung (seen 2026-12-06).
# The rules now log each handshake as it leaves the router (mangle POSTROUTING) and the engine
# gives the proxy's sockets the MSS the ends got. Every transfer byte-exact both ways, in both
# families, each handshake's MSS seen lowered (two per flow), every flow resilient, no failover;
# then the same behind source NAT (MASQUERADE on the router).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-4}
PORTS="$XF_DOWN_PORT,$XF_UP_PORT"
PMTU_PY="$NETNS_DIR/pmtu.py"

topo_create
topo_far_and_near silent
nsx "$NS_R" iptables -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1300 \
    || fail "cannot add the IPv4 MSS clamp (filter FORWARD)"
nsx "$NS_R" ip6tables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1300 \
    || fail "cannot add the IPv6 MSS clamp (mangle FORWARD)"
# The premise: the path takes 1,400 bytes and drops a larger packet without a word.
check "a 1,300-byte ping with DF set reaches far" \
    bash -c "ip netns exec '$NS_NEAR' ping -M do -s 1272 -c1 -W1 '$FAR_IP' >/dev/null 2>&1"
check "a 1,428-byte ping with DF set is dropped unannounced" \
    bash -c "! ip netns exec '$NS_NEAR' ping -M do -s 1400 -c1 -W1 '$FAR_IP' >/dev/null 2>&1"

xfer_round() {
    local tag=$1 status=0
    # $what: the path's name, for the checks.
    bg_start far4$tag "$NS_FAR" python3 "$PMTU_PY" serve 4 "$XF_DOWN_PORT" "$MIB"
    bg_start far6$tag "$NS_FAR" python3 "$PMTU_PY" serve 6 "$XF_UP_PORT" "$MIB"
    wait_port "$NS_FAR" "$XF_DOWN_PORT"
    wait_port "$NS_FAR" "$XF_UP_PORT"
    bg_start near4$tag "$NS_NEAR" python3 "$PMTU_PY" client "$FAR_IP" "$XF_DOWN_PORT" "$MIB"
    bg_start near6$tag "$NS_NEAR" python3 "$PMTU_PY" client "$FAR_IP6" "$XF_UP_PORT" "$MIB"
    bg_wait near4$tag 30 || status=1
    bg_wait near6$tag 30 || status=$((status + 2))
    check "$what, IPv4, near's side: $(tail -n 1 "$(bg_log near4$tag)")" [ $((status & 1)) -eq 0 ]
    check "$what, IPv6, near's side: $(tail -n 1 "$(bg_log near6$tag)")" [ $((status & 2)) -eq 0 ]
    bg_wait far4$tag 10 || fail "$what, IPv4, far's side: $(tail -n 1 "$(bg_log far4$tag)")"
    bg_wait far6$tag 10 || fail "$what, IPv6, far's side: $(tail -n 1 "$(bg_log far6$tag)")"
}
what="plain forwarding" xfer_round plain
resilient_rules_install "$PORTS"
resilient_spliced_start "$PORTS"
proxy_start
what="through splice-proxy" xfer_round proxy
lowered=$(resilient_stat mssLowered)
copies=$(status_json | json_get synLog.packets)
report "spliced read $copies copies of handshakes leaving the router; $lowered carried an MSS lower than offered"
check "every handshake's MSS was seen lowered (SYN and SYN-ACK of 2 flows: $lowered)" [ "$lowered" -eq 4 ]
check "spliced read the ends' handshakes ($copies copies, at least 4)" [ "$copies" -ge 4 ]
flows_assert_all resilient policy 2 "$PORTS"

# The same router masquerading its clients (an OpenWrt-like gateway): the servers' packets are
# queued in mangle FORWARD, after the host's rules there (the IPv6 clamp); a queue rule before
# it would have let the SYN-ACK skip the clamp (an accepted packet leaves the table's chain).
topo_source_nat
what="through splice-proxy behind source NAT" xfer_round nat
check "both flows of the last round were behind source NAT ($(resilient_stat sourceNATFlows))" \
    [ "$(resilient_stat sourceNATFlows)" -eq 2 ]
# Lowered after the engine saw them: both SYNs and the IPv4 SYN-ACK (filter FORWARD comes
# after the queue in mangle FORWARD); the IPv6 SYN-ACK reached the queue clamped already.
lowered=$(resilient_stat mssLowered)
check "behind source NAT, 3 handshakes' MSS seen lowered after the queue ($((lowered - 4)))" [ "$lowered" -eq 7 ]
check "no failover" [ "$(resilient_stat failovers)" -eq 0 ]
log "PASS"
