#!/usr/bin/env bash
# tcpsplice test: a crowd of 2,000 concurrent short HTTP downloads, each spliced after its
# request, every one byte-exact (seed 003 under a crowd).
#
# nginx in the server namespace serves a 64 KiB file; crowd.py in the client starts
# CROWD_N (2,000) connections at once, each downloading it once (Connection: close), and
# checks every body's SHA-256. In one run, one after the other:
#   1  bypass: the rules and spliced, no proxy registered (the reference for the time)
#   2  spliced: splice-proxy registered with the rule "GET -> splice", the engine reading each
#      request (the default): every connection is spliced from its request by the engine,
#      the proxy never engaged
#   3  spliced-proxy: the same rule, the proxy reading each request (request reader `proxy`):
#      it decides and steps out; every connection is counted decided (splice) and spliced
#      (drained, or fallen back: its sender resends what the proxy held; both lose nothing)
#   4  resilient: the same proxy with the rule removed (default: proxy), for comparison
# The times are printed side by side with their ratio to bypass, and the packets the engine
# saw per download, never asserted.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${CROWD_N:-2000}
BYTES=${CROWD_BODY_BYTES:-65536}

topo_create
for ns in "$NS_C" "$NS_R" "$NS_S"; do load_sysctls "$ns"; done
crowd_prepare "$BYTES"
nginx_start "$NS_S" "$XF_DOWN_PORT"
resilient_start

declare -A PACKETS
crowd() {
    local p0 p1
    p0=$(status_json | json_get packets.total)
    crowd_run "$1" "$SERVER_IP" "$XF_DOWN_PORT" "$N" --timeout 60 --deadline 300 \
        || fail "crowd $1: $(cat "$TEST_TMP/crowd-$1.out"); first failures: $(head -n 5 "$TEST_TMP/crowd-$1.failed" | tr '\n' ' ')"
    p1=$(status_json | json_get packets.total)
    PACKETS[$1]=$(((p1 - p0) / N))
}
splices() { status_json | json_get splices; }

crowd bypass

proxy_start
splicectl rules add --method GET --action splice --name gets >/dev/null || fail "splicectl rules add failed"
s0=$(splices)
crowd spliced
s1=$(splices)
d() { echo $(($(json_get "$1" <<<"$s1") - $(json_get "$1" <<<"$s0"))); }
at_request=$(d decidedAtRequest) read=$(d requestsRead) to_proxy=$(d requestsToProxy)
report "spliced crowd, the engine reading: $read requests read, $at_request spliced from the request, $to_proxy handed to the proxy, $(d decidedSplice) decided by the proxy"
((at_request == N)) || fail "$at_request of $N connections were spliced by the engine from their request (to the proxy: $to_proxy)"
(($(d decidedSplice) == 0)) || fail "the proxy decided $(d decidedSplice) connections the engine should have spliced"
# Their FINs skipped the queue: the table learnt each flow's end from the rules' log (NFLOG).
still_open() { flows_json | flowcheck count --mode spliced --state ESTABLISHED; }
none_open() { [[ $(still_open) -eq 0 ]]; }
for _ in $(seq 100); do none_open && break; sleep 0.1; done
none_open || fail "$(still_open) spliced flows still ESTABLISHED in the table 10 s after the crowd ended"
s1=$(splices)
report "spliced crowd: $(d finsLogged) FINs seen from the rules' log (queued after the splice: $(d packetsAfterSplice) packets)"
(($(d finsLogged) >= N)) || fail "only $(d finsLogged) FINs of $N spliced connections reached the table through the log"

splicectl rules default --request-reader proxy >/dev/null || fail "splicectl rules default --request-reader proxy failed"
s0=$(splices)
crowd spliced-proxy
s1=$(splices)
log "status.splices before: $s0"
log "status.splices after:  $s1"
decided=$(d decidedSplice) drained=$(d drained) fell=$(d fellBack) failed=$(d failed) cancelled=$(d cancelled) refused=$(d refused)
report "spliced crowd, the proxy reading: $decided decided splice, $drained spliced drained, $fell fell back, $cancelled cancelled (ended first), $failed failed, $refused refused"
((decided == N)) || fail "$decided of $N connections were decided splice by the rule"
((drained + fell + cancelled == N)) || fail "only $((drained + fell + cancelled)) of $N splices ended (drained $drained, fell back $fell, cancelled $cancelled)"
((drained + fell >= N * 9 / 10)) || fail "only $((drained + fell)) of $N connections were spliced"

rule=$(splicectl rules --json | json_get 'rules.0.id')
splicectl rules remove "$rule" >/dev/null || fail "splicectl rules remove failed"
crowd resilient

b=$(crowd_field bypass seconds)
for run in bypass spliced spliced-proxy resilient; do
    s=$(crowd_field "$run" seconds)
    report "$run: $N downloads of $CROWD_BYTES bytes in $s s ($(awk -v s="$s" -v b="$b" 'BEGIN { printf "%.2f", s / b }')x bypass), first byte $(crowd_field "$run" first_byte_ms.p50) ms p50, total $(crowd_field "$run" total_ms.p99) ms p99; the engine saw ${PACKETS[$run]} packets per download"
done
log "PASS: $N concurrent downloads byte-exact, each spliced after its request"
