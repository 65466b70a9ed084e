#!/usr/bin/env bash
# tcpsplice test: the layer-7 balancer on a router with a stateful firewall of its own.
#
# The router's INPUT and FORWARD drop by default and accept ESTABLISHED/RELATED, `lo`, ICMP,
# new connections from the client's side, and (INPUT) the service's port, as an operator opens
# a service; INVALID is dropped in both. The balancer's packets are untracked (once joined the
# engine rewrites their addresses after conntrack would have seen them): no ESTABLISHED for
# them, so the firewall dropped the backends' answers and every joined packet, and no request
# got through (seen 2026-12-06). The rules now accept, first in INPUT and FORWARD, exactly
# what conntrack would have called ESTABLISHED (TCPSPLICE_IN, TCPSPLICE_FWD).
#
# Through the balancer over three backends: COUNT downloads of 300 KB joined (the default
# rule), COUNT relayed by the proxy (a rule `proxy` on their path; past 64 KiB such a connection
# leaves the queue with the relay mark), every body byte-exact (a member whose health checks
# failed would be out, and with all three out the requests are reset); the default-drop
# policies dropped nothing.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-10}

topo_create
need_bin splicectl >/dev/null
balancer_topology
WWW="$TEST_TMP/www"
mkdir -p "$WWW/shared/relayed"
head -c 300000 /dev/urandom >"$WWW/shared/big"
cp "$WWW/shared/big" "$WWW/shared/relayed/big"
balancer_backends_start "$WWW"
nsx "$NS_R" iptables -A INPUT -m conntrack --ctstate INVALID -j DROP
nsx "$NS_R" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
nsx "$NS_R" iptables -A INPUT -i lo -j ACCEPT
nsx "$NS_R" iptables -A INPUT -p icmp -j ACCEPT
nsx "$NS_R" iptables -A INPUT -p tcp -d "$VIP" --dport 80 -j ACCEPT
nsx "$NS_R" iptables -P INPUT DROP
nsx "$NS_R" iptables -A FORWARD -m conntrack --ctstate INVALID -j DROP
nsx "$NS_R" iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
nsx "$NS_R" iptables -A FORWARD -i rc0 -m conntrack --ctstate NEW -j ACCEPT
nsx "$NS_R" iptables -A FORWARD -p icmp -j ACCEPT
nsx "$NS_R" iptables -P FORWARD DROP
# policy_dropped: packets INPUT's and FORWARD's default policies dropped.
policy_dropped() {
    nsx "$NS_R" iptables -L -v -n -x | awk '/^Chain (INPUT|FORWARD) \(policy DROP/ { s += $5 } END { print s + 0 }'
}

rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=web"
splicectl pools add web --method round-robin --backend "${BACKENDS[0]}:80" --backend "${BACKENDS[1]}:80" \
    --backend "${BACKENDS[2]}:80" --check http --check-path /whoami --check-interval-ms 200 --check-fall 2 \
    >/dev/null || fail "pools add web failed"
splicectl rules add --path-prefix /relayed/ --action proxy --name relayed >/dev/null || fail "rules add failed"
splicectl rules default --action splice >/dev/null || fail "rules default failed"

want=$(sha256sum <"$WWW/shared/big" | cut -d' ' -f1)
fetch() {  # fetch PATH N: N downloads of PATH, each checked
    local i got rc
    for ((i = 1; i <= $2; i++)); do
        rc=0
        nsx "$NS_C" curl -sS --max-time 10 -o "$TEST_TMP/body" "http://$VIP/$1" || rc=$?
        ((rc == 0)) || fail "download $i of /$1 through the firewalled balancer failed (curl exit $rc)"
        got=$(sha256sum <"$TEST_TMP/body" | cut -d' ' -f1)
        [[ "$got" == "$want" ]] || fail "download $i of /$1 through the firewalled balancer: SHA-256 $got, not the file's"
    done
}
joined0=$(status_json | json_get balancer.joined)
fetch big "$COUNT"
joined=$(($(status_json | json_get balancer.joined) - joined0))
fetch relayed/big "$COUNT"
report "through the firewalled router: $COUNT joined downloads ($joined joins), $COUNT relayed, byte-exact; the default-drop policies dropped $(policy_dropped) packets"
check "every joined download was joined ($joined of $COUNT)" [ "$joined" -eq "$COUNT" ]
check "the default-drop policies dropped no packet ($(policy_dropped))" [ "$(policy_dropped)" -eq 0 ]
log "PASS"
