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
# Then the other way round, on the other claimed port: the client sends through alt and the
# server answers through the splice router, which sees a SYN-ACK for a SYN it never saw and
# the server's half of the connection only. The same: byte-exact, every flow in bypass (a
# SYN-ACK opens no flow the proxy could take: picked up mid-stream), nothing to the proxy.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-8}
PORT=$XF_DOWN_PORT   # counted by alt's rule (topo_add_alt), as XF_UP_PORT
PORT2=$XF_UP_PORT

topo_create
topo_add_alt
ip -n "$NS_S" route del 10.77.1.0/24 via "$ROUTER_IP_S" metric 10 || fail "cannot take the server's IPv4 route through the splice router away"
ip -n "$NS_S" -6 route del fd77:1::/64 via "$ROUTER_IP6_S" metric 10 || fail "cannot take the server's IPv6 route through the splice router away"
resilient_rules_install "$PORT,$PORT2"
resilient_spliced_start "$PORT,$PORT2"
proxy_start

pmtu_exchanges "$PORT" "$MIB" "the server answering through alt"
flows_assert_all bypass handshake-unseen 2 "$PORT"
alt=$(nsx "$NS_A" iptables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
alt6=$(nsx "$NS_A" ip6tables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
check "alt forwarded the server's packets (IPv4 $alt, IPv6 $alt6)" [ "${alt:-0}" -gt 0 -a "${alt6:-0}" -gt 0 ]
check "nothing went to the proxy ($(status_json | json_get verdicts.toProxy))" [ "$(status_json | json_get verdicts.toProxy)" -eq 0 ]
log "alt forwarded $alt IPv4 and $alt6 IPv6 packets of the server's; none went to the proxy"

# The other way round: the client's packets through alt, the server's through the router.
ip -n "$NS_S" route add 10.77.1.0/24 via "$ROUTER_IP_S" metric 10 || fail "cannot give the server its IPv4 route through the splice router back"
ip -n "$NS_S" -6 route add fd77:1::/64 via "$ROUTER_IP6_S" metric 10 || fail "cannot give the server its IPv6 route through the splice router back"
ip -n "$NS_C" route del 10.77.2.0/24 via "$ROUTER_IP_C" metric 10 || fail "cannot take the client's IPv4 route through the splice router away"
ip -n "$NS_C" -6 route del fd77:2::/64 via "$ROUTER_IP6_C" metric 10 || fail "cannot take the client's IPv6 route through the splice router away"
# The client's connections keep its address on the router's side (the route through alt would
# otherwise give them eth1's, which the server answers elsewhere).
ip -n "$NS_C" route replace 10.77.2.0/24 via "$ALT_IP_C" metric 100 src "$CLIENT_IP" || fail "cannot give the client's IPv4 route through alt its source"
ip -n "$NS_C" -6 route replace fd77:2::/64 via "$ALT_IP6_C" metric 100 src "$CLIENT_IP6" || fail "cannot give the client's IPv6 route through alt its source"
pmtu_exchanges "$PORT2" "$MIB" "the client sending through alt"
flows_json >"$TEST_TMP/flows.json"
python3 - "$PORT2" "$TEST_TMP/flows.json" >"$TEST_TMP/reverse.txt" 2>&1 <<'PY' || fail "the flows of the client sending through alt: $(cat "$TEST_TMP/reverse.txt")"
import json, sys
port = int(sys.argv[1])
flows = [f for f in json.load(open(sys.argv[2])) if port in (f.get("sport"), f.get("dport"))]
bad = [f for f in flows if f.get("mode") != "bypass"]
print(f"{len(flows)} flows, modes {sorted({f.get('mode') for f in flows})}, reasons {sorted({f.get('reason') for f in flows})}")
sys.exit(1 if bad or len(flows) < 2 else 0)
PY
log "the client sending through alt: $(cat "$TEST_TMP/reverse.txt")"
alt2=$(nsx "$NS_A" iptables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
alt62=$(nsx "$NS_A" ip6tables -L FORWARD -v -n -x | awk '/transfers through alt/ { print $1 }')
check "alt forwarded the client's packets (IPv4 $((alt2 - alt)), IPv6 $((alt62 - alt6)))" [ $((alt2 - alt)) -gt 0 -a $((alt62 - alt6)) -gt 0 ]
check "nothing went to the proxy ($(status_json | json_get verdicts.toProxy))" [ "$(status_json | json_get verdicts.toProxy)" -eq 0 ]
log "PASS"
