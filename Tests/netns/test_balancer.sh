#!/usr/bin/env bash
# tcpsplice test: the layer-7 balancer (seed 003 claim 10; Docs/balancer.md). A client, the
# router, three backends in namespaces of their own (Tests/netns/backend.py: Python's threading
# HTTP server, each logging its requests). The router holds the service address 10.77.9.1:80 on lo; splice-proxy listens
# there, reads each request, picks a pool member by the splice rules, connects to it from a
# port of the balancer's range, writes the request on, and asks spliced to join the client's
# connection to that one: from then on the engine translates every packet (addresses, ports,
# sequence numbers, windows, timestamps, SACK) and the proxy holds no socket of it.
#
# Pools and rules set with splicectl:
#   pool web     round robin over the three backends (the service's default pool), an HTTP
#                health check every 200 ms
#   pool images  backend 2 alone
#   rule 1  --host img.example       -> splice to pool images
#   rule 2  --path-prefix /api/      -> proxy (stays in the proxy, balanced over web)
#   default splice (pool web)
# The proxy adds X-Forwarded-For to every request: the join's sequence delta carries the bytes
# it added. Checks: requests for img.example all land on backend 2, joined, byte-exact
# (2 MiB); /api/ stays proxied; the header reached the backend (GET /headers) and the answer
# came back through the joined flow; a connection relayed to its end (rule proxy) leaves the
# queue past its first 64 KiB (a 2 MiB download, byte-exact, less than half of it seen by the
# engine); 30 default requests spread 10/10/10 over the backends (counted from their logs),
# each joined; a backend whose first two SYNs are lost (a 3 s
# connect) is joined all the same; a 32 MiB download joined is byte-exact; `splicectl
# flows` shows the joined pairs (mode joined, the backend, the rule); a drained member takes no
# new requests; a killed member is taken out by the health check and every request after
# succeeds on the others, and it is taken back once it runs again; a hung member (SIGSTOP) is
# taken out by its health check and the download joined to it ends with a reset, not hung, as
# does one reset with `splicectl pools reset`; a crowd of concurrent short
# requests through the balancer (2,000 by default) is byte-exact; a rule on the response's
# Content-Length joins a large answer after its head and leaves a small one proxied; with
# spliced killed, the proxy relays new requests without joining them.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
balancer_topology
# Each backend serves its own name at /whoami and the same files elsewhere (so a body tells
# which backend sent it only through /whoami; the big files are byte-checked).
WWW="$TEST_TMP/www"
mkdir -p "$WWW/shared/api"
head -c $((32 << 20)) /dev/urandom >"$WWW/shared/big32"
head -c $((2 << 20)) /dev/urandom >"$WWW/shared/big2"
head -c 20000 /dev/urandom >"$WWW/shared/small"
echo "api answer" >"$WWW/shared/api/v1"
head -c $((2 << 20)) /dev/urandom >"$WWW/shared/api/big2"
balancer_backends_start "$WWW"
# requests_on I: the requests backend I logged so far (one line per request, all its runs).
requests_on() { cat "$TEST_TMP/backend$1.log" "$TEST_TMP/backend$1-again.log" 2>/dev/null | grep -c "^REQ backend$1 GET /[^h]" || true; }

rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=web" --forwarded-for

splicectl pools add web --method round-robin --backend "${BACKENDS[0]}:80" --backend "${BACKENDS[1]}:80" \
    --backend "${BACKENDS[2]}:80" --check http --check-path /whoami --check-interval-ms 200 --check-fall 2 \
    >/dev/null || fail "pools add web failed"
splicectl pools add images --backend "${BACKENDS[1]}:80" >/dev/null || fail "pools add images failed"
splicectl rules add --host img.example --action splice --pool images --name images >/dev/null || fail "rules add --pool failed"
splicectl rules add --path-prefix /api/ --action proxy --name api >/dev/null || fail "rules add api failed"
splicectl rules default --action splice >/dev/null || fail "rules default failed"
log "pools:"$'\n'"$(splicectl pools)"
log "rules:"$'\n'"$(splicectl rules)"

