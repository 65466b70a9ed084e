#!/usr/bin/env bash
# tcpsplice test: spliced's life as a foreground daemon in the router.
# - bad arguments (a bad --queue, a bad --max-flows, a queue given to both
#   --queue and --proxy-queue) exit non-zero with a message naming the option;
# - started with --queue 0 --queue 1 --pidfile: writes its pid, binds both
#   queues (kernel's /proc/net/netfilter/nfnetlink_queue), and status lists them;
# - traffic balanced over the two queues (--queue-balance 0:1) arrives intact;
# - SIGTERM: exits 0 within 10 s, the queues are unbound, the control socket
#   and pidfile are gone, and traffic goes on (fail-open).
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPLICED=$(need_bin spliced)
need_bin splicectl >/dev/null
topo_create

# bad_args REGEX ARGS...
bad_args() {
    local re=$1 out rc=0
    shift
    out=$(nsx "$NS_R" timeout 10 "$SPLICED" "$@" --control-socket "$TEST_TMP/bad.sock" 2>&1) || rc=$?
    [[ $rc -ne 0 && $rc -ne 124 ]] || fail "spliced $* exited $rc, expected an argument error"
    grep -Eiq -- "$re" <<<"$out" || fail "spliced $*: message does not match /$re/: $out"
    log "spliced $*: exit $rc: $(head -n 1 <<<"$out")"
}
bad_args "queue" --queue x
bad_args "max-flows" --queue 0 --max-flows 0
bad_args "both --queue and --proxy-queue" --queue 0 --proxy-queue 0
bad_args "frobnicate|unknown|unexpected" --frobnicate
[[ $(queue_bound_count "$NS_R") -eq 0 ]] || fail "a failed spliced left a queue bound"

rules_install "$NS_R" --ports 5001 --queues 0:1
spliced_start --queue 0 --queue 1 --max-flows 1024
pid=$(bg_pid spliced)
[[ -s "$TEST_TMP/spliced.pid" ]] || fail "no pidfile written"
[[ $(tr -d ' \n' <"$TEST_TMP/spliced.pid") == "$pid" ]] || fail "pidfile says $(cat "$TEST_TMP/spliced.pid"), spliced is $pid"
[[ $(queue_bound_count "$NS_R") -eq 2 ]] || fail "expected 2 bound queues, kernel shows: $(nsx "$NS_R" cat /proc/net/netfilter/nfnetlink_queue)"
status_json | json_get 'sorted(q["number"] for q in d["queues"])' | grep -qx '\[0, 1\]' \
    || fail "status does not list queues 0 and 1: $(status_json)"
log "spliced $pid: pidfile ok, queues 0 and 1 bound"

DATA="$TEST_TMP/data"
make_random_file "$DATA" 16
WANT=$(sha256_of "$DATA")
bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DATA"
wait_port "$NS_S" 5001
for i in 1 2 3 4; do
    nsx "$NS_C" timeout 60 python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$TEST_TMP/got$i" >/dev/null \
        || fail "download $i through two queues failed"
    [[ $(sha256_of "$TEST_TMP/got$i") == "$WANT" ]] || fail "download $i through two queues differs"
done
total=$(queue_packets_total)
((total > 0)) || fail "spliced saw no packets on its two queues"
log "4 downloads through queues 0:1 intact; spliced saw $total packets"

rc=0
bg_kill spliced TERM 10 || rc=$?
[[ $rc -ne 124 ]] || fail "spliced still running 10 s after SIGTERM"
[[ $rc -eq 0 ]] || fail "spliced exited with status $rc on SIGTERM, expected 0"
[[ $(queue_bound_count "$NS_R") -eq 0 ]] || fail "queues still bound after spliced exited"
[[ ! -e "$CTL_SOCK" ]] || fail "control socket $CTL_SOCK left behind after a clean exit"
[[ ! -e "$TEST_TMP/spliced.pid" ]] || fail "pidfile left behind after a clean exit"
log "SIGTERM: clean exit, queues unbound, socket and pidfile removed"
nsx "$NS_C" timeout 60 python3 "$XFER" fetch --host "$SERVER_IP" --port 5001 --out "$TEST_TMP/after" >/dev/null \
    || fail "download after spliced exited failed (fail-open)"
[[ $(sha256_of "$TEST_TMP/after") == "$WANT" ]] || fail "download after spliced exited differs"
log "traffic goes on without the engine"
log "PASS"
