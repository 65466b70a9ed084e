#!/usr/bin/env bash
# tcpsplice test: spliced's life as a foreground daemon in the router.
# - bad arguments (a bad --queue, a bad --max-flows, a queue given to both
#   --queue and --proxy-queue) exit non-zero with a message naming the option;
#   negative numbers, bad --proxy-ports lists (empty, an empty element, 0, past
#   65535), a bad prefix, a control socket path longer than sun_path and a rules file
#   it cannot use (unreadable, not a rule set, a bad rule) exit 64 naming the option
#   and the problem;
# - run as a non-root user: exit 2 (cannot start), saying it needs root;
# - a second spliced on a queue the first has bound: exit 2 naming the queue and
#   the other program, no abort (was a double free, exit 134); the first goes on;
# - splice-proxy: --help lists --memory-mib and --no-ipv6 (not the automatic
#   --memory-mi-b, --no-i-pv6); both are accepted (registered, no IPv6 listener);
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

# usage_error REGEX ARGS...: spliced ARGS must exit 64 with a message matching REGEX.
usage_error() {
    local re=$1 out rc=0
    shift
    out=$(nsx "$NS_R" timeout 10 "$SPLICED" "$@" 2>&1) || rc=$?
    [[ $rc -eq 64 ]] || fail "spliced $*: exit $rc, expected 64 (usage error): $out"
    grep -Eiq -- "$re" <<<"$out" || fail "spliced $*: message does not match /$re/: $out"
    log "spliced $*: exit 64: $(head -n 1 <<<"$out")"
}
BADSOCK=(--control-socket "$TEST_TMP/bad.sock")
usage_error "--max-flows.*-5" --max-flows -5 "${BADSOCK[@]}"
usage_error "--max-flows.*-5" --max-flows=-5 "${BADSOCK[@]}"
usage_error "--max-blocks.*-1" --max-blocks -1 "${BADSOCK[@]}"
usage_error "--batch.*-3" --batch -3 "${BADSOCK[@]}"
usage_error "'-5'.*--queue-max-length.*out of range" --queue-max-length -5 "${BADSOCK[@]}"
usage_error "--hold-grace-ms.*-100" --hold-grace-ms -100 "${BADSOCK[@]}"
usage_error "--heartbeat-timeout-ms.*-1" --heartbeat-timeout-ms -1 "${BADSOCK[@]}"
usage_error "--replay-patience-ms.*between 500 and 60000.*100" --replay-patience-ms 100 "${BADSOCK[@]}"
usage_error "--reader-threads must be one, handshakes-apart or per-queue, not .two." --reader-threads two "${BADSOCK[@]}"
usage_error "--queue.*-1" --queue -1 "${BADSOCK[@]}"
usage_error "--proxy-queue.*-2" --proxy-queue -2 "${BADSOCK[@]}"
usage_error "--inject-mark.*-1" --inject-mark -1 "${BADSOCK[@]}"
usage_error "--proxy-ports.*empty list" --proxy-ports '' "${BADSOCK[@]}"
usage_error "--fin-log-group 'x': give an NFLOG group number" --fin-log-group x "${BADSOCK[@]}"
usage_error "--fin-log-group '70000'" --fin-log-group 70000 "${BADSOCK[@]}"
usage_error "--syn-log-group 'x': give an NFLOG group number" --syn-log-group x "${BADSOCK[@]}"
usage_error "--fin-log-group and --syn-log-group are both 23133" --syn-log-group 23133 "${BADSOCK[@]}"
usage_error "--proxy-ports.*empty element" --proxy-ports 80,,443 "${BADSOCK[@]}"
usage_error "--proxy-ports.*0.*out of range" --proxy-ports 80,0 "${BADSOCK[@]}"
usage_error "--proxy-ports.*65536.*out of range" --proxy-ports 65536 "${BADSOCK[@]}"
usage_error "--proxy-ports.*-5.*out of range" --proxy-ports -5 "${BADSOCK[@]}"
usage_error "--proxy-ports.*9000:8000.*first port must be below" --proxy-ports 80,9000:8000 "${BADSOCK[@]}"
usage_error "--proxy-ports.*70000.*out of range" --proxy-ports 1:70000 "${BADSOCK[@]}"
usage_error "--proxy-servers.*10\.0\.0\.0/33" --proxy-ports 80 --proxy-servers 10.0.0.0/33 "${BADSOCK[@]}"
usage_error "--proxy-clients.*garbage" --proxy-ports 80 --proxy-clients garbage "${BADSOCK[@]}"
# A rules file that cannot be used: named, with the problem (the rule and its field, or the
# JSON path of what is missing).
printf '{"rules": [{"action": "splice", "match": {"host": ""}}]}' >"$TEST_TMP/bad-rules.json"
usage_error "--rules: .*bad-rules.json: rule 1: host '' is empty" --rules "$TEST_TMP/bad-rules.json" "${BADSOCK[@]}"
printf '{"rules": [{"match": {}}]}' >"$TEST_TMP/no-action.json"
usage_error "--rules: .*no-action.json is not a rule set: rules\[0\]\.action is missing" --rules "$TEST_TMP/no-action.json" "${BADSOCK[@]}"
usage_error "--rules: cannot read" --rules "$TEST_TMP/none.json" "${BADSOCK[@]}"
LONGSOCK="$TEST_TMP/$(printf 's%.0s' {1..200}).sock"
usage_error "--control-socket.*${#LONGSOCK} bytes.*at most 107" --queue 0 --control-socket "$LONGSOCK"
[[ ! -e "$LONGSOCK" ]] || fail "spliced created $LONGSOCK"

