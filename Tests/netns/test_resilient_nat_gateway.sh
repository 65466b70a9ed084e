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
# with a client that does, every answer right; downloads from nginx spliced from their request
# (the engine reading it, then the proxy), byte-exact, both FINs of each followed through the
# rules' log, no packet to the client from a wrong port; then XF_N transfers (both families,
# downloads and uploads) with the proxy killed a third of the way: byte-exact; every flow was
# resilient through the proxy, the server saw only the router's addresses, no PAWS drop at
# either end.
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

resilient_rules_install "$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT,80"
resilient_spliced_start "$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT,80"

# 1. Short exchanges, the server speaking first and the client.
proxy_start
banner_exchanges "$COUNT" "$BANNER_PORT" "$ASKING_PORT"
flows_assert_all resilient policy $((4 * COUNT)) "$BANNER_PORT,$ASKING_PORT"
nat=$(resilient_stat sourceNATFlows)
check "spliced saw every exchange's flow behind source NAT ($nat of $((4 * COUNT)))" [ "$nat" -eq $((4 * COUNT)) ]
bg_kill banner-serve >/dev/null || true

# 2. Splices: downloads from nginx spliced by a rule on their path, the engine reading the
# request (spliced from it), then the proxy reading it and stepping out (the engine sends each
# end the other's window then). The server's FINs reach the flow table through the log in
# FORWARD (in PREROUTING their copy named the router's address: ignored), and nothing this
# host sends reaches the client from another port than the server's.
CROWD_DIR="$TEST_TMP/www"
mkdir -p "$CROWD_DIR/spliced"
make_random_file "$CROWD_DIR/spliced/file" 4
want_spliced=$(sha256_of "$CROWD_DIR/spliced/file")
nginx_start "$NS_S" 80
splicectl rules add --path-prefix /spliced/ --action splice --name nat-splice >/dev/null || fail "splicectl rules add failed"
splice_stat() { status_json | json_get "splices.$1"; }
fins0=$(splice_stat finsLogged)
updates0=$(splice_stat windowUpdates)
capture_start natsplice
for reader in engine proxy; do
    splicectl rules default --request-reader "$reader" >/dev/null || fail "splicectl rules default --request-reader $reader failed"
    for ip in "$SERVER_IP" "[$SERVER_IP6]"; do
        nsx "$NS_C" curl -sS --max-time 60 -o "$TEST_TMP/spliced.body" "http://$ip/spliced/file" \
            || fail "the download from $ip through the splice ($reader reading the request) failed"
        [[ $(sha256_of "$TEST_TMP/spliced.body") == "$want_spliced" ]] \
            || fail "the download from $ip through the splice ($reader reading the request) differs"
    done
done
capture_stop natsplice
flows_assert_all spliced rule-splice 4 80
fins=$(($(splice_stat finsLogged) - fins0))
updates=$(($(splice_stat windowUpdates) - updates0))
stray=$(tcpdump -n -r "$TEST_TMP/natsplice-c.pcap" "(src host $SERVER_IP or src host $SERVER_IP6) and not src port 80" 2>/dev/null | wc -l)
report "behind source NAT, 4 spliced downloads byte-exact: $fins FINs followed through the log, $updates window updates sent; packets at the client from the server's address and another port: $stray"
check "both FINs of each spliced download reached the table through the log ($fins of 8)" [ "$fins" -ge 8 ]
check "the proxy's step-outs sent the ends their windows ($updates)" [ "$updates" -gt 0 ]
check "no packet reached the client from the server's address and another port ($stray)" [ "$stray" -eq 0 ]
bg_kill splice-proxy TERM >/dev/null || true
wait_no_proxy 10

# 3. Transfers, and the proxy's death.
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
