#!/usr/bin/env bash
# tcpsplice test: the balancer's keep-alive re-routing and FIN processing (seed 003: FIG. 14,
# "FIN propagated or processed"; Docs/balancer.md, "Keep-alive re-routing"). Client, router,
# three backends (HTTP/1.1 keep-alive on port 80; on port 8080 the same servers answer with
# "Connection: close" and close after every answer). Rules with --per-request decide each
# request of a connection on its own: a large response is joined for that response only (the
# engine carries it; the proxy's sockets are taken over in repair mode where the connections
# will stand at its end) and the flow comes back to the proxy when the client has it all; a
# small one is relayed. Checks, each on ONE client connection (Tests/netns/keepalive.py, which
# never reconnects and checks every body's SHA-256 and their order):
#   1. 20 requests by path prefix move between the three backends (/a/ -> 1, /b/ -> 2,
#      /c/ -> 3), each landing where its rule says (the backends' own logs), the large answers
#      joined and handed back (spliced's counters), X-Forwarded-For added to each (a new
#      sequence delta per join); no PAWS reject at the client or the backends;
#   1b. requests with a small body (POSTs of 100 to 12,000 bytes, whole before their response)
#      between GETs on one connection: each lands on its own rule's backend (a connection
#      joined for life at a POST would send the rest to its backend);
#   1c. chunked responses (Transfer-Encoding: chunked, chunks of 1 byte to 70,000, an
#      extension, a trailer) between others on one connection: their end found from the
#      framing (by the proxy, relayed; by the engine, joined from inside a chunk above the
#      join threshold), and the next request routed on its own (a connection joined for its
#      life at a chunked answer would send the rest to that backend);
#   1d. 8 answers of 1 MiB back to back from one backend, on the kept backend connection:
#      each joined and handed back, none given up (the windows given to the backend during a
#      join bounded by what the socket taking its connection back accepts);
#   1e. chunked responses with chunks of 1 and 1.5 MiB between others on one connection: each
#      joined from inside its first large chunk, the engine finding its end from the framing
#      and handing the flow back there (spliced's counters: every chunked join ended, none
#      lost), every body byte-exact and in order, each next request on its rule's backend;
#   2. 6 requests balanced round robin over the three backends: 2 on each, each backend's
#      two on one backend connection (parked while the requests went to the others);
#   3. FIN processing: 6 requests to backends that close after each answer: the client's
#      connection stays, every answer byte-exact, spread over the backends, the backends' FINs
#      taken by the proxy (spliced's counter);
#   4. FIN propagation (the rule's default): the backend's close ends the client's connection
#      after the first answer.
#   5. IPv6: one connection to the service's IPv6 address, 8 requests moving between two
#      backends reached over IPv6 by path, the large answers joined for one response and
#      handed back (the proxy's sockets taken over in repair mode, family 6), every body
#      byte-exact and in order, no PAWS reject.
#   6. The proxy restarted with a taken-over connection open: the new one binds the service
#      address at once.
#   7. The proxy killed (SIGKILL) while two keep-alive connections, read slowly, each have a
#      response joined for itself (a chunked one, the engine still following its framing; one
#      of known length, its return armed): the engine gives their returns up (spliced's
#      counter), the flows stay joined for their life, and each connection's next request,
#      which the rules would send to the other backend, is answered by the one it is joined
#      to (its log), byte-exact.
# Variant `impaired`: the same on links with 1% loss and 1% duplication both ways (impair_links,
# the client's and backend 1's links and the router's), where held-back requests, lost final
# ACKs and retransmitted FINs happen at the return; PAWS rejects are reported there, not held
# to 0 (the ingress duplication's copies can be rejected by the kernel itself: Docs/testing.md).
# KA_PROXY_DEBUG=1: the proxy logs at debug level, and step 1b's packets are captured (client,
# router lo) in the test's directory.
# variants: clean impaired
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
balancer_topology

WWW="$TEST_TMP/www"
for d in a b c rr z p; do mkdir -p "$WWW/$d"; done
for d in a b c rr z p; do
    head -c $((1 << 20)) /dev/urandom >"$WWW/$d/big"
    head -c 300000 /dev/urandom >"$WWW/$d/mid"
    head -c 3000 /dev/urandom >"$WWW/$d/small"