# Not root: it cannot start (exit 2), the arguments are fine (not 64).
as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${as_nobody[@]}" "$SPLICED" --help >/dev/null 2>&1 || fail "nobody cannot even run $SPLICED (directory permissions?)"
rc=0
out=$(nsx "$NS_R" timeout 10 "${as_nobody[@]}" "$SPLICED" --queue 0 "${BADSOCK[@]}" 2>&1) || rc=$?
[[ $rc -eq 2 ]] || fail "spliced as nobody: exit $rc, expected 2: $out"
grep -Eiq "must run as root" <<<"$out" || fail "spliced as nobody: the message does not say it needs root: $out"
log "spliced as nobody: exit 2: $(head -n 1 <<<"$out")"
[[ $(queue_bound_count "$NS_R") -eq 0 ]] || fail "a failed spliced left a queue bound"

rules_install "$NS_R" --ports 5001 --queues 0:1
spliced_start --queue 0 --queue 1 --max-flows 1024
pid=$(bg_pid spliced)
[[ -s "$TEST_TMP/spliced.pid" ]] || fail "no pidfile written"
[[ $(tr -d ' \n' <"$TEST_TMP/spliced.pid") == "$pid" ]] || fail "pidfile says $(cat "$TEST_TMP/spliced.pid"), spliced is $pid"
[[ $(queue_bound_count "$NS_R") -eq 2 ]] || fail "expected 2 bound queues, kernel shows: $(nsx "$NS_R" cat /proc/net/netfilter/nfnetlink_queue)"
status_json | json_get sorted 'queues.*.number' | grep -qx '\[0, 1\]' \
    || fail "status does not list queues 0 and 1: $(status_json)"
log "spliced $pid: pidfile ok, queues 0 and 1 bound"

# A second engine on a queue the first holds: a clean refusal (exit 2), not an
# abort, and the first goes on with both its queues.
for q in 1 0:1; do
    rc=0
    out=$(nsx "$NS_R" timeout 10 "$SPLICED" --queue "$q" --control-socket "$TEST_TMP/second.sock" 2>&1) || rc=$?
    [[ $rc -ne 134 ]] || fail "a second spliced on queue $q aborted (exit 134): $out"
    [[ $rc -eq 2 ]] || fail "a second spliced on queue $q: exit $rc, expected 2: $out"
    grep -Eq "cannot start: binding NFQUEUE (0|1) \(another program has bound this queue" <<<"$out" \
        || fail "a second spliced on queue $q: the message does not name the queue and the other program: $out"
    grep -Eiq "double free|crashed|Aborted" <<<"$out" && fail "a second spliced on queue $q: $out"
    log "second spliced on queue $q: exit 2: $(grep 'cannot start' <<<"$out" | head -n 1)"
