#!/usr/bin/env bash
# tcpsplice test: the balancer's selection methods, 300 connections each (issue "Flow
# splicing, part 2": "300 connections spread by each selection method as the method says,
# counted from the backends' own logs"). Client, router, three backends (Tests/netns/backend.py,
# whose GET /who/... answers with the backend's name and is logged). Every request is a new
# connection (Tests/netns/who.py), joined to the member its pool picks:
#   round-robin            100/100/100 (from the logs, and from the answers)
#   weighted-round-robin   weights 1, 2, 3: 50/100/150
#   least-connections      backend 1 holds 3 connections (slow answers the proxy relays): the
#                          300 requests go to backends 2 and 3 alone, in turn
#   source-hash            30 client addresses, 10 requests each: every address always to one
#                          backend, all three backends used
#   host-hash, path-hash, header-hash (X-User)
#                          100 keys, 3 requests each: every key always to one backend, all three
#                          used; a request without the header falls back to the client address;
#                          and host-hash with backend 3 drained: the hosts that were on 1 and 2
#                          stay where they were, those of 3 move (consistent hashing)
# (sni-hash has the same hashing as the others; its SNI parsing is a unit test's.)
# The router asks for ECN in its own SYNs (tcp_ecn=1, as install-rules.sh --tproxy-port leaves a
# router that also runs the resilient mode): the balancer's SYNs to the backends must not, or a
# joined backend would send ECT packets to clients that ignore their marks; the backends count
# the SYNs with ECE they get (0 wanted).
# Then a 1 MiB POST the proxy relays (rule /hold/, action proxy) with an urgent byte in every
# 256 KiB of its body: the backend's SHA-256 of the body is the client's (splice(2) stops at an
# urgent byte; before 2026-12-07 the relay spun there and the upload never ended).
# Last, a client asking for ECN: a 4 MiB upload joined to a backend (the default rule) arrives
# byte-exact and not ECN-capable (the backends count ECN-capable packets; 0 wanted), the
# engine's `balancer.ectCleared` showing the client's connection did set ECN up.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
balancer_topology
for k in $(seq 100 129); do ip -n "$NS_C" addr add "10.77.1.$k/24" dev eth0; done
mkdir -p "$TEST_TMP/www"
for i in 1 2 3; do
    bg_start "backend$i" "${BACKEND_NS[$((i - 1))]}" python3 "$NETNS_DIR/backend.py" "backend$i" \
        "${BACKENDS[$((i - 1))]}" 80 "$TEST_TMP/www"
    wait_port "${BACKEND_NS[$((i - 1))]}" 80
done

for i in 1 2 3; do
    nsx "${BACKEND_NS[$((i - 1))]}" nft -f - <<'NFT' || fail "cannot add the ECN counter in backend $i"
table inet tsplice_ecn {
    chain in {
        type filter hook input priority 0; policy accept;
        tcp dport 80 tcp flags & (syn | ack | ecn) == syn | ecn counter comment "ecn-syns"
        tcp dport 80 ip ecn != not-ect counter comment "ect-in"
        tcp dport 80 ip6 ecn != not-ect counter comment "ect-in"
    }
}
NFT
done
nsx "$NS_R" sysctl -qw net.ipv4.tcp_ecn=1 || fail "cannot have the router ask for ECN"
rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=hold"

m=("${BACKENDS[0]}:80" "${BACKENDS[1]}:80" "${BACKENDS[2]}:80")
pool() { splicectl pools add "$@" >/dev/null || fail "pools add $* failed"; }
pool hold --backend "${m[0]}"
pool rr --method round-robin --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
pool wrr --method weighted-round-robin --backend "${m[0]}:1" --backend "${m[1]}:2" --backend "${m[2]}:3"
pool lc --method least-connections --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
pool src --method source-hash --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
pool host --method host-hash --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
pool path --method path-hash --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
pool hdr --method header-hash --hash-header X-User --backend "${m[0]}" --backend "${m[1]}" --backend "${m[2]}"
for p in rr wrr lc src host path hdr; do
    splicectl rules add --path-prefix "/who/$p/" --action splice --pool "$p" >/dev/null || fail "rules add /who/$p/ failed"
done
splicectl rules add --path-prefix /hold/ --action proxy >/dev/null || fail "rules add /hold/ failed"
splicectl rules default --action splice >/dev/null || fail "rules default failed"