done
for i in 1 2 3; do
    ns=${BACKEND_NS[$((i - 1))]}
    bg_start "backend$i" "$ns" python3 "$NETNS_DIR/backend.py" "backend$i" "${BACKENDS[$((i - 1))]}" 80 "$WWW" keepalive
    bg_start "closing$i" "$ns" python3 "$NETNS_DIR/backend.py" "closing$i" "${BACKENDS[$((i - 1))]}" 8080 "$WWW" close
    wait_port "$ns" 80
    wait_port "$ns" 8080
done
VARIANT=${VARIANTS:-clean}
[[ "$VARIANT" == clean || "$VARIANT" == impaired ]] || fail "unknown variant '$VARIANT'"
[[ "$VARIANT" != impaired ]] || impair_links 0.01 0.01 0
# logged NAME PREFIX: requests for paths under PREFIX that backend NAME logged.
logged() { grep -c "^REQ $1 GET $2" "$TEST_TMP/$1.log" || true; }
logged_is() { (( $(logged "$1" "$2") == $3 )); }

# IPv6: a service address of its own; backends 1 and 2 answer on port 81 over IPv6 too.
VIP6=fd77:9::1
B2_IP6=fd77:12::2
ip -n "$NS_R" addr add "$VIP6/128" dev lo || fail "cannot put $VIP6 on the router's lo"
ip -n "$NS_B2" addr add "$B2_IP6/64" dev eth0 nodad || fail "cannot give backend 2 an IPv6 address"
ip -n "$NS_R" addr add fd77:12::1/64 dev rb2 nodad || fail "cannot give the router an IPv6 address toward backend 2"
ip -n "$NS_B2" -6 route add default via fd77:12::1 || fail "cannot route backend 2's IPv6"
for i in 1 2; do
    bg_start "backend6-$i" "${BACKEND_NS[$((i - 1))]}" python3 "$NETNS_DIR/backend.py" "backend6-$i" "::" 81 "$WWW" keepalive
    wait_port "${BACKEND_NS[$((i - 1))]}" 81
done

rules_install "$NS_R" --ports 80 --queues 0 --service "$VIP:80,[$VIP6]:80"
on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
spliced_start --queue 0
proxy_start splice-proxy --service "$VIP:80=web" --service "[$VIP6]:80=p61" --forwarded-for ${KA_PROXY_DEBUG:+--log-level debug}

b=("${BACKENDS[0]}" "${BACKENDS[1]}" "${BACKENDS[2]}")
splicectl pools add web --method round-robin --backend "${b[0]}:80" --backend "${b[1]}:80" --backend "${b[2]}:80" >/dev/null \
    || fail "pools add web failed"
splicectl pools add closing --method round-robin --backend "${b[0]}:8080" --backend "${b[1]}:8080" --backend "${b[2]}:8080" >/dev/null \
    || fail "pools add closing failed"
for i in 1 2 3; do
    splicectl pools add "p$i" --backend "${b[$((i - 1))]}:80" >/dev/null || fail "pools add p$i failed"
done
splicectl rules add --path-prefix /a/ --action splice --pool p1 --per-request >/dev/null || fail "rules add /a/ failed"
splicectl rules add --path-prefix /b/ --action splice --pool p2 --per-request >/dev/null || fail "rules add /b/ failed"
splicectl rules add --path-prefix /c/ --action splice --pool p3 --per-request >/dev/null || fail "rules add /c/ failed"
splicectl rules add --path-prefix /rr/ --action splice --pool web --per-request >/dev/null || fail "rules add /rr/ failed"
splicectl rules add --path-prefix /chunked/a/ --action splice --pool p1 --per-request >/dev/null || fail "rules add /chunked/a/ failed"
splicectl rules add --path-prefix /chunked/b/ --action splice --pool p2 --per-request >/dev/null || fail "rules add /chunked/b/ failed"
splicectl rules add --path-prefix /bigchunks/a/ --action splice --pool p1 --per-request >/dev/null || fail "rules add /bigchunks/a/ failed"
splicectl rules add --path-prefix /bigchunks/b/ --action splice --pool p2 --per-request >/dev/null || fail "rules add /bigchunks/b/ failed"
splicectl rules add --path-prefix /z/ --action splice --pool closing --per-request --fin process >/dev/null \
    || fail "rules add /z/ failed"
