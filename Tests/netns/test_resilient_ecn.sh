#!/usr/bin/env bash
# tcpsplice test: ECN (RFC 3168) through the resilient path.
#
# Clients that ask for ECN (Apple's do by default) and Linux servers (which accept it by
# default) set it up with each other; the proxy's sockets did not (the replayed SYN carried no
# ECE/CWR, and the router's own SYNs never ask), so a congestion mark (CE) on the way to the
# router reached a socket that ignored it, and its sender was never told (seen 2026-12-07: no
# ECE came back to either end through the proxy, where plain forwarding echoed every mark).
# Now the replayed SYN asks for ECN when the ends set it up, install-rules.sh has the router
# ask for ECN (tcp_ecn 2 -> 1) and the engine answers the up socket's ECN SYN as the server
# did: each leg's marks are echoed to its sender.
#
# Both ends ask for ECN; nftables marks CE on every ECT data packet the client sends to the
# test ports and on every one the server sends from them, and counts the segments with ECE
# (not SYN-ACKs: the server's ECN answer) each end gets back. Per family: MIB MiB up then down on an unclaimed port (plain forwarding: the
# premise, ECE back at both ends) and on a claimed one through splice-proxy: byte-exact, ECE
# back at both ends, the flows counted as set up with ECN, and of the pure ACKs each end gets
# back at least three quarters as large a share with ECE as through plain forwarding (the ACKs
# spliced releases in a proxy socket's name echo the socket's mark: without, a sender whose
# receiver's ACKs were mostly released by spliced heard of a mark late or not at all).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${MIB:-4}
PORT=5005
OPEN_PORT=5009   # not claimed

topo_create
for ns in "$NS_C" "$NS_S"; do
    nsx "$ns" sysctl -qw net.ipv4.tcp_ecn=1 || fail "cannot have $ns ask for ECN"
done
# nft_ecn NS DIR: in NS, CE on the ECT packets going DIR (dport: to the test ports; sport: from
# them) and a counter per port of the ACKs with ECE coming back.
nft_ecn() {
    local ns=$1 out=$2 back
    [[ $out == dport ]] && back=sport || back=dport
    nsx "$ns" nft -f - <<NFT || fail "cannot add the ECN marking rules in $ns"
table inet tsplice_ecn {
    chain post {
        type filter hook postrouting priority 0; policy accept;
        tcp $out { $PORT, $OPEN_PORT } ip ecn ect0 ip ecn set ce
        tcp $out { $PORT, $OPEN_PORT } ip6 ecn ect0 ip6 ecn set ce
    }
    chain in {
        type filter hook input priority 0; policy accept;
        tcp $back $PORT tcp flags & (syn | ecn) == ecn counter comment "ece-claimed"
        tcp $back $OPEN_PORT tcp flags & (syn | ecn) == ecn counter comment "ece-open"
        tcp $back $PORT tcp flags & syn == 0 meta length < 120 counter comment "acks-claimed"
        tcp $back $OPEN_PORT tcp flags & syn == 0 meta length < 120 counter comment "acks-open"
        tcp $back $PORT tcp flags & (syn | ecn) == ecn meta length < 120 counter comment "ackece-claimed"
        tcp $back $OPEN_PORT tcp flags & (syn | ecn) == ecn meta length < 120 counter comment "ackece-open"
    }
}
NFT
}
nft_ecn "$NS_C" dport
nft_ecn "$NS_S" sport
# counted NS NAME: the packets the rule with comment NAME counted in NS so far.
counted() {
    nsx "$1" nft list chain inet tsplice_ecn in | awk -v c="\"$2\"" '$0 ~ c { for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1) }'
}
# ece NS WHICH: ACKs with ECE NS got back on the claimed or the open port so far.
ece() { counted "$1" "ece-$2"; }
# echoed NS WHICH: of the pure ACKs NS got back (its own data's, no payload), the percentage
# with ECE.
echoed() {
    local all
    all=$(counted "$1" "acks-$2")
    echo $(( ${all:-0} > 0 ? 100 * $(counted "$1" "ackece-$2") / all : 0 ))
}

resilient_rules_install "$PORT"
check "install-rules.sh has the router ask for ECN" [ "$(nsx "$NS_R" sysctl -n net.ipv4.tcp_ecn)" = 1 ]
resilient_spliced_start "$PORT"
proxy_start

pmtu_exchanges "$OPEN_PORT" "$MIB" "plain forwarding, every data packet marked CE"
c=$(ece "$NS_C" open) s=$(ece "$NS_S" open)
pc=$(echoed "$NS_C" open) ps=$(echoed "$NS_S" open)
log "plain forwarding: ACKs with ECE back at the client $c, at the server $s; of the pure ACKs, with ECE: at the client $pc%, at the server $ps%"
check "plain forwarding echoes the marks to both ends (the premise: client $c, server $s)" [ "${c:-0}" -gt 0 -a "${s:-0}" -gt 0 ]

pmtu_exchanges "$PORT" "$MIB" "through splice-proxy, every data packet marked CE"
flows_assert_all resilient policy 2 "$PORT"
c=$(ece "$NS_C" claimed) s=$(ece "$NS_S" claimed)
xc=$(echoed "$NS_C" claimed) xs=$(echoed "$NS_S" claimed)
log "through splice-proxy: ACKs with ECE back at the client $c, at the server $s; of the pure ACKs, with ECE: at the client $xc%, at the server $xs%; $(resilient_stat ecnFlows) flows with ECN set up at the proxy's sockets, $(resilient_stat acksEchoingCE) of $(resilient_stat acksInjected) ACKs released by spliced echoing a mark"
check "the proxy's socket facing the client echoed its marks ($c ACKs with ECE)" [ "${c:-0}" -gt 0 ]
check "the proxy's socket facing the server echoed its marks ($s ACKs with ECE)" [ "${s:-0}" -gt 0 ]
# Every data packet is marked, so a receiver echoes on nearly every ACK; most of the ACKs an end
# gets through the proxy are the ones spliced releases in the socket's name (the socket's own,
# clamped, tell nothing new and are dropped), and they must echo as the socket does (without:
# 40% and 51% against plain forwarding's 100% and 98%, checked).
check "the client's pure ACKs echo marks as through plain forwarding ($xc% against $pc%)" [ $((4 * xc)) -ge $((3 * pc)) ]
check "the server's pure ACKs echo marks as through plain forwarding ($xs% against $ps%)" [ $((4 * xs)) -ge $((3 * ps)) ]
check "spliced counted both flows as set up with ECN ($(resilient_stat ecnFlows))" [ "$(resilient_stat ecnFlows)" -eq 2 ]
log "PASS"