# run NAME CONCURRENCY: the requests (JSON on stdin) through who.py; the answers in NAME.json.
run() {
    nsx "$NS_C" python3 "$NETNS_DIR/who.py" "$VIP" 80 "$2" >"$TEST_TMP/$1.json" || fail "$1: a request failed: $(cat "$TEST_TMP/$1.json")"
}
# requests PREFIX N [KIND]: N requests to /who/PREFIX/I as JSON; KIND host, header or source
# gives request I the key I % 100 (Host hI.example, X-User uI, source 10.77.1.(100 + I % 30)).
requests() {
    python3 - "$@" <<'PY'
import json, sys
prefix, n = sys.argv[1], int(sys.argv[2])
kind = sys.argv[3] if len(sys.argv) > 3 else ""
out = []
for i in range(n):
    r = {"id": str(i), "path": f"/who/{prefix}/{i % 100 if kind == 'path' else i}"}
    if kind == "path":
        r["path"] += f"?n={i}"
    if kind == "host":
        r["headers"] = {"Host": f"h{i % 100}.example"}
    if kind == "header":
        r["headers"] = {"X-User": f"u{i % 100}"}
    if kind == "source":
        r["source"] = f"10.77.1.{100 + i % 30}"
    out.append(r)
print(json.dumps(out))
PY
}
# counts NAME: answers per backend, "N1 N2 N3".
counts() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(*(sum(v == f"backend{i}" for v in d.values()) for i in (1, 2, 3)))' "$TEST_TMP/$1.json"; }
# logged I PREFIX: requests under /who/PREFIX/ that backend I logged.
logged() { grep -c "^REQ backend$1 GET /who/$2/" "$TEST_TMP/backend$1.log" || true; }
logged_counts() { echo "$(logged 1 "$1") $(logged 2 "$1") $(logged 3 "$1")"; }
settle_logs() { local d=$((SECONDS + 5)); until [[ "$(logged_counts "$1")" == "$2" ]]; do ((SECONDS < d)) || return 1; sleep 0.1; done; }
# keyed NAME MOD: every key (request id % MOD) answered by one backend, all three used.
keyed() {
    python3 - "$TEST_TMP/$1.json" "$2" <<'PY' || fail "$1: $(cat "$TEST_TMP/$1.check")"
import collections, json, sys
d, mod = json.load(open(sys.argv[1])), int(sys.argv[2])
by = collections.defaultdict(set)
for rid, who in d.items():
    by[int(rid) % mod].add(who)
split = [k for k, v in by.items() if len(v) > 1]
used = collections.Counter(next(iter(v)) for v in by.values())
msg = f"{len(split)} keys answered by more than one backend {split[:5]}; keys per backend {dict(sorted(used.items()))}"
open(sys.argv[1].replace(".json", ".check"), "w").write(msg)
sys.exit(1 if split or len(used) < 3 else 0)
PY
    log "$1: every key to one backend; keys per backend: $(sed 's/.*keys per backend //' "$TEST_TMP/$1.check")"
}

# Round robin and weighted round robin: exact shares, from the answers and from the logs.
requests rr 300 | run rr 20
[[ "$(counts rr)" == "100 100 100" ]] || fail "round robin: answers per backend $(counts rr), expected 100 100 100"
settle_logs rr "100 100 100" || fail "round robin: the backends logged $(logged_counts rr), expected 100 100 100"
log "round-robin: 300 connections, 100/100/100 (answers and backend logs)"
requests wrr 300 | run wrr 20
[[ "$(counts wrr)" == "50 100 150" ]] || fail "weighted round robin 1:2:3: answers per backend $(counts wrr), expected 50 100 150"
settle_logs wrr "50 100 150" || fail "weighted round robin: the backends logged $(logged_counts wrr), expected 50 100 150"
log "weighted-round-robin 1:2:3: 300 connections, 50/100/150 (answers and backend logs)"

# Least connections: backend 1 holds 3 connections the proxy relays (answers after 20 s).
for k in 1 2 3; do
    bg_start "hold$k" "$NS_C" curl -sS --max-time 60 -o /dev/null "http://$VIP/hold/20000/$k"
done
held() { (( $(nsx "$NS_B1" ss -Htn state established '( sport = :80 )' | wc -l) >= 3 )); }
wait_for 10 "backend 1 holding 3 connections" held
requests lc 300 | run lc 1
read -r l1 l2 l3 <<<"$(counts lc)"
((l1 == 0)) || fail "least connections: backend 1 held 3 connections but took $l1 of 300 requests ($l1 $l2 $l3)"
((l2 + l3 == 300 && l2 >= 140 && l3 >= 140)) || fail "least connections: backends 2 and 3 took $l2 and $l3 of 300, expected them in turn"
settle_logs lc "0 $l2 $l3" || fail "least connections: the backends logged $(logged_counts lc), the answers said 0 $l2 $l3"
log "least-connections: with 3 connections held on backend 1, 300 requests went $l1/$l2/$l3"
for k in 1 2 3; do bg_kill "hold$k" || true; done

