#!/usr/bin/env bash
# tcpsplice test: the ends' DSCP marks (RFC 2474) through the resilient path.
#
# Hosts mark their traffic for the network's QoS (a Windows group policy, a VoIP phone, a CDN
# marking its classes), and routers past ours classify by it. The proxy's sockets sent with
# their own TOS (0), so on a claimed port every packet past the router lost its end's mark
# (seen 2026-12-07: through plain forwarding every packet kept it, through splice-proxy only
# the handshake did). The engine now gives the proxy's packets, and the ACKs it releases, the
# DSCP of the end they speak for; their ECN bits stay their own.
#
# nftables marks the client's packets to the test ports AF41 and the server's from them CS4
# (as each host's own QoS policy would) and counts, at each end, the packets of the other that
# arrive without its mark. Per family: MIB MiB up then down on an unclaimed port (plain
# forwarding: the premise, none unmarked) and on a claimed one through splice-proxy:
# byte-exact, none unmarked at either end, the engine counting the marks it gave.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-4}
PORT=5005
OPEN_PORT=5009   # not claimed

topo_create
# nft_dscp NS DIR MARK OTHER: in NS, MARK on the packets going DIR (dport: to the test ports;
# sport: from them), and per port counters of the other end's packets arriving with its mark
# OTHER and without it.
nft_dscp() {
    local ns=$1 out=$2 mark=$3 other=$4 back
    [[ $out == dport ]] && back=sport || back=dport
    nsx "$ns" nft -f - <<NFT || fail "cannot add the DSCP rules in $ns"
table inet tsplice_dscp {
    chain post {
        type filter hook postrouting priority 0; policy accept;
        tcp $out { $PORT, $OPEN_PORT } ip dscp set $mark
        tcp $out { $PORT, $OPEN_PORT } ip6 dscp set $mark
    }
    chain in {
        type filter hook input priority 0; policy accept;
        tcp $back $PORT ip dscp $other counter comment "marked-claimed"
        tcp $back $PORT ip6 dscp $other counter comment "marked-claimed"
        tcp $back $PORT ip dscp != $other counter comment "unmarked-claimed"
        tcp $back $PORT ip6 dscp != $other counter comment "unmarked-claimed"
        tcp $back $OPEN_PORT ip dscp != $other counter comment "unmarked-open"
        tcp $back $OPEN_PORT ip6 dscp != $other counter comment "unmarked-open"
    }
}
NFT
}
nft_dscp "$NS_C" dport af41 cs4
nft_dscp "$NS_S" sport cs4 af41
# count NS WHICH: the packets NS counted under WHICH, both families.
count() {
    nsx "$1" nft list chain inet tsplice_dscp in \
        | awk -v c="\"$2\"" '$0 ~ c { for (i = 1; i <= NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }'
}

resilient_rules_install "$PORT"
resilient_spliced_start "$PORT"
proxy_start

pmtu_exchanges "$OPEN_PORT" "$MIB" "plain forwarding, the ends marking AF41 and CS4"
c=$(count "$NS_C" unmarked-open) s=$(count "$NS_S" unmarked-open)
check "plain forwarding keeps the marks (the premise: unmarked at the client $c, at the server $s)" [ "$c" -eq 0 -a "$s" -eq 0 ]

pmtu_exchanges "$PORT" "$MIB" "through splice-proxy, the ends marking AF41 and CS4"
flows_assert_all resilient policy 2 "$PORT"
c=$(count "$NS_C" unmarked-claimed) s=$(count "$NS_S" unmarked-claimed)
mc=$(count "$NS_C" marked-claimed) ms=$(count "$NS_S" marked-claimed)
log "through splice-proxy: the server's mark on $mc packets at the client ($c without), the client's on $ms at the server ($s without); $(resilient_stat dscpCopied) proxy packets given their end's mark"
check "the client got every packet of the server's with the server's mark ($c without)" [ "$c" -eq 0 -a "$mc" -gt 0 ]
check "the server got every packet of the client's with the client's mark ($s without)" [ "$s" -eq 0 -a "$ms" -gt 0 ]
log "PASS"