splicectl rules add --path-prefix /p/ --action splice --pool closing --per-request >/dev/null || fail "rules add /p/ failed"
splicectl pools add p61 --backend "[$SERVER_IP6]:81" >/dev/null || fail "pools add p61 failed"
splicectl pools add p62 --backend "[$B2_IP6]:81" >/dev/null || fail "pools add p62 failed"
splicectl rules add --servers "$VIP6/128" --path-prefix /a/ --action splice --pool p61 --per-request --position 1 >/dev/null \
    || fail "rules add (IPv6) /a/ failed"
splicectl rules add --servers "$VIP6/128" --path-prefix /b/ --action splice --pool p62 --per-request --position 2 >/dev/null \
    || fail "rules add (IPv6) /b/ failed"
splicectl rules default --action splice >/dev/null || fail "rules default failed"
log "rules:"$'\n'"$(splicectl rules)"

paws_b() { local i s=0; for i in 1 2 3; do s=$((s + $(ns_counter "${BACKEND_NS[$((i - 1))]}" TcpExtPAWSEstab))); done; echo "$s"; }
counter() { status_json | json_get "balancer.$1"; }
settle() { local d=$((SECONDS + 5)); until "$@"; do ((SECONDS < d)) || return 1; sleep 0.1; done; }
keepalive() { nsx "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP" 80 "$WWW" "$@" 2>&1; }  # (its failure says why on stderr)

# 1. One connection, 20 requests moving between the backends by path.
paths=()
for k in $(seq 1 20); do
    d=$(printf 'a\nb\nc\n' | sed -n "$(( (k - 1) % 3 + 1 ))p")
    f=$(printf 'big\nsmall\nmid\nbig\n' | sed -n "$(( (k - 1) % 4 + 1 ))p")
    paths+=("/$d/$f")