# The hashes.
requests src 300 source | run src 20
keyed src 30
requests host 300 host | run host 20
keyed host 100
requests path 300 path | run path 20
keyed path 100
requests hdr 300 header | run hdr 20
keyed hdr 100
requests hdr-none 10 | sed 's#/who/hdr-none/#/who/hdr/#g' | run hdr-none 5
[[ "$(counts hdr-none | tr ' ' '\n' | grep -c '^10$')" == 1 ]] \
    || fail "header-hash without the header: 10 requests from one client went $(counts hdr-none), expected all to one backend"
log "header-hash without X-User: 10 requests from one client address, all to one backend ($(counts hdr-none))"
c=()
for n in 1 2 3; do c+=("$(logged "$n" src)"); done
(( c[0] + c[1] + c[2] == 300 )) || fail "source hash: the backends logged ${c[*]} requests, expected 300 in all"

# Consistent hashing: backend 3 drained in pool host; the hosts of 1 and 2 stay.
splicectl pools drain host "${m[2]}" >/dev/null || fail "pools drain host failed"
requests host 100 host | sed 's#"id": "#"id": "d#g' | run host-drained 20
python3 - "$TEST_TMP/host.json" "$TEST_TMP/host-drained.json" <<'PY' || fail "host-hash with backend 3 drained: $(cat "$TEST_TMP/moved.txt")"
import json, sys
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
stayed = moved = wrong = 0
for rid, who in after.items():
    was = before[rid[1:]]
    if who == "backend3":
        wrong += 1
    elif was == "backend3":
        moved += 1
    elif was == who:
        stayed += 1
    else:
        wrong += 1
open(sys.argv[1].replace("host.json", "moved.txt"), "w").write(f"stayed {stayed}, moved from backend 3 {moved}, wrongly moved or sent to the drained member {wrong}")
sys.exit(1 if wrong or moved == 0 else 0)
PY
log "host-hash, backend 3 drained: $(cat "$TEST_TMP/moved.txt")"

# Urgent data in a body the proxy relays: the bytes in line, none lost.
out=$(nsx "$NS_C" timeout 60 python3 "$NETNS_DIR/urgent.py" post "$VIP" 80 /hold/urgent 1 2>&1) \
    || fail "a relayed POST with urgent bytes in its body: $out"
log "a relayed POST with urgent bytes in its body: $out"

# ecn_count WHAT: the backends' packets counted by the nft rules commented WHAT, in all.
ecn_count() {
    local ns n sum=0
    for ns in "${BACKEND_NS[@]}"; do
        for n in $(nsx "$ns" nft list chain inet tsplice_ecn in | awk -v w="\"$1\"" '$0 ~ w { for (i = 1; i <= NF; i++) if ($i == "packets") print $(i + 1) }'); do
            sum=$((sum + n))
        done
    done
    echo "$sum"
}
# No backend was asked for ECN.
ecn_syns=$(ecn_count ecn-syns)
check "no backend got a SYN asking for ECN ($ecn_syns)" [ "$ecn_syns" -eq 0 ]
log "the balancer's SYNs to the backends, $(status_json | json_get balancer.ecnNotAsked) of them sent without the router's ECN request: none reached a backend with ECE"

# A client that asks for ECN (as Apple's do by default) sets it up with the proxy's socket; the
# backend's connection never does. Joined, its upload reaches the backend not ECN-capable:
# otherwise a router past the join would mark CE on packets whose receiver never echoes it, and
# the client would never slow down for it (before 2026-12-07 every data packet went on ECT).
nsx "$NS_C" sysctl -qw net.ipv4.tcp_ecn=1 || fail "cannot have the client ask for ECN"
head -c $((4 << 20)) /dev/urandom >"$TEST_TMP/up"
ect_before=$(ecn_count ect-in)
cleared_before=$(status_json | json_get balancer.ectCleared)
got=$(nsx "$NS_C" curl -sS --max-time 60 --data-binary "@$TEST_TMP/up" -H 'Content-Type: application/octet-stream' \
    "http://$VIP/up") || fail "a joined upload from a client asking for ECN failed"
[[ "$got" == "$(sha256_of "$TEST_TMP/up")" ]] || fail "a joined upload from a client asking for ECN: the backend got another body ($got)"
ect=$(( $(ecn_count ect-in) - ect_before ))
cleared=$(( $(status_json | json_get balancer.ectCleared) - cleared_before ))
check "a joined upload's ECN-capable packets: none reached the backend ECN-capable ($ect)" [ "$ect" -eq 0 ]
check "a joined upload from a client asking for ECN: its packets made not ECN-capable toward the backend ($cleared), so the client did set ECN up" [ "$cleared" -gt 0 ]
log "a 4 MiB upload joined from a client that set ECN up with the service: byte-exact at the backend, $cleared packets made not ECN-capable on the way, none ECN-capable at the backend"