# get NAME PATH [CURL ARGS...]: GET http://VIP/PATH into $TEST_TMP/NAME.body; prints the
# client port.
get() {
    local name=$1 path=$2
    shift 2
    nsx "$NS_C" curl -sS --max-time 60 -o "$TEST_TMP/$name.body" -w '%{local_port}' "$@" "http://$VIP/$path" \
        || fail "curl $name (/$path) failed"
}
same() { [[ "$(sha256_of "$1")" == "$(sha256_of "$2")" ]] || fail "$3: the body differs from the backend's file"; }
# joined PORT: the client connection of that port is joined (mode joined in splicectl flows).
joined() {
    local f
    f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$VIP" --dport 80 --sport "$1") || fail "no flow for client port $1"
    [[ "$(json_get mode <<<"$f")" == joined ]] || fail "client port $1: expected mode joined, the flow is $f"
}

# 1. Content partitioning: img.example goes to backend 2 alone, joined.
before2=$(requests_on 2)
for k in 1 2 3; do
    port=$(get "img$k" big2 -H 'Host: img.example')
    same "$TEST_TMP/img$k.body" "$WWW/shared/big2" "img.example request $k"
    joined "$port"
done
(( $(requests_on 2) - before2 == 3 )) || fail "img.example: backend 2 logged $(( $(requests_on 2) - before2 )) requests, expected 3"
log "img.example: 3 requests, all on backend 2, joined, byte-exact (2 MiB each)"

# 2. A rule that keeps the connection in the proxy (balanced over pool web, not joined).
port=$(get api api/v1)
same "$TEST_TMP/api.body" "$WWW/shared/api/v1" "/api/v1"
f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$VIP" --dport 80 --sport "$port") || fail "no flow for /api/v1"
[[ "$(json_get mode <<<"$f")" != joined ]] || fail "/api/v1 was joined; rule 2 says proxy: $f"
log "/api/v1: proxied (mode $(json_get mode <<<"$f")), byte-exact"

# 2b. The header the proxy added reached the backend, and its answer came back joined.
port=$(get headers headers -H 'Host: img.example')
grep -q "^X-Forwarded-For: $CLIENT_IP" "$TEST_TMP/headers.body" || fail "the backend did not receive X-Forwarded-For: $(cat "$TEST_TMP/headers.body")"
joined "$port"
log "X-Forwarded-For: $CLIENT_IP reached the backend; the request grew by $(( ${#CLIENT_IP} + 19 )) bytes, every body since came back through the join's delta"

# 2c. A connection the proxy relays to its end leaves the queue past its first 64 KiB: its
# sockets become transparent and carry the relay mark, so that the rules queue none of its
# packets (-m socket --transparent; the mark), and the engine lets go of its entries. A
# 2 MiB download through it is byte-exact, and the engine's entry of it (closed) counted
# less than half the download (all of it, queued: 2,097,357 bytes).
p0=$(status_json | json_get packets.total)
l0=$(status_json | json_get balancer.relayedLetGo)
port=$(get apibig api/big2)
same "$TEST_TMP/apibig.body" "$WWW/shared/api/big2" "/api/big2"
p1=$(status_json | json_get packets.total)
(( $(status_json | json_get balancer.relayedLetGo) - l0 == 1 )) || fail "the engine did not let go of the relayed /api/big2"
# (The closed entry is kept 10 s after its last packet, the let-go: it is looked at at once.)
f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$VIP" --dport 80 --sport "$port") \
    || fail "no entry for the relayed /api/big2 (client port $port)"
[[ "$(json_get state <<<"$f")" == CLOSE ]] || fail "the relayed /api/big2's entry is not closed: $f"
seen=$(json_get bytesReply <<<"$f")
(( seen < 1 << 20 )) || fail "the engine saw $seen bytes of the relayed 2 MiB download: it stayed queued"
log "relayed to its end, out of the queue: /api/big2 (2 MiB) byte-exact; the engine saw $seen bytes of it, $((p1 - p0)) packets in all"

