#!/usr/bin/env bash
# tcpsplice test: path MTU discovery works for the proxy's sockets.
#
# Two more hosts: "near" behind the client's namespace and "far" behind the server's, each of
# those two forwarding onto a link that takes only 1400-byte packets and saying so to a sender
# of a larger one with DF set (a route `mtu lock 1400`: ICMP fragmentation-needed, ICMPv6
# packet-too-big), as a tunnel or a PPPoE link on a real path does. near uploads MIB MiB to far
# and downloads MIB MiB back, on one connection, through splice-proxy, in IPv4 and in IPv6: the
# upload's large segments come from the proxy's socket facing far, the download's from the one
# facing near, and each must learn the smaller MTU from the hop's error. That error is addressed
# to the segment's source, the end the socket speaks as: the router forwarded it there, the
# socket went on sending segments the hop drops, and the transfer hung (seen 2026-12-06). The
# engine now gives such an error to the socket (its quoted sequence number taken back into the
# socket's space). Every transfer must arrive byte-exact both ways, with the hops' errors sent
# (the test is void without them) and given to the proxy's sockets, and no failover.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-8}
PORTS="$XF_DOWN_PORT,$XF_UP_PORT"
PMTU_PY="$NETNS_DIR/pmtu.py"

topo_create
topo_far_and_near

resilient_rules_install "$PORTS"
resilient_spliced_start "$PORTS"
proxy_start
errors_before=$(( $(ns_counter "$NS_S" IcmpOutDestUnreachs) + $(ns_counter "$NS_C" IcmpOutDestUnreachs) ))
errors6_before=$(( $(ns_counter "$NS_S" Icmp6OutPktTooBigs) + $(ns_counter "$NS_C" Icmp6OutPktTooBigs) ))

bg_start far4 "$NS_FAR" python3 "$PMTU_PY" serve 4 "$XF_DOWN_PORT" "$MIB"
bg_start far6 "$NS_FAR" python3 "$PMTU_PY" serve 6 "$XF_UP_PORT" "$MIB"
wait_port "$NS_FAR" "$XF_DOWN_PORT"
wait_port "$NS_FAR" "$XF_UP_PORT"
bg_start near4 "$NS_NEAR" python3 "$PMTU_PY" client "$FAR_IP" "$XF_DOWN_PORT" "$MIB"
bg_start near6 "$NS_NEAR" python3 "$PMTU_PY" client "$FAR_IP6" "$XF_UP_PORT" "$MIB"
status=0
bg_wait near4 60 || status=1
bg_wait near6 60 || status=$((status + 2))

errors=$(( $(ns_counter "$NS_S" IcmpOutDestUnreachs) + $(ns_counter "$NS_C" IcmpOutDestUnreachs) - errors_before ))
errors6=$(( $(ns_counter "$NS_S" Icmp6OutPktTooBigs) + $(ns_counter "$NS_C" Icmp6OutPktTooBigs) - errors6_before ))
given=$(resilient_stat tooBigToProxy)
report "the hops sent $errors ICMP and $errors6 ICMPv6 too-big errors; spliced gave $given to the proxy's sockets"
check "IPv4 through splice-proxy, near's side: $(tail -n 1 "$(bg_log near4)")" [ $((status & 1)) -eq 0 ]
check "IPv6 through splice-proxy, near's side: $(tail -n 1 "$(bg_log near6)")" [ $((status & 2)) -eq 0 ]
bg_wait far4 10 || fail "IPv4, far's side: $(tail -n 1 "$(bg_log far4)")"
bg_wait far6 10 || fail "IPv6, far's side: $(tail -n 1 "$(bg_log far6)")"
log "far: $(tail -n 1 "$(bg_log far4)") (IPv4), $(tail -n 1 "$(bg_log far6)") (IPv6)"
check "the hops said their MTU in both families (ICMP $errors, ICMPv6 $errors6)" [ "$errors" -gt 0 -a "$errors6" -gt 0 ]
# The transfers completing is what shows each of the four sockets (two families, two
# directions) learned its MTU; the count shows the engine handed the errors over.
check "spliced gave the proxy's sockets the hops' errors ($given, at least one for each of the 4)" [ "$given" -ge 4 ]
flows_assert_all resilient policy 2 "$PORTS"
check "no failover" [ "$(resilient_stat failovers)" -eq 0 ]
log "PASS"
