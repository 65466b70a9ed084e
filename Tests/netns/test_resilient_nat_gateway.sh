#!/usr/bin/env bash
# tcpsplice test: the resilient path on a gateway that source-NATs its clients (MASQUERADE
# toward the servers, both families), as a home, office or container host's router does.
#
# A server answers the router's own address there: in mangle PREROUTING, where the rules queue
# the ends' packets, its packets do not yet carry their client's address again, so the rules
# let them by as the router's own traffic, the engine never saw a server's SYN-ACK, and every
# claimed flow went on in bypass ("handshake-unseen"; seen 2026-12-06): the proxy got nothing.
# The rules now queue those packets in mangle FORWARD, address restored (TCPSPLICE_FWDQ), and
# the engine gives such a flow's packets to the proxy by injection, untracked, since the
# conntrack entry they carry would take a client's packet to a local socket with the router's
# address as its source (Docs/resilient.md "Behind source NAT").
#
# Through splice-proxy: COUNT exchanges per family with a server that speaks first and COUNT
# with a client that does, every answer right; then XF_N transfers (both families, downloads
# and uploads) with the proxy killed a third of the way: byte-exact; every flow was resilient
# through the proxy, the server saw only the router's addresses, no PAWS drop at either end.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10}
XF_N=${XF_N:-10}
XF_MIB_EACH=${XF_MIB_EACH:-8}
XF_KIBPS=${XF_KIBPS:-1024}
xfers_size_defaults
BANNER_PORT=5003
ASKING_PORT=5004

topo_create
topo_source_nat
# peers_seen PORT: the distinct peer addresses of the server's connections on PORT.
peers_seen() {
    nsx "$NS_S" ss -Htn state established "( sport = :$1 )" | awk '{ sub(/:[0-9]+$/, "", $4); print $4 }' | sort -u | tr '\n' ' '
}

resilient_rules_install "$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT"
resilient_spliced_start "$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT"

# 1. Short exchanges, the server speaking first and the client.
proxy_start
banner_exchanges "$COUNT" "$BANNER_PORT" "$ASKING_PORT"
flows_assert_all resilient policy $((4 * COUNT)) "$BANNER_PORT,$ASKING_PORT"
nat=$(resilient_stat sourceNATFlows)
check "spliced saw every exchange's flow behind source NAT ($nat of $((4 * COUNT)))" [ "$nat" -eq $((4 * COUNT)) ]
bg_kill banner-serve >/dev/null || true
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 10

# 2. Transfers, and the proxy's death.
paws_baseline
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP" "$SERVER_IP6"
seen="$(peers_seen "$XF_DOWN_PORT")$(peers_seen "$XF_UP_PORT")"
report "the server's peers during the transfers: $seen"
for peer in $seen; do
    [[ "$peer" == "$ROUTER_IP_S" || "$peer" == "[::ffff:$ROUTER_IP_S]" || "$peer" == "[$ROUTER_IP6_S]" ]] \
        || fail "the server saw a connection from $peer, not from the router's addresses: not source-NATed"
done
proxy_killed_midway
xfers_wait 240
xfers_verify
paws_report "after the kill behind source NAT"
report "behind source NAT: $(resilient_stat sourceNATFlows) flows, $(resilient_stat injectedToProxy) of the ends' packets given to the proxy by injection, injection failures $(resilient_stat injectionFailures)"
log "PASS"
