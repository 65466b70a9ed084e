#!/usr/bin/env bash
# tcpsplice test: the resilient path on a router with a stateful firewall of its own.
#
# The router's rules, in both families, as a router's usually are: INVALID dropped in mangle
# PREROUTING (the usual anti-flood advice), first thing in filter INPUT and in FORWARD; INPUT
# and FORWARD dropping by default, accepting ESTABLISHED/RELATED, `lo`, ICMP, and new
# connections from the client's side. The engine's packets to the proxy's sockets carry those
# sockets' numbers, which conntrack never saw: they were INVALID and dropped, and a connection
# whose server speaks first hung (the proxy's socket facing the client never got its
# handshake's last ACK; seen 2026-12-06). They are now untracked (raw OUTPUT).
#
# Through splice-proxy: COUNT connections per family to a server that speaks first (a banner,
# then an answer to the client's line), COUNT HTTP-like requests whose client speaks first, then
# XF_N transfers with the proxy killed a third of the way: every answer right, every transfer
# byte-exact, and the firewall's INVALID rules counted no packet of ours.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10}
XF_N=${XF_N:-10}
XF_MIB_EACH=${XF_MIB_EACH:-8}
XF_KIBPS=${XF_KIBPS:-1024}
xfers_size_defaults
BANNER_PORT=5003
ASKING_PORT=5004
PORTS="$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT"

topo_create
for ipt in iptables ip6tables; do
    icmp=icmp
    [[ $ipt == ip6tables ]] && icmp=ipv6-icmp
    nsx "$NS_R" "$ipt" -t mangle -A PREROUTING -m conntrack --ctstate INVALID -j DROP
    nsx "$NS_R" "$ipt" -A INPUT -m conntrack --ctstate INVALID -j DROP
    nsx "$NS_R" "$ipt" -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    nsx "$NS_R" "$ipt" -A INPUT -i lo -j ACCEPT
    nsx "$NS_R" "$ipt" -A INPUT -p "$icmp" -j ACCEPT
    nsx "$NS_R" "$ipt" -P INPUT DROP
    nsx "$NS_R" "$ipt" -A FORWARD -m conntrack --ctstate INVALID -j DROP
    nsx "$NS_R" "$ipt" -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    nsx "$NS_R" "$ipt" -A FORWARD -p "$icmp" -j ACCEPT
    nsx "$NS_R" "$ipt" -A FORWARD -i rc0 -o rs0 -m conntrack --ctstate NEW -j ACCEPT
    nsx "$NS_R" "$ipt" -P FORWARD DROP
done
# invalid_dropped: packets the three INVALID rules dropped, both families.
invalid_dropped() {
    local ipt n=0 c
    for ipt in iptables ip6tables; do
        for c in "-t mangle -L PREROUTING" "-L INPUT" "-L FORWARD"; do
            # shellcheck disable=SC2086
            n=$((n + $(nsx "$NS_R" "$ipt" $c -v -n -x | awk '/ctstate INVALID/ { s += $1 } END { print s + 0 }')))
        done
    done
    echo "$n"
}

resilient_rules_install "$PORTS"
resilient_spliced_start "$PORTS"
proxy_start

# 1. A server that speaks first, and a client that does.
banner_exchanges "$COUNT" "$BANNER_PORT" "$ASKING_PORT"
flows_assert_all resilient policy $((4 * COUNT)) "$BANNER_PORT,$ASKING_PORT"
check "the firewall's INVALID rules dropped no packet of the connections ($(invalid_dropped))" [ "$(invalid_dropped)" -eq 0 ]
bg_kill banner-serve >/dev/null || true

# 2. Transfers, and the proxy's death.
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 10
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP"
proxy_killed_midway
xfers_wait 240
xfers_verify
check "the firewall's INVALID rules dropped no packet of ours ($(invalid_dropped))" [ "$(invalid_dropped)" -eq 0 ]
log "PASS"