# 3. Round robin: 30 default requests, 10 on each backend, each joined.
declare -a base
for i in 1 2 3; do base[$i]=$(requests_on "$i"); done
declare -A who=()
for k in $(seq 1 30); do
    port=$(get "rr$k" whoami)
    joined "$port"
    n=$(<"$TEST_TMP/rr$k.body")
    who[$n]=$(( ${who[$n]:-0} + 1 ))
done
# (A backend's log line is written as it answers: give the last ones a moment.)
logged_10() { (( $(requests_on "$1") - base[$1] == 10 )); }
for i in 1 2 3; do
    wait_for 3 "round robin: backend $i to log 10 of the 30 requests" logged_10 "$i"
    [[ "${who[backend$i]:-0}" == 10 ]] || fail "round robin: backend $i answered ${who[backend$i]:-0} of 30 requests, expected 10"
done
log "round robin: 30 requests, 10 on each backend (their logs), all joined"
# The proxy's health checks (every 200 ms, from the router's own addresses to the backends'
# port 80, the port the rules intercept) are the router's own connections: the rules leave
# their answers out of the queue, so the engine holds no flow of them (they were each picked
# up mid-stream in bypass, 415 of them at the crowd).
# (The balancer's own connections to the backends, from its ports, are joined flows.)
# (A health check comes from an ephemeral port, a balanced request from the balancer's ports,
# 61000-65535.)
checks=$(awk '$3 == "GET" && $4 == "/whoami" { split($NF, p, "="); if (p[2] + 0 < 61000) n++ } END { print n + 0 }' "$TEST_TMP/backend1.log")
own() { splicectl flows | grep -E "src=($ROUTER_IP_S|10\.77\.12\.1|10\.77\.13\.1) .*dport=80 .*mode=bypass" || true; }
((checks >= 10)) || fail "backend 1 logged only $checks health checks: they do not run"
[[ -z "$(own)" ]] || fail "the router's own connections to the backends are in the engine's table: $(own | head -3)"

# 3b. A backend slow to take the connection (the first two SYNs from the balancer's ports
# lost, so the connect takes 3 s): the join is made all the same. The drain bound (2 s) runs
# from the join's prepare, once the backend answered, not from the decision.
lose2=(INPUT -p tcp --dport 80 --sport 61000:65535 --syn -m quota --quota 150 -j DROP)
nsx "${BACKEND_NS[1]}" iptables -I "${lose2[@]}" || fail "cannot make backend 2 lose SYNs"
port=$(get slowsyn big2 -H 'Host: img.example')
same "$TEST_TMP/slowsyn.body" "$WWW/shared/big2" "the download over a slow connect"
lost=$(nsx "${BACKEND_NS[1]}" iptables -L INPUT -v -n -x | awk '/quota:/ {print $1}')
[[ "$lost" == 2 ]] || fail "backend 2 lost $lost SYNs, expected 2"
nsx "${BACKEND_NS[1]}" iptables -D "${lose2[@]}" || fail "cannot take the SYN-losing rule out"
joined "$port"
log "slow connect: backend 2's first two SYNs lost (3 s), the download joined all the same, byte-exact"

# 4. A large download through a join: byte-exact.
bigport=$(get big big32)
same "$TEST_TMP/big.body" "$WWW/shared/big32" "32 MiB download"
log "32 MiB download joined: byte-exact"

# 5. splicectl flows shows the download's joined pair: the client's connection, joined to a
# backend, and that backend connection (from a port of the balancer's range), joined to the client.
f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$VIP" --dport 80 --sport "$bigport") || fail "no flow for the download"
to=$(json_get joinedTo <<<"$f")
[[ "$(json_get mode <<<"$f")" == joined && " ${BACKENDS[*]/%/:80} " == *" $to "* ]] \
    || fail "the download's connection is not joined to a backend: $f"
