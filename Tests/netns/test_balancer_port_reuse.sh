#!/usr/bin/env bash
# tcpsplice test: the balancer's source ports come around while a joined flow still holds one
# (Docs/balancer.md, "Ports"). The proxy's connections to backends leave from a range of ports
# taken in turn; a joined flow outlives the proxy's socket (closed silently at the join), so
# the kernel lets the proxy bind its port again while the engine still carries the flow on
# that tuple. Here the range is 4 ports (splice-proxy --balancer-ports) and one backend: a
# keep-alive connection (Tests/netns/keepalive.py) is joined at its first answer (8 MiB) and
# stays open, idle, 6 s before its second, while 12 short requests go one after another, each
# on a new connection, so that its port comes around three times.
# Checks: every short answer byte-exact, each within curl's 3 s (before, the proxy's SYN on the
# joined tuple was dropped and its connect waited for the joined flow's end); spliced counted
# the busy port (`balancer.portsBusy` >= 1: the test's premise); both answers of the joined
# connection byte-exact, the second one after the collisions (the joined flow was left alone:
# a SYN let through to the backend on its tuple would have it reset).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
balancer_topology
WWW="$TEST_TMP/www"
mkdir -p "$WWW"
head -c $((8 << 20)) /dev/urandom >"$WWW/big"
head -c 5000 /dev/urandom >"$WWW/small"
bg_start backend1 "$NS_B1" python3 "$NETNS_DIR/backend.py" backend1 "${BACKENDS[0]}" 80 "$WWW" keepalive
wait_port "$NS_B1" 80

rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=one" --balancer-ports 61000:61003
splicectl pools add one --backend "${BACKENDS[0]}:80" >/dev/null || fail "pools add one failed"
splicectl rules default --action splice >/dev/null || fail "rules default failed"

busy0=$(status_json | json_get balancer.portsBusy)
bg_start download "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP" 80 "$WWW" /big /big --pause 6
wait_for 10 "the keep-alive connection to be joined" eval "splicectl flows | grep -q 'dst=$VIP .*mode=joined'"
for k in $(seq 1 12); do
    nsx "$NS_C" curl -sS --max-time 3 -o "$TEST_TMP/small.$k" "http://$VIP/small" \
        || fail "short request $k (a new connection beside the joined one) failed; spliced: $(status_json | json_get balancer)"
    cmp -s "$TEST_TMP/small.$k" "$WWW/small" || fail "short request $k: the answer differs from the file"
done
busy=$(( $(status_json | json_get balancer.portsBusy) - busy0 ))
((busy >= 1)) || fail "the joined connection's port never came around (balancer.portsBusy +0): the test did not test its point"
bg_wait download 30 || fail "the joined keep-alive connection failed: $(cat "$TEST_TMP/download.log")"
log "12 short requests from 4 ports beside a joined keep-alive connection: all byte-exact, its port found busy $busy times (the proxy connected from the next); its two answers byte-exact, the second after the collisions"