done
joins=0
for p in "${paths[@]}"; do [[ $p == */small ]] || joins=$((joins + 1)); done
returned0=$(counter returned)
joined0=$(counter joined)
cancelled0=$(counter cancelled)
paws_c0=$(ns_counter "$NS_C" TcpExtPAWSEstab)
paws_b0=$(paws_b)
out=$(keepalive "${paths[@]}") || fail "the keep-alive connection of 20 requests failed: $out"
[[ "$(json_get answers <<<"$out")" == 20 ]] || fail "expected 20 answers on one connection: $out"
for i in 1 2 3; do
    d=$(printf 'a\nb\nc\n' | sed -n "${i}p")
    want=0
    for p in "${paths[@]}"; do [[ $p == /$d/* ]] && want=$((want + 1)); done
    settle logged_is "backend$i" "/$d/" "$want" \
        || fail "backend $i logged $(logged "backend$i" "/$d/") requests for /$d/, expected $want"
    for other in 1 2 3; do
        [[ $other == "$i" ]] && continue
        (( $(logged "backend$other" "/$d/") == 0 )) || fail "backend $other answered a /$d/ request (rule: backend $i)"
    done
done
# (The last join comes back when the client's FIN or last acknowledgement reaches the proxy's
# socket, which may be just after the client is done.)
# Every large answer was joined, or its join given up because the proxy had read it whole
# meanwhile (then it relayed it); every join came back to the proxy.
returned_is() { (( $(counter returned) - returned0 == $(counter joined) - joined0 )); }
settle returned_is || true
returned=$(( $(counter returned) - returned0 ))
joined=$(( $(counter joined) - joined0 ))
cancelled=$(( $(counter cancelled) - cancelled0 ))
((joined + cancelled == joins)) || fail "$joins answers larger than the join threshold: $joined joined, $cancelled joins given up"
((returned == joined)) || fail "$joined joins for one answer, but $returned came back to the proxy"
((joined > 0)) || fail "no answer was joined"
paws_c=$(( $(ns_counter "$NS_C" TcpExtPAWSEstab) - paws_c0 ))
paws_bk=$(( $(paws_b) - paws_b0 ))
((paws_c == 0 && paws_bk == 0)) || [[ "$VARIANT" == impaired ]] || fail "PAWS rejects: client +$paws_c, backends +$paws_bk"
log "one connection, 20 requests over 3 backends by path: all byte-exact and in order; $joins large answers: $joined joined and handed back ($returned), $cancelled read whole by the proxy before their join; the small ones relayed; PAWS rejects client +$paws_c, backends +$paws_bk; requests held back from the backend while joined: $(counter heldBack)"

# 1b. Requests with a body: a small body whole before the response keeps the connection
# routed per request (the POSTs' answers, the body's SHA-256, are relayed; the GETs joined).
# Every request must land on its own rule's backend: a connection joined for its life at the
# first POST would take the rest to backend 1.
posted() { grep -c "^REQ $1 POST $2 " "$TEST_TMP/$1.log" || true; }
got() { grep -c "^REQ $1 GET $2 " "$TEST_TMP/$1.log" || true; }
[[ -z "${KA_PROXY_DEBUG:-}" ]] || bg_start pcap-1b "$NS_C" tcpdump -i eth0 -n --immediate-mode -s 128 -U -w "$TEST_TMP/1b.pcap" "tcp port 80"
[[ -z "${KA_PROXY_DEBUG:-}" ]] || bg_start pcap-1b-r "$NS_R" tcpdump -i lo -n --immediate-mode -s 128 -U -w "$TEST_TMP/1b-lo.pcap" "tcp port 80"
sleep 0.3
b2big0=$(got backend2 /b/big)
b1big0=$(got backend1 /a/big)
out=$(keepalive POST:3000:/a/post /b/big POST:12000:/c/post /a/big POST:100:/b/post) \
    || fail "requests with a body on one keep-alive connection failed: $out"
[[ "$(json_get answers <<<"$out")" == 5 ]] || fail "expected 5 answers on one connection: $out"
landed() { (( $(posted backend1 /a/post) == 1 && $(posted backend3 /c/post) == 1 && $(posted backend2 /b/post) == 1
              && $(got backend2 /b/big) == b2big0 + 1 && $(got backend1 /a/big) == b1big0 + 1 )); }
settle landed || fail "requests with a body: not each on its rule's backend (POST /a/ on 1: $(posted backend1 /a/post), /c/ on 3: $(posted backend3 /c/post), /b/ on 2: $(posted backend2 /b/post); GET /b/big on 2: +$(( $(got backend2 /b/big) - b2big0 )), /a/big on 1: +$(( $(got backend1 /a/big) - b1big0 )))"
log "requests with a body on one connection: 3 POSTs (3000, 12000 and 100 bytes) and 2 GETs, each on its rule's backend, every answer byte-exact"

# 1c. Chunked responses between others on one connection: each next request on its own
# rule's backend; the large Content-Length answers joined as before. A chunked answer is
# relayed up to a chunk with more than the join threshold still to come (70,000 bytes, in
# /big and /mid, less what the proxy's socket holds), then joined from there unless the rest
# of the chunk came while the join waited (cancelled; the next such chunk is tried).
chunked_paths=(/chunked/a/big /b/big /chunked/b/mid /a/small /chunked/a/small /chunked/b/big /a/mid)
declare -A ch0
for i in 1 2; do
    for pre in /chunked/a/ /chunked/b/ /a/ /b/; do ch0[$i$pre]=$(logged "backend$i" "$pre"); done
done
joined0=$(counter joined)
cancelled0=$(counter cancelled)
chj0=$(counter chunkedJoins)
che0=$(counter chunkedEnds)
chl0=$(counter chunkedLost)
out=$(keepalive "${chunked_paths[@]}") || fail "the keep-alive connection with chunked answers failed: $out"
[[ "$(json_get answers <<<"$out")" == ${#chunked_paths[@]} ]] || fail "expected ${#chunked_paths[@]} answers on one connection: $out"
# Where each landed: /chunked/a/ and /a/ on backend 1, /chunked/b/ and /b/ on backend 2.
ch_landed() {
    (( $(logged backend1 /chunked/a/) - ch0[1/chunked/a/] == 2 && $(logged backend2 /chunked/b/) - ch0[2/chunked/b/] == 2
       && $(logged backend1 /a/) - ch0[1/a/] == 2 && $(logged backend2 /b/) - ch0[2/b/] == 1 ))
}
settle ch_landed || fail "chunked step: backend 1 logged $(( $(logged backend1 /chunked/a/) - ch0[1/chunked/a/] )) /chunked/a/ and $(( $(logged backend1 /a/) - ch0[1/a/] )) /a/, backend 2 $(( $(logged backend2 /chunked/b/) - ch0[2/chunked/b/] )) /chunked/b/ and $(( $(logged backend2 /b/) - ch0[2/b/] )) /b/ (expected 2, 2, 2, 1)"
(( $(logged backend2 /chunked/a/) + $(logged backend1 /chunked/b/) == 0 )) || fail "a chunked request landed on the other rule's backend"
ch_joined=$(( $(counter joined) - joined0 + $(counter cancelled) - cancelled0 ))
chj=$(( $(counter chunkedJoins) - chj0 ))
((ch_joined >= 2 + chj)) \
    || fail "chunked step: $ch_joined joins asked for, $chj of them chunked; expected 2 (/b/big and /a/mid) besides those"
ch_ended() { (( $(counter chunkedEnds) - che0 == chj )); }
settle ch_ended || fail "chunked step: $chj chunked joins, $(( $(counter chunkedEnds) - che0 )) ends found by the engine"
(( $(counter chunkedLost) == chl0 )) || fail "chunked step: the engine lost the framing of $(( $(counter chunkedLost) - chl0 )) chunked answers"
log "chunked answers: ${#chunked_paths[@]} requests on one connection, the 4 chunked answers delimited by their framing ($chj joined from inside a chunk, their end found by the engine; the rest relayed) and each next request routed on its own, all byte-exact and in order"

# 1d. Large answers back to back from one backend, on the kept backend connection: each joined
# and handed back, none given up. After a return the backend still holds the window the
# client's (translated) acknowledgements gave it, megabytes once the client's buffer grew;
# without the bound on it (the join's returnWindow) its next answer's first flight overran the
# socket that took its connection over, and came through one segment at a time behind the next
# join's zero window: the joins were given up after the drain bound (2 s), the answers relayed.
joined0=$(counter joined)
cancelled0=$(counter cancelled)
returned0=$(counter returned)
waits0=$(counter notYetDrained)
retrans0=$(ns_counter "${BACKEND_NS[0]}" TcpRetransSegs)
dup0=$(ns_counter "${BACKEND_NS[0]}" TcpExtTCPDSACKRecvSegs)
b2b=(/a/big /a/big /a/big /a/big /a/big /a/big /a/big /a/big)
out=$(keepalive "${b2b[@]}") || fail "${#b2b[@]} large answers from one backend on one connection failed: $out"
[[ "$(json_get answers <<<"$out")" == ${#b2b[@]} ]] || fail "expected ${#b2b[@]} answers on one connection: $out"
b2b_returned() { (( $(counter returned) - returned0 == ${#b2b[@]} )); }
settle b2b_returned || true
joined=$(( $(counter joined) - joined0 ))
cancelled=$(( $(counter cancelled) - cancelled0 ))
returned=$(( $(counter returned) - returned0 ))
waits=$(( $(counter notYetDrained) - waits0 ))
retrans=$(( $(ns_counter "${BACKEND_NS[0]}" TcpRetransSegs) - retrans0 ))
dup=$(( $(ns_counter "${BACKEND_NS[0]}" TcpExtTCPDSACKRecvSegs) - dup0 ))
b2b_msg="${#b2b[@]} answers of 1 MiB from backend 1 on one connection: $joined joined, $cancelled given up, $returned handed back; the engine asked to wait for the drain $waits times; backend 1 sent $retrans segments again, $dup of them reported received twice (D-SACK)"
if [[ "$VARIANT" == clean ]]; then
    ((joined == ${#b2b[@]} && cancelled == 0 && returned == joined)) || fail "$b2b_msg (expected every one joined and handed back)"
    # A segment dropped on the way is sent again and received once; one sent again for
    # nothing is reported received twice. Under CPU load the veth pairs reorder now and
    # then (the backend sends from two CPUs, each with its own backlog: seen in captures at
    # the router's ingress, before the queue), and the backend takes the reordering for a
    # loss and sends a flight again that the receiver already had: not a drop. (On a
    # lossless link: a tail loss probe or two, never a flight.)
    ((retrans - dup <= 4)) || fail "$b2b_msg: its segments were dropped on the way (a flight past the window of the proxy's socket)"
fi
log "$b2b_msg; all byte-exact and in order"

# 1e. Chunked answers with chunks of 1 MiB and 1.5 MiB: joined from inside the first large
# chunk (whatever the link, most of it is still to come when the join is made), the engine
# follows the framing (the 300-byte chunk between, the trailer) to the end and the flow comes
# back there for the next request, which may go to another backend.
big_paths=(/bigchunks/a/huge /b/small /bigchunks/b/huge /bigchunks/a/huge /a/big)
for d in a b; do head -c $((5 << 20)) /dev/urandom >"$WWW/$d/huge"; done
b1h0=$(logged backend1 /bigchunks/a/huge)
b2h0=$(logged backend2 /bigchunks/b/huge)
chj0=$(counter chunkedJoins)
che0=$(counter chunkedEnds)
chl0=$(counter chunkedLost)
returned0=$(counter returned)
out=$(keepalive "${big_paths[@]}") || fail "the keep-alive connection with large chunked answers failed: $out"
[[ "$(json_get answers <<<"$out")" == ${#big_paths[@]} ]] || fail "expected ${#big_paths[@]} answers on one connection: $out"
big_landed() { (( $(logged backend1 /bigchunks/a/huge) - b1h0 == 2 && $(logged backend2 /bigchunks/b/huge) - b2h0 == 1 )); }
settle big_landed || fail "large chunked step: backend 1 logged $(( $(logged backend1 /bigchunks/a/huge) - b1h0 )) of 2, backend 2 $(( $(logged backend2 /bigchunks/b/huge) - b2h0 )) of 1"
# (One join per answer at most, and at least one in all: a join whose chunk came whole while
# it waited is cancelled and the next large chunk tried; an answer whose every large chunk came
# so is relayed, unjoined. Counted on 2026-12-05: 3 of 3 joined in each of 6 runs of this test
# alone on the 2-core machine. Fewer is right when a chunk comes whole while its join waits,
# which a loaded machine makes likelier: hence 1 to 3.)
chj=$(( $(counter chunkedJoins) - chj0 ))
((chj >= 1 && chj <= 3)) || fail "large chunked step: $chj chunked joins, expected one per chunked answer (3)"
big_ended() { (( $(counter chunkedEnds) - che0 == chj )); }
settle big_ended || fail "large chunked step: the engine found $(( $(counter chunkedEnds) - che0 )) of $chj chunked answers' ends (lost: $(( $(counter chunkedLost) - chl0 )))"
(( $(counter chunkedLost) == chl0 )) || fail "large chunked step: the engine lost the framing of $(( $(counter chunkedLost) - chl0 )) answers"
(( $(counter returned) - returned0 >= chj + 1 )) || fail "large chunked step: $(( $(counter returned) - returned0 )) joins handed back, expected at least $((chj + 1)) ($chj chunked, /a/big)"
log "large chunked answers: ${#big_paths[@]} requests on one connection, 3 chunked answers of 5 MiB, $chj of them joined from inside a chunk and handed back where the engine found their end ($(counter chunkGaps) segments dropped past a hole so far), all byte-exact and in order, each on its rule's backend"

# 2. Round robin per request on one connection.
for i in 1 2 3; do rr0[$i]=$(logged "backend$i" /rr/); done
out=$(keepalive /rr/big /rr/mid /rr/big /rr/big /rr/mid /rr/big) || fail "the round-robin keep-alive connection failed: $out"
for i in 1 2 3; do
    settle logged_is "backend$i" /rr/ $((rr0[i] + 2)) \
        || fail "round robin per request: backend $i logged $(( $(logged "backend$i" /rr/) - rr0[i] )) of 6, expected 2"
done
# Each backend's two requests came on one backend connection: the proxy parks a backend
# connection while the client's requests go to other members and takes it again (the port
# the backend logged; without parking, a connection per request).
for i in 1 2 3; do
    ports=$(grep "^REQ backend$i GET /rr/" "$TEST_TMP/backend$i.log" | tail -2 | sed 's/.* port=//' | sort -u | tr '\n' ' ')
    [[ $(wc -w <<<"$ports") == 1 ]] || fail "round robin per request: backend $i got its 2 requests on connections from ports ${ports}(parked connections not taken again)"
done
log "round robin per request: 6 requests on one connection, 2 on each backend, each backend's on one backend connection (parked between)"

# 3. FIN processing: the backends close after every answer; the client's connection stays.
fins0=$(counter finsProcessed)
out=$(keepalive /z/big /z/big /z/mid /z/big /z/small /z/big) || fail "FIN processing: the keep-alive connection failed: $out"
[[ "$(json_get answers <<<"$out")" == 6 ]] || fail "FIN processing: expected 6 answers on one connection: $out"
for i in 1 2 3; do
    settle logged_is "closing$i" /z/ 2 \
        || fail "FIN processing: backend $i (port 8080) logged $(logged "closing$i" /z/) of 6 requests, expected 2"
done
fins=$(( $(counter finsProcessed) - fins0 ))
((fins > 0)) || fail "FIN processing: no backend FIN was kept from the client (finsProcessed +0)"
log "FIN processing: 6 answers from backends that close after each, one client connection, byte-exact; backend FINs kept for the proxy: $fins"

# 4. FIN propagation: the client's connection ends with the backend's.
out=$(keepalive /p/big /p/big --expect-close 1) || fail "FIN propagation: $out"
log "FIN propagation: the client's connection closed after the first answer, as the backend's did"

# 5. IPv6: one connection, 8 requests moving between backends 1 and 2 by path.
paths6=(/a/big /b/mid /a/small /b/big /a/mid /b/small /a/big /b/big)
joins6=0
for p in "${paths6[@]}"; do [[ $p == */small ]] || joins6=$((joins6 + 1)); done
returned0=$(counter returned)
joined0=$(counter joined)
cancelled0=$(counter cancelled)
paws_c0=$(ns_counter "$NS_C" TcpExtPAWSEstab)
paws_b0=$(paws_b)
out=$(nsx "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP6" 80 "$WWW" "${paths6[@]}" 2>&1) \
    || fail "the IPv6 keep-alive connection of 8 requests failed: $out"
