#!/usr/bin/env bash
# tcpsplice test: asymmetric routing, the server's answers taking another router.
#
# On an ISP's edge or a multi-homed site a router often sees one direction of a connection
# only. The proxy cannot stand in such a flow (it never sees the server's SYN-ACK), so the
# engine must let it go on untouched: its handshake validation turns a client's ACK for a
# SYN-ACK it never saw into bypass (reason handshake-unseen). Tried 2026-12-07: it does;
# this test keeps it so.
#
# Client and server joined by the splice router and by a plain one (alt); the server routes
# its answers through alt, the client sends through the splice router. One connection per
# family on a claimed port, MIB MiB up then down: byte-exact, the flow bypass/handshake-unseen,
# alt forwarded the server's packets, nothing went to the proxy.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-8}
PORT=$XF_DOWN_PORT   # counted by alt's rule (topo_add_alt)

topo_create
topo_add_alt
ip -n "$NS_S" route del 10.77.1.0/24 via "$ROUTER_IP_S" metric 10 || fail "cannot take the server's IPv4 route through the splice router away"
ip -n "$NS_S" -6 route del fd77:1::/64 via "$ROUTER_IP6_S" metric 10 || fail "cannot take the server's IPv6 route through the splice router away"
resilient_rules_install "$PORT"
resilient_spliced_start "$PORT"
proxy_start

pmtu_exchanges "$PORT" "$MIB" "the server answering through alt"
flows_assert_all bypass handshake-unseen 2 "$PORT"
alt=$(nsx "$NS_A" iptables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
alt6=$(nsx "$NS_A" ip6tables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
check "alt forwarded the server's packets (IPv4 $alt, IPv6 $alt6)" [ "${alt:-0}" -gt 0 -a "${alt6:-0}" -gt 0 ]
check "nothing went to the proxy ($(status_json | json_get verdicts.toProxy))" [ "$(status_json | json_get verdicts.toProxy)" -eq 0 ]
log "alt forwarded $alt IPv4 and $alt6 IPv6 packets of the server's; none went to the proxy"
log "PASS"