done
# A second engine on queues of its own but the FIN log group the first holds: refused
# (exit 2) naming the group; with --fin-log-group none it could start.
rc=0
out=$(nsx "$NS_R" timeout 10 "$SPLICED" --queue 7 --control-socket "$TEST_TMP/second.sock" 2>&1) || rc=$?
[[ $rc -eq 2 ]] && grep -q "cannot start: binding NFLOG group 23133" <<<"$out" \
    || fail "a second spliced on the first's FIN log group: exit $rc, expected 2 naming the group: $out"
log "second spliced on the FIN log group: exit 2: $(grep 'cannot start' <<<"$out" | head -n 1)"
bg_alive spliced || fail "the first spliced died when a second one tried its queue"
[[ $(queue_bound_count "$NS_R") -eq 2 ]] || fail "after the second spliced: expected 2 bound queues, kernel shows: $(nsx "$NS_R" cat /proc/net/netfilter/nfnetlink_queue)"
[[ ! -e "$TEST_TMP/second.sock" ]] || fail "the refused second spliced left its control socket"
splicectl status >/dev/null || fail "the first spliced does not answer after the second one was refused"

# splice-proxy's documented option names.
PROXY=$(need_bin splice-proxy)
help=$("$PROXY" --help 2>&1) || fail "splice-proxy --help failed: $help"
for o in --memory-mib --no-ipv6; do
    grep -Eq -- "(^|[ [])$o([] ,]|$)" <<<"$help" || fail "splice-proxy --help does not list $o: $help"
done
grep -Eq -- "--memory-mi-b|--no-i-pv6" <<<"$help" && fail "splice-proxy --help lists the automatic names: $help"
rc=0
out=$("$PROXY" --memory-mib -5 2>&1) || rc=$?
[[ $rc -eq 64 ]] && grep -q -- "--memory-mib.*-5" <<<"$out" || fail "splice-proxy --memory-mib -5: exit $rc: $out"
rc=0
out=$("$PROXY" --listen-port -1 2>&1) || rc=$?
[[ $rc -eq 64 ]] && grep -q -- "'-1'.*--listen-port.*out of range" <<<"$out" || fail "splice-proxy --listen-port -1: exit $rc: $out"
# The balancer's options name the bad value.
for bad in "--service 10.0.0.1:80|--service '10.0.0.1:80': expected ADDRESS:PORT=POOL" \
           "--service 10.0.0.1:0=web|--service '10.0.0.1:0=web'" \
           "--balancer-ports 65000:61000|--balancer-ports '65000:61000'" \
           "--balancer-mark 0|--balancer-mark must be a non-zero mark" \
           "--service-mss 40|--service-mss must be between 88 and 65495 bytes, not 40"; do
    rc=0
    # shellcheck disable=SC2086 # the option and its value, split on purpose
    out=$("$PROXY" ${bad%%|*} 2>&1) || rc=$?
    [[ $rc -eq 64 ]] && grep -qF -- "${bad#*|}" <<<"$out" || fail "splice-proxy ${bad%%|*}: exit $rc: $out"
done
proxy_start splice-proxy --memory-mib 8 --no-ipv6
[[ -z "$(nsx "$NS_R" ss -Hltn6 "sport = :$TPROXY_PORT")" ]] || fail "splice-proxy --no-ipv6 listens on IPv6: $(nsx "$NS_R" ss -Hltn "sport = :$TPROXY_PORT")"
[[ -n "$(nsx "$NS_R" ss -Hltn4 "sport = :$TPROXY_PORT")" ]] || fail "splice-proxy does not listen on IPv4 port $TPROXY_PORT"
rc=0
bg_kill splice-proxy TERM 10 || rc=$?
[[ $rc -ne 124 ]] || fail "splice-proxy still running 10 s after SIGTERM"
log "splice-proxy --memory-mib 8 --no-ipv6: accepted, registered, IPv4 only"

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