[[ "$(json_get answers <<<"$out")" == 8 ]] || fail "expected 8 answers on one IPv6 connection: $out"
logged6() { grep -c "^REQ backend6-$1 GET $2" "$TEST_TMP/backend6-$1.log" || true; }
logged6_is() { (( $(logged6 "$1" "$2") == $3 )); }
settle logged6_is 1 /a/ 4 || fail "backend 1 (IPv6) logged $(logged6 1 /a/) requests for /a/, expected 4"
settle logged6_is 2 /b/ 4 || fail "backend 2 (IPv6) logged $(logged6 2 /b/) requests for /b/, expected 4"
(( $(logged6 1 /b/) + $(logged6 2 /a/) == 0 )) || fail "an IPv6 request landed on the other rule's backend"
settle returned_is || true
returned=$(( $(counter returned) - returned0 ))
joined=$(( $(counter joined) - joined0 ))
cancelled=$(( $(counter cancelled) - cancelled0 ))
((joined + cancelled == joins6)) || fail "IPv6: $joins6 answers larger than the join threshold: $joined joined, $cancelled joins given up"
((returned == joined && joined > 0)) || fail "IPv6: $joined joins for one answer, $returned came back to the proxy"
paws_c=$(( $(ns_counter "$NS_C" TcpExtPAWSEstab) - paws_c0 ))
paws_bk=$(( $(paws_b) - paws_b0 ))
((paws_c == 0 && paws_bk == 0)) || [[ "$VARIANT" == impaired ]] || fail "IPv6: PAWS rejects: client +$paws_c, backends +$paws_bk"
log "IPv6: one connection, 8 requests over 2 backends by path: all byte-exact and in order; $joins6 large answers: $joined joined and handed back ($returned), $cancelled read whole first; PAWS rejects client +$paws_c, backends +$paws_bk"
log "balancer counters: $(status_json | json_get 'balancer?none')"
[[ "$VARIANT" != impaired ]] || log "impairments: $(impair_counts | tr '\n' ';')"