peer=$(flows_json | flowcheck find --dst "${to%:*}" --dport 80 --mode joined --joinedTo "$CLIENT_IP:$bigport") \
    || fail "no backend connection to $to joined to $CLIENT_IP:$bigport: $(splicectl flows | grep 'mode=joined' | head -4)"
((${#peer} > 0 && $(json_get sport <<<"$peer") >= 61000)) || fail "the backend connection does not leave from the balancer's ports: $peer"
log "splicectl flows: the download's pair, e.g.:"$'\n'"$(splicectl flows | grep -E "(:$bigport .*mode=joined|joined-to=$CLIENT_IP:$bigport)" | head -2)"

# 6. A drained member takes no new requests.
splicectl pools drain web "${BACKENDS[0]}:80" >/dev/null || fail "pools drain failed"
for i in 1 2 3; do base[$i]=$(requests_on "$i"); done
for k in $(seq 1 12); do get "dr$k" whoami >/dev/null; done
(( $(requests_on 1) == base[1] )) || fail "the drained backend 1 took $(( $(requests_on 1) - base[1] )) new requests"
splicectl pools undrain web "${BACKENDS[0]}:80" >/dev/null || fail "pools undrain failed"
log "drained member: no new request in 12"

# 7. A killed member: the health check takes it out, and no request fails after that.
bg_kill backend3 KILL || true
wait_for 10 "the proxy to take backend 3 out" grep -q "member ${BACKENDS[2]}:80 is down" "$TEST_TMP/splice-proxy.log"
for i in 1 2; do base[$i]=$(requests_on "$i"); done
for k in $(seq 1 20); do get "hc$k" whoami >/dev/null; done
(( $(requests_on 1) + $(requests_on 2) - base[1] - base[2] == 20 )) \
    || fail "after backend 3 died, backends 1 and 2 logged $(( $(requests_on 1) + $(requests_on 2) - base[1] - base[2] )) of 20 requests"
log "killed member: taken out by the health check; 20 requests after, all answered by the two others"
bg_start backend3-again "$NS_B3" python3 "$NETNS_DIR/backend.py" backend3 "${BACKENDS[2]}" 80 "$WWW/b3"
wait_port "$NS_B3" 80
wait_for 10 "the proxy to take backend 3 back" grep -q "member ${BACKENDS[2]}:80 is up" "$TEST_TMP/splice-proxy.log"
base[3]=$(requests_on 3)
for k in $(seq 1 6); do get "hb$k" whoami >/dev/null; done
(( $(requests_on 3) > base[3] )) || fail "backend 3, running again, took none of 6 requests"
log "member back: backend 3 takes requests again"

# 7b. A hung member: a download joined to it stops; its health check takes it out and the
# engine resets the flows joined to it at both ends (as a balancer closes the sessions of a
# server it marks down): the client's transfer ends with a reset, not hung. Then
# `splicectl pools reset` does the same on the operator's word.
splicectl pools add hang --backend "${BACKENDS[2]}:80" --check http --check-path /whoami --check-interval-ms 200 \
    --check-fall 2 >/dev/null || fail "pools add hang failed"
splicectl rules add --host hang.example --action splice --pool hang --name hang >/dev/null || fail "rules add hang failed"
# hang_download NAME PORT: a paced 32 MiB download from backend 3 (32 s at 1 MiB/s) from the
# client's port PORT, in the background, once it is joined.
# The client's receive buffers are held to 1 MiB meanwhile: a joined flow runs at the link's
# speed, and with tcp_rmem's default ceiling (32 MiB here) the client's socket took in most
# of the file ahead of curl's paced reading; after the engine's reset curl still read what
# its socket held, at 1 MiB/s, for longer than the step waits (seen: 21 MB read in 20 s, the
# reset already counted), before it saw the reset.
rmem0=$(nsx "$NS_C" sysctl -n net.ipv4.tcp_rmem | tr -s '\t ' ' ')
nsx "$NS_C" sysctl -qw net.ipv4.tcp_rmem="4096 131072 1048576" || fail "cannot hold the client's receive buffers to 1 MiB"
hang_download() {
    bg_start "$1" "$NS_C" curl -sS --max-time 60 --limit-rate 1M --local-port "$2" -H 'Host: hang.example' \
        -o "$TEST_TMP/$1.body" "http://$VIP/big32"
    wait_for 10 "the download $1 to be joined to backend 3" eval \
        "splicectl flows | grep -q 'src=$CLIENT_IP dst=$VIP sport=$2 .*mode=joined.*joined-to=${BACKENDS[2]}:80'"
    sleep 1
}
reset0=$(status_json | json_get balancer.resetForBackend)
up_lines() { grep -c "member ${BACKENDS[2]}:80 is up" "$TEST_TMP/splice-proxy.log" || true; }
up0=$(up_lines)
hang_download hung 45001
# Beside it, a download the proxy relays (rule action proxy, pool hang): the proxy resets it.
splicectl rules add --host hangp.example --action proxy --pool hang --name hangp >/dev/null || fail "rules add hangp failed"
bg_start relayed "$NS_C" curl -sS --max-time 60 --limit-rate 1M -H 'Host: hangp.example' -o "$TEST_TMP/relayed.body" "http://$VIP/big32"
wait_for 10 "the relayed download to start" eval '[[ -s "$TEST_TMP/relayed.body" ]]'
kill -STOP "$(bg_pid backend3-again)"
rc=0
bg_wait hung 20 || rc=$?
rcp=0
bg_wait relayed 20 || rcp=$?
kill -CONT "$(bg_pid backend3-again)"
((rcp == 56)) || fail "the download the proxy relayed from the hung backend 3 ended with curl exit $rcp, not 56 (reset): $(cat "$TEST_TMP/relayed.log")"
gotp=$(stat -c %s "$TEST_TMP/relayed.body")
cmp -n "$gotp" "$TEST_TMP/relayed.body" "$WWW/shared/big32" || fail "the relayed download's $gotp bytes before the reset differ from the file's"
((rc == 56)) || fail "the download joined to the hung backend 3 ended with curl exit $rc, not 56 (reset): $(cat "$TEST_TMP/hung.log"); flows to it: $(splicectl flows | grep "${BACKENDS[2]}" | grep -v TIME_WAIT)"
grep -q "member ${BACKENDS[2]}:80 is down" "$TEST_TMP/splice-proxy.log" || fail "the proxy did not take the hung backend 3 out"
((${#reset0} > 0 && $(status_json | json_get balancer.resetForBackend) > reset0)) || fail "spliced reset no joined flow"
got=$(stat -c %s "$TEST_TMP/hung.body" 2>/dev/null || echo 0)
cmp -n "$got" "$TEST_TMP/hung.body" "$WWW/shared/big32" || fail "the $got bytes the client got before the reset differ from the file's first ones"
wait_for 10 "the proxy to take backend 3 back" eval '(( $(up_lines) > up0 ))'
log "hung member: taken out by its health check, the joined download reset after $got bytes (all the file's own), curl exit 56 (resets again on a challenge ACK: $(status_json | json_get balancer.resetAgain)); the relayed one reset by the proxy after $gotp bytes"
hang_download cut 45002
out=$(splicectl pools reset "${BACKENDS[2]}:80") || fail "splicectl pools reset failed: $out"
[[ "$out" == "1 joined flow to ${BACKENDS[2]}:80 reset" ]] || fail "splicectl pools reset said: $out"
rc=0
bg_wait cut 20 || rc=$?
((rc == 56)) || fail "the download reset by splicectl ended with curl exit $rc, not 56: $(cat "$TEST_TMP/cut.log")"
for name in hang hangp; do
    splicectl rules remove "$(splicectl rules --json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin)["rules"] if r.get("name") == sys.argv[1]][0])' "$name")" >/dev/null \
        || fail "rules remove $name failed"
done
nsx "$NS_C" sysctl -qw net.ipv4.tcp_rmem="$rmem0" || fail "cannot give the client its receive buffers back"
log "splicectl pools reset: $out; the client's download ended with a reset"

# 8. A crowd of concurrent short requests through the balancer: all byte-exact.
N=${BAL_CROWD_N:-2000}
# crowd_flows: the engine's entries of the first failed requests and of their backend
# connections. (Seen in CI twice, 1 to 3 of 2,000 reset after the backend's first flight: a
# join answered while a reader had still to send the verdict of a backend packet for the
# proxy's socket, which the proxy then closed; the router reset the backend. Since 2026-12-06
# spliced answers a join once the readers' drains under way have ended.)
crowd_flows() {
    local port all
    all=$(splicectl flows)
    while read -r port _; do
        [[ "$port" =~ ^[0-9]+$ ]] || continue
        grep -E "sport=$port |joined-to=$CLIENT_IP:$port( |$)" <<<"$all" | head -n 2
    done < <(head -n 5 "$TEST_TMP/crowd-failures.txt" 2>/dev/null)
}
nsx "$NS_C" python3 "$NETNS_DIR/crowd.py" --host "$VIP" --port 80 --path /small --count "$N" \
    --concurrency "$N" --sha256 "$(sha256_of "$WWW/shared/small")" --bytes 20000 --timeout 60 \
    --json "$TEST_TMP/crowd.json" --failures "$TEST_TMP/crowd-failures.txt" \
    || fail "crowd: $(cat "$TEST_TMP/crowd.json" 2>/dev/null) (failures: $(head -5 "$TEST_TMP/crowd-failures.txt" 2>/dev/null)); their flows:"$'\n'"$(crowd_flows)"
log "crowd: $N concurrent requests, all byte-exact: $(cat "$TEST_TMP/crowd.json")"
log "balancer counters: $(status_json | json_get 'balancer?none')"
st=$(status_json)
log "joins held until the engine had seen what its queues held: $(json_get splices.deferredForQueue <<<"$st") (answered at the 20 ms bound: $(json_get splices.heldPastBound <<<"$st"))"

# 9. A rule on the response head: the default keeps requests in the proxy, a Content-Length
# above 1 MB joins the rest of the body (the request went to the backend first, its head was
# read, then the windows were shut and the flows joined).
splicectl rules default --action proxy >/dev/null || fail "rules default --action proxy failed"
splicectl rules add --content-length-above 1000000 --action splice --name large >/dev/null || fail "rules add --content-length-above failed"
port=$(get small small)
same "$TEST_TMP/small.body" "$WWW/shared/small" "/small"
f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$VIP" --dport 80 --sport "$port") || fail "no flow for /small"
[[ "$(json_get mode <<<"$f")" != joined ]] || fail "/small (20 KB) was joined; the default says proxy: $f"
port=$(get large big32)
same "$TEST_TMP/large.body" "$WWW/shared/big32" "/big32 joined after its response head"
joined "$port"
log "response rule: 20 KB answer proxied, 32 MiB answer joined after its head, both byte-exact"

# 10. spliced killed: the balancer's connections are ordinary local ones (queued fail-open);
# the proxy relays new requests without joins, byte-exact.
bg_kill spliced KILL || true
wait_for 10 "the proxy to notice spliced is gone" grep -q "lost spliced" "$TEST_TMP/splice-proxy.log"
for k in 1 2 3; do
    get "nojoin$k" big2 >/dev/null
    same "$TEST_TMP/nojoin$k.body" "$WWW/shared/big2" "request $k with spliced dead"
done
log "spliced dead: 3 requests relayed by the proxy, byte-exact"
report "balancer: partitioning, round robin, drain, 32 MiB and a crowd of $N through joined flows, byte-exact"
