#!/usr/bin/env bash
# tcpsplice test: clients using TCP Fast Open (RFC 7413) get through the resilient path.
#
# A Fast Open client that holds a server's cookie sends its request in its SYN. The engine
# passed the SYN to the server untouched, so the server took the request before the proxy's
# socket existed (and past the rules that read requests): the proxy's socket never got those
# bytes, the numbers of its two sockets no longer matched the ends', and the connection hung
# (the client timed out; seen 2026-12-06). The engine now passes the server a claimed flow's SYN
# without its Fast Open option and without its data: the server acknowledges the SYN alone and
# the client sends the request again at once, after the handshake, as it does facing any server
# without Fast Open.
#
# The server (fastopen.py) listens with TCP_FASTOPEN on the policy's port and on a port outside
# the policy; each client (IPv4, IPv6) first gets its cookie on the outside port (plain
# forwarding), then makes COUNT requests through splice-proxy, each in the SYN of a new
# connection, and COUNT more that a splice rule sends to the server directly once the engine has
# read them. Every answer must be right (the request's SHA-256 as the server got it, and a 64 KiB
# body); every request must have gone in a SYN (the clients' TcpExtTCPFastOpenActiveFail: data
# in a SYN the server did not take, sent again) and the server must have taken none from a SYN
# (TcpExtTCPFastOpenPassive).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10}
PORT=$XF_DOWN_PORT        # in the policy
PRIME_PORT=$XF_UP_PORT    # not in it
FO_PY="$NETNS_DIR/fastopen.py"

topo_create
# The server hands out cookies and takes data in SYNs; the client uses them (its default, 1).
nsx "$NS_S" sysctl -qw net.ipv4.tcp_fastopen=3 || fail "cannot enable Fast Open in the server namespace"
nsx "$NS_C" sysctl -qw net.ipv4.tcp_fastopen=1 || fail "cannot enable Fast Open in the client namespace"
resilient_rules_install "$PORT"
resilient_spliced_start "$PORT"
proxy_start
bg_start fo-serve "$NS_S" python3 "$FO_PY" serve "$PORT" "$PRIME_PORT"
wait_port "$NS_S" "$PORT"
wait_port "$NS_S" "$PRIME_PORT"

active_fail_before=$(ns_counter "$NS_C" TcpExtTCPFastOpenActiveFail)
active_before=$(ns_counter "$NS_C" TcpExtTCPFastOpenActive)
passive_before=$(ns_counter "$NS_S" TcpExtTCPFastOpenPassive)

# 1. Through the proxy (the default action).
bg_start fo-client4 "$NS_C" python3 "$FO_PY" client "$SERVER_IP" "$PORT" "$COUNT" /proxied/ --prime "$PRIME_PORT"
bg_start fo-client6 "$NS_C" python3 "$FO_PY" client "$SERVER_IP6" "$PORT" "$COUNT" /proxied/ --prime "$PRIME_PORT"
status=0
bg_wait fo-client4 60 || status=1
bg_wait fo-client6 60 || status=$((status + 2))
check "IPv4, through splice-proxy: $(tail -n 1 "$(bg_log fo-client4)")" [ $((status & 1)) -eq 0 ]
check "IPv6, through splice-proxy: $(tail -n 1 "$(bg_log fo-client6)")" [ $((status & 2)) -eq 0 ]
cookies=$(nsx "$NS_C" ip tcp_metrics show | grep -c fo_cookie || true)
check "the client holds the server's Fast Open cookie for both of its addresses ($cookies)" [ "$cookies" -ge 2 ]
through_proxy=$(splicectl flows | grep -c " mode=resilient reason=policy " || true)

# 2. Spliced to the server once the engine has read the request.
splicectl rules add --path-prefix /direct/ --action splice --name direct >/dev/null || fail "splicectl rules add failed"
bg_start fo-direct4 "$NS_C" python3 "$FO_PY" client "$SERVER_IP" "$PORT" "$COUNT" /direct/
bg_start fo-direct6 "$NS_C" python3 "$FO_PY" client "$SERVER_IP6" "$PORT" "$COUNT" /direct/
status=0
bg_wait fo-direct4 60 || status=1
bg_wait fo-direct6 60 || status=$((status + 2))
check "IPv4, spliced by a rule on the request: $(tail -n 1 "$(bg_log fo-direct4)")" [ $((status & 1)) -eq 0 ]
check "IPv6, spliced by a rule on the request: $(tail -n 1 "$(bg_log fo-direct6)")" [ $((status & 2)) -eq 0 ]

total=$((4 * COUNT))
active_fail=$(($(ns_counter "$NS_C" TcpExtTCPFastOpenActiveFail) - active_fail_before))
active=$(($(ns_counter "$NS_C" TcpExtTCPFastOpenActive) - active_before))
passive=$(($(ns_counter "$NS_S" TcpExtTCPFastOpenPassive) - passive_before))
removed=$(resilient_stat fastOpenRemoved)
spliced=$(status_json | json_get splices.decidedAtRequest)
report "Fast Open: SYNs stripped by spliced $removed; the clients' SYN data not taken (sent again) $active_fail, taken $active; the server took data from $passive SYNs; flows through the proxy $through_proxy, spliced from the request $spliced"
in_syns=no
[ "$active_fail" -eq "$total" ] && [ "$active" -eq 0 ] && in_syns=yes
check "every one of the $total requests went in a SYN the server did not take it from (TcpExtTCPFastOpenActiveFail +$active_fail, TcpExtTCPFastOpenActive +$active)" \
    [ "$in_syns" = yes ]
check "the server took no data from a SYN (TcpExtTCPFastOpenPassive +$passive)" [ "$passive" -eq 0 ]
check "spliced took Fast Open out of every claimed SYN ($removed of $total)" [ "$removed" -ge "$total" ]
as_ruled=no
[ "$through_proxy" -eq $((2 * COUNT)) ] && [ "$spliced" -eq $((2 * COUNT)) ] && as_ruled=yes
check "the first $((2 * COUNT)) went through the proxy ($through_proxy), the next $((2 * COUNT)) were spliced from their request ($spliced)" \
    [ "$as_ruled" = yes ]
check "no failover" [ "$(resilient_stat failovers)" -eq 0 ]
log "PASS"