# 6. The proxy restarted while a connection it took back after a joined answer is open (the
# client idle on it): the old proxy's sockets close with it, the taken-over one (bound to the
# service address) first, so that it lingers (FIN_WAIT, TIME_WAIT); the new proxy must bind the
# service address at once. (Out of repair mode a socket loses SO_REUSEADDR: that one kept the
# address from any new bind, "Address already in use", while it lingered.)
returned0=$(counter returned)
nsx "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP" 80 "$WWW" /a/big --hold 20 >"$TEST_TMP/idle.out" 2>&1 &
idle=$!
on_cleanup "kill $idle 2>/dev/null || true"
returned_more() { (( $(counter returned) > returned0 )) && grep -q '"answers": 1' "$TEST_TMP/idle.out"; }
settle returned_more || fail "the idle client's answer was not joined and handed back: $(cat "$TEST_TMP/idle.out"); returned $(counter returned) (was $returned0)"
bg_kill splice-proxy TERM || true  # (its status: killed by the signal)
! bg_alive splice-proxy || fail "splice-proxy did not stop on SIGTERM"
lingering=$(nsx "$NS_R" ss -Htan "( sport = :80 )" | awk -v a="$VIP:80" '$4 == a { print $1 }' | sort | uniq -c | tr -s ' \n' ' ')
# (Without a lingering socket of the old proxy the step would prove nothing.)
[[ -n "${lingering// /}" ]] || fail "no socket of the stopped proxy lingers on $VIP:80: the restart step has nothing to prove"
proxy_start splice-proxy-restarted --service "$VIP:80=web" --service "[$VIP6]:80=p61" --forwarded-for
log "the proxy restarted with a taken-over connection open: its sockets on $VIP:80 left lingering (${lingering}), the new proxy bound the service address at once"
kill "$idle" 2>/dev/null || true
wait "$idle" 2>/dev/null || true

# 7. The proxy killed while responses are joined for themselves: their returns would hand the
# flows to sockets that died with it (the client's next request reset); the engine gives them
# up and the flows stay joined to their backends for their life.
given0=$(counter returnsGivenUp)
chj0=$(counter chunkedJoins)
joined0=$(counter joined)
b1s0=$(logged backend1 /b/small)
b2s0=$(logged backend2 /a/small)
nsx "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP" 80 "$WWW" /bigchunks/a/huge /b/small --rate 2000000 \
    >"$TEST_TMP/dead-chunked.out" 2>&1 &
k1=$!
nsx "$NS_C" python3 "$NETNS_DIR/keepalive.py" "$VIP" 80 "$WWW" /b/huge /a/small --rate 2000000 \
    >"$TEST_TMP/dead-length.out" 2>&1 &
k2=$!
on_cleanup "kill $k1 $k2 2>/dev/null || true"
both_joined() { (( $(counter chunkedJoins) > chj0 && $(counter joined) - joined0 >= 2 )); }
settle both_joined || fail "proxy death step: the two slow answers were not both joined (chunked joins +$(( $(counter chunkedJoins) - chj0 )), joins +$(( $(counter joined) - joined0 )))"
bg_kill splice-proxy-restarted KILL >/dev/null 2>&1 || true
rc1=0; wait "$k1" || rc1=$?
rc2=0; wait "$k2" || rc2=$?
((rc1 == 0)) || fail "proxy death step: the chunked answer's connection failed: $(cat "$TEST_TMP/dead-chunked.out")"
((rc2 == 0)) || fail "proxy death step: the other connection failed: $(cat "$TEST_TMP/dead-length.out")"
given=$(( $(counter returnsGivenUp) - given0 ))
((given == 2)) || fail "proxy death step: spliced gave up $given returns, expected 2"
went_on() { (( $(logged backend1 /b/small) - b1s0 == 1 && $(logged backend2 /a/small) - b2s0 == 1 )); }
settle went_on || fail "proxy death step: the second requests did not go on to the joined backends (backend 1 logged /b/small +$(( $(logged backend1 /b/small) - b1s0 )), backend 2 /a/small +$(( $(logged backend2 /a/small) - b2s0 )))"
log "proxy killed with 2 answers joined for themselves (a chunked one, one of known length): $given returns given up, each connection's next request answered by the backend it was joined to, byte-exact"
