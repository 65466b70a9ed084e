#!/usr/bin/env bash
# tcpsplice benchmark (not part of the test suite): new TCP connections per
# second through the router, short HTTP requests, in one run on one
# client/router/server topology of namespaces (Tests/netns/lib.sh):
#
#   plain         kernel forwarding, no rules
#   bypass        the rules + spliced (release build), no proxy policy
#   haproxy       HAProxy (Debian's package) alone, mode tcp, non-transparent: the
#                 client connects to the router's address, haproxy to nginx (the
#                 userspace-proxy reference)
#   haproxy-http  the same in mode http: HAProxy parses each request as the splice
#                 path's rules do (the layer-7 reference)
#   resil-sp      the resilient path: the rules with --tproxy-port and
#                 --proxy-queue, spliced --proxy-ports, splice-proxy in the path
#   resil-ha      the resilient path with an unmodified HAProxy as the transparent
#                 proxy (Docs/resilient.md), watched by spliced through its pidfile
#   spliced       the splice path (Docs/splicing.md): as resil-sp, with the splice
#                 rule "GET -> splice", the engine reading each request (the default
#                 request reader): every connection is spliced from its request, the
#                 proxy never engaged
#   spliced-px    the same with the proxy reading each request (request reader
#                 `proxy`): splice-proxy reads it, decides and steps out
#
# wrk (Debian's) in the client, nginx (Debian's) in the server serving a 1 KiB
# file; every request on a new connection (wrk -H 'Connection: close', nginx
# keepalive_timeout 0), so requests/s = new connections/s. Prints per case
# requests/s, wrk's latency p50/p99 (--latency; wrk times a request from its
# first byte written to the response's last byte read, so the client's own
# connect is not in it), "new conn ms": the medians of connect and of the whole
# request (connect included) of 15 curls made one after another while wrk runs
# (a new client's view under the load), wrk's socket errors (connect/read/write/timeout) and
# responses neither 2xx nor 3xx (wrk's count), the ratio to plain forwarding and, for the resilient
# cases, to HAProxy alone. Before each case one curl fetch checks the file's
# SHA-256 through that path. The tcpsplice cases also report what spliced
# counted (flows created, resilient flows, failovers, queue drops) and check
# that the flows went through the proxy. A second table says where the
# machine's CPU time went while wrk ran (Scripts/lib/cpu_use.py: how busy the
# cores were, busy CPU milliseconds per connection, user / kernel / interrupt
# seconds, the busiest commands): on a machine whose cores are all busy, the
# connection rate is the cores divided by the CPU time a connection costs.
# Anything wrong is said per case, and the script then exits 1 (after printing
# everything).
#
# Every namespace gets what a host taking many connections sets (somaxconn,
# tcp_max_syn_backlog, ip_local_port_range 10000-65000, as load_sysctls in
# Tests/netns/lib.sh), the client also tcp_tw_reuse=1.
#
# Before each case the script waits (at most --settle seconds) until the router
# holds no TCP socket bound to the client's address: a transparent proxy's
# upstream sockets carry the client's own address and port, and those left in
# TIME-WAIT or LAST-ACK by the previous case (wrk aborts its open connections
# when it stops) would make the proxy's upstream connect fail when the client
# reuses the port (EADDRNOTAVAIL), so the next case would pay for the previous
# one. Only the resilient cases leave such sockets (waits ~60 s before resil-ha).
#
# Usage: Scripts/bench-connrate.sh [--time SECONDS] [--connections N]
#            [--threads N] [--bin DIR] [--settle SECONDS] [--json FILE] [--no-setup]
#   --time SECONDS     wrk's duration per case (default 10)
#   --connections N    wrk's concurrent connections (default 64)
#   --threads N        wrk's threads (default 2)
#   --bin DIR          spliced, splicectl, splice-proxy from DIR (default
#                      .build/release; built with `swift build -c release` when
#                      missing, with --scratch-path DIR/.. when DIR ends in /release)
#   --settle SECONDS   the longest wait for the router's leftover sockets before
#                      a case (default 120; 0 = no wait)
#   --json FILE        also write the summary JSON to FILE (it is always the last
#                      line of stdout)
#   --no-setup         do not run Scripts/setup.sh
#   --cases LIST       only these cases, comma-separated (default: all eight)
#   --source-nat       the router masquerades toward the server in every case (a
#                      gateway that source-NATs its clients; Docs/resilient.md)
#   (as root; ~5 x SECONDS plus ~30 s, plus ~60 s of settling before resil-ha)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The wrk output parser both connection-rate benchmarks share.
export TCPSPLICE_SCRIPTS_LIB="$SCRIPT_DIR/lib"
CPU_USE="$SCRIPT_DIR/lib/cpu_use.py"
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

DURATION=10
CONNS=64
THREADS=2
BIN="$ROOT/.build/release"
JSON_OUT=""
SETTLE=120
SETUP=1
ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --time|-t)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--time needs a number of seconds"
            DURATION=$2; shift 2 ;;
        --connections|-c)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--connections needs a number"
            CONNS=$2; shift 2 ;;
        --threads)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--threads needs a number"
            THREADS=$2; shift 2 ;;
        --bin)
            [[ $# -ge 2 && -n "$2" ]] || die "--bin needs a directory"
            BIN=$2; shift 2 ;;
        --json)
            [[ $# -ge 2 && -n "$2" ]] || die "--json needs a file name"
            JSON_OUT=$2; shift 2 ;;
        --settle)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--settle needs a number of seconds"
            SETTLE=$2; shift 2 ;;
        --no-setup) SETUP=0; shift ;;
        --source-nat) export TOPO_SNAT=1; shift ;;
        --cases)
            [[ $# -ge 2 && "$2" =~ ^(plain|bypass|haproxy|haproxy-http|resil-sp|resil-ha|spliced|spliced-px)(,(plain|bypass|haproxy|haproxy-http|resil-sp|resil-ha|spliced|spliced-px))*$ ]] \
                || die "--cases needs a comma-separated list of plain, bypass, haproxy, haproxy-http, resil-sp, resil-ha, spliced, spliced-px"
            ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,67p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
((THREADS <= CONNS)) || die "--threads ($THREADS) must not exceed --connections ($CONNS)"
exec </dev/null

ensure_swift_on_path
if ((SETUP)); then "$SCRIPT_DIR/setup.sh"; fi
[[ "$BIN" == /* ]] || BIN="$PWD/$BIN"
[[ -z "$JSON_OUT" || "$JSON_OUT" == /* ]] || JSON_OUT="$PWD/$JSON_OUT"
ensure_release_bins "$BIN" "$ROOT"
export TCPSPLICE_BIN="$BIN"

# shellcheck source=Tests/netns/lib.sh
. "$ROOT/Tests/netns/lib.sh"
require_tools wrk nginx haproxy curl
# install-rules.sh saves the sysctls it changes in a file per namespace: keep
# it in our temp dir, not in /run.
export TCPSPLICE_STATE_DIR="$TEST_TMP/rules-state"

PORT=80
FILE_BYTES=1024
CASES=(plain bypass haproxy haproxy-http resil-sp resil-ha spliced spliced-px)
[[ -z "$ONLY" ]] || IFS=, read -r -a CASES <<<"$ONLY"
declare -A NOTES=()     # case -> notes, one per line
note_case() {
    NOTES[$1]+="$2"$'\n'
    log "$1: PROBLEM: $2"
}

# --- topology, sysctls, nginx (Tests/netns/lib.sh: load_sysctls, crowd_prepare, nginx_start) ---
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
topo_create
for ns in "$NS_C" "$NS_R" "$NS_S"; do load_sysctls "$ns"; done
nsx "$NS_C" sysctl -qw net.ipv4.tcp_tw_reuse=1 >/dev/null || fail "cannot set tcp_tw_reuse in the client"
crowd_prepare "$FILE_BYTES"
FILE_SHA=$CROWD_SHA
nginx_start "$NS_S" "$PORT"
log "nginx serving $FILE_BYTES bytes at /f"

# --- one case ------------------------------------------------------------------------
# settle CASE: wait (at most $SETTLE s) until the router holds no TCP socket bound
# to the client's address (see the header); what was there and how long it took
# go to $TEST_TMP/settle-CASE.json.
settle() {
    local case=$1 t0=$SECONDS before n
    before=$(nsx "$NS_R" ss -Htan src "$CLIENT_IP" | awk '{ n[$1]++ } END { for (s in n) printf "%s %d, ", s, n[s] }')
    before=${before%, }
    if [[ -n "$before" ]]; then
        log "$case: the router holds sockets bound to the client's address ($before); waiting up to ${SETTLE}s for them to go"
        while n=$(nsx "$NS_R" ss -Htan src "$CLIENT_IP" | wc -l) && ((n > 0 && SECONDS - t0 < SETTLE)); do
            sleep 1
        done
        if ((n > 0)); then
            log "$case: $n of them still there after ${SETTLE}s; measuring anyway"
        else
            log "$case: gone after $((SECONDS - t0))s"
        fi
    fi
    printf '{"leftover_sockets": "%s", "waited_s": %d}\n' "$before" $((SECONDS - t0)) >"$TEST_TMP/settle-$case.json"
}


# run_case CASE HOST: a curl check of the file, then wrk, with a probe of new
# connections while it runs; the parsed result in $TEST_TMP/case-CASE.json;
# problems noted.
run_case() {
    local case=$1 host=$2 url="http://$2:$PORT/f" got="$TEST_TMP/got-$1" rc=0
    settle "$case"
    if ! nsx "$NS_C" curl -sS --max-time 10 -H 'Connection: close' -o "$got" "$url" 2>"$TEST_TMP/curl-$case.err"; then
        note_case "$case" "curl check of $url failed: $(head -c 200 "$TEST_TMP/curl-$case.err" | tr '\n' ' ')"
    elif [[ "$(sha256_of "$got")" != "$FILE_SHA" ]]; then
        note_case "$case" "curl check of $url: the file arrived with another SHA-256 ($(stat -c %s "$got") bytes)"
    fi
    log "$case: wrk -t $THREADS -c $CONNS -d ${DURATION}s --latency -H 'Connection: close' $url"
    python3 "$CPU_USE" snapshot "$TEST_TMP/cpu0-$case.json"
    # In a subshell that then prints its children's CPU time (bash's `times`, second line):
    # wrk has ended by the second snapshot, so /proc no longer shows what it used.
    (
        nsx "$NS_C" timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --latency \
            -H 'Connection: close' "$url" >"$TEST_TMP/wrk-$case.out" 2>"$TEST_TMP/wrk-$case.err"
        st=$?
        times >"$TEST_TMP/wrk-times-$case"   # not in a pipe: a pipe's subshell has no children
        exit "$st"
    ) &
    local wrk_pid=$!
    probe_new_connections "$TEST_TMP/probe-$case" "$url" "$DURATION"
    wait "$wrk_pid" || rc=$?
    python3 "$CPU_USE" snapshot "$TEST_TMP/cpu1-$case.json"
    local probed
    probed=$(json_get ok <"$TEST_TMP/probe-$case.json" 2>/dev/null || echo 0)
    [[ "$probed" == "$PROBES" ]] || note_case "$case" "only $probed of $PROBES probe requests (curl, new connections during wrk) answered 200"
    sed 's/^/    /' "$TEST_TMP/wrk-$case.out" "$TEST_TMP/wrk-$case.err"
    python3 - "$case" "$url" "$rc" "$TEST_TMP/wrk-$case.out" "$TEST_TMP/wrk-$case.err" \
        "$TEST_TMP/case-$case.json" <<'PYEOF' || note_case "$case" "could not parse wrk's output"
import json, os, sys
sys.path.insert(0, os.environ["TCPSPLICE_SCRIPTS_LIB"])
import wrk_result
case, url, rc, out_path, err_path, json_path = sys.argv[1:7]
out = open(out_path).read()
err = open(err_path).read().strip()
r = {"case": case, "url": url, "wrk_status": int(rc), "problems": []}
wrk_result.parse(out, err, rc, r)
json.dump(r, open(json_path, "w"))
for p in r["problems"]:
    print(p)
PYEOF
    # Where the machine's time went while wrk ran (the probes' curls included).
    local wrk_s
    wrk_s=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] } printf "%.2f", s }' \
        "$TEST_TMP/wrk-times-$case" 2>/dev/null)
    python3 "$CPU_USE" diff "$TEST_TMP/cpu0-$case.json" "$TEST_TMP/cpu1-$case.json" \
        --requests "$(case_requests "$case")" ${wrk_s:+--ended "wrk=$wrk_s"} >"$TEST_TMP/cpu-$case.json" \
        || note_case "$case" "could not account the CPU time"
    log "$case: CPU while wrk ran: $(cat "$TEST_TMP/cpu-$case.json" 2>/dev/null)"
    local p
    if [[ -s "$TEST_TMP/case-$case.json" ]]; then
        while IFS= read -r p; do
            [[ -z "$p" ]] || note_case "$case" "$p"
        done < <(json_get lines problems <"$TEST_TMP/case-$case.json")
    fi
}

# case_requests CASE: requests wrk completed in CASE (0 if unknown).
case_requests() {
    python3 -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("requests") or 0)
except Exception:
    print(0)' "$TEST_TMP/case-$1.json"
}

# spliced_after CASE [resilient]: save spliced's status, print what it counted,
# note queue drops, untracked flows, and for the resilient cases fewer
# resilient flows than wrk's requests (+1 for curl), failovers or failed
# injections.
spliced_after() {
    local case=$1 mode=${2:-} st="$TEST_TMP/status-$1.json" line
    if ! splicectl status --json >"$st" 2>"$TEST_TMP/status-$case.err"; then
        note_case "$case" "splicectl status failed: $(head -c 200 "$TEST_TMP/status-$case.err" | tr '\n' ' ')"
        return 0
    fi
    python3 - "$case" "$mode" "$st" "$(case_requests "$case")" "$TEST_TMP/spliced-$case.json" >"$TEST_TMP/check-$case.txt" <<'PYEOF' \
        || note_case "$case" "could not read spliced's status"
import json, sys
case, mode, path, requests, out_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
d = json.load(open(path))
fl = d.get("flows", {})
qs = d.get("queues", [])
res = d.get("resilient") or {}
qdrop = sum((q.get("queueDropped") or 0) + (q.get("userDropped") or 0) for q in qs)
overruns = sum(q.get("receiveOverruns") or 0 for q in qs)
refused = sum(q.get("verdictSendFailures") or 0 for q in qs)
s = {
    "flows_created": fl.get("created"), "flows_reopened": fl.get("reopened"),
    "flows_table_full": fl.get("tableFull"), "queue_packets": sum(q.get("packets", 0) for q in qs),
    "queue_dropped": qdrop, "receive_overruns": overruns,
    "resilient_flows": res.get("flows"), "failovers": res.get("failovers"),
    "injection_failures": res.get("injectionFailures"),
}
spl = d.get("splices") or {}
for k, v in (("decided", "decidedSplice"), ("drained", "drained"), ("fell_back", "fellBack"), ("cancelled", "cancelled"),
             ("refused", "refused"), ("asked_to_wait", "notYetDrained"), ("requests_read", "requestsRead"),
             ("spliced_from_request", "decidedAtRequest"), ("requests_to_proxy", "requestsToProxy")):
    if v in spl:
        s["splices_" + k] = spl[v]
json.dump(s, open(out_path, "w"))
print("INFO spliced counted: " + ", ".join("%s %s" % kv for kv in s.items() if kv[1] is not None))
if not s["queue_packets"]:
    print("PROBLEM spliced read no packet: the rules were not in the path")
if qdrop:
    print("PROBLEM %d packets dropped at spliced's queues (kernel queue full or user drop)" % qdrop)
if overruns:
    print("PROBLEM %d netlink receive overruns at spliced's queues" % overruns)
if refused:
    print("PROBLEM %d verdict sends refused by the kernel (their packets stayed queued)" % refused)
if s["flows_table_full"]:
    print("PROBLEM %d flows let through untracked (table full)" % s["flows_table_full"])
if mode == "spliced":
    # The engine reads every request (GET -> splice) and splices it: the proxy never engaged.
    spliced = spl.get("decidedAtRequest") or 0
    if spliced + 256 < (s["resilient_flows"] or 0):
        print("PROBLEM only %d of %s connections were spliced by the engine from their request" % (spliced, s["resilient_flows"]))
    if spl.get("decidedSplice"):
        print("PROBLEM the proxy decided %d connections the engine should have spliced" % spl["decidedSplice"])
if mode == "spliced-px":
    # Every connection through the proxy is decided (GET -> splice), and every splice ends:
    # spliced (drained or by fallback), or cancelled (the short answer and both FINs went
    # through the proxy before the splice drained).
    decided = spl.get("decidedSplice") or 0
    done = (spl.get("drained") or 0) + (spl.get("fellBack") or 0) + (spl.get("cancelled") or 0)
    # (Those wrk had open when it stopped may end neither way: it aborts them, some before
    # their request.)
    if decided + 256 < (s["resilient_flows"] or 0):
        print("PROBLEM only %d of %s connections through the proxy were decided splice" % (decided, s["resilient_flows"]))
    if done + 256 < decided:
        print("PROBLEM only %d of %d splices ended (spliced or cancelled)" % (done, decided))
    if s["failovers"]:
        print("PROBLEM %d failovers (flows bypassed because the proxy was seen dead)" % s["failovers"])
if mode == "resilient":
    want = requests + 1
    if (s["resilient_flows"] or 0) < want:
        print("PROBLEM only %s resilient flows for %d connections (wrk's completed requests + curl): not all went through the proxy"
              % (s["resilient_flows"], want))
    if s["failovers"]:
        print("PROBLEM %d failovers (flows bypassed because the proxy was seen dead)" % s["failovers"])
    if s["injection_failures"]:
        print("PROBLEM %d injection failures" % s["injection_failures"])
PYEOF
    while IFS= read -r line; do
        case "$line" in
            "PROBLEM "*) note_case "$case" "${line#PROBLEM }" ;;
            "INFO "*) log "$case: ${line#INFO }" ;;
        esac
    done <"$TEST_TMP/check-$case.txt"
}

# alive_after CASE NAME: the background daemon NAME is still running.
alive_after() {
    bg_alive "$2" || note_case "$1" "$2 is no longer running after the run (see $(bg_log "$2"))"
}

# wanted CASE: CASE is one of those to run (--cases).
wanted() { [[ " ${CASES[*]} " == *" $1 "* ]]; }

# --- 1. plain forwarding ------------------------------------------------------------
if wanted plain; then run_case plain "$SERVER_IP"; fi

# --- 2. bypass: the rules + spliced, no proxy policy -------------------------------------
if wanted bypass; then
on_cleanup "nsx '$NS_R' '$ROOT/Scripts/remove-rules.sh' --family 4"
rules_install "$NS_R" --ports "$PORT" --queues 0 --family 4
SPLICED_BG=spliced-bypass spliced_start --queue 0
run_case bypass "$SERVER_IP"
alive_after bypass spliced-bypass
spliced_after bypass
bg_kill spliced-bypass TERM || log "spliced exited with status $? on SIGTERM"
rules_remove "$NS_R" --family 4
fi

# --- 3. HAProxy alone, non-transparent, mode tcp ------------------------------------------
if wanted haproxy; then
haproxy_alone_start haproxy-plain tcp "$PORT" 4000 1m
run_case haproxy "$ROUTER_IP_C"
alive_after haproxy haproxy-plain
bg_kill haproxy-plain TERM || true
fi

# --- 3b. HAProxy alone, mode http: the layer-7 reference for the splice path -----------------
if wanted haproxy-http; then
haproxy_alone_start haproxy-l7 http "$PORT" 4000 1m
run_case haproxy-http "$ROUTER_IP_C"
alive_after haproxy-http haproxy-l7
bg_kill haproxy-l7 TERM || true
fi

# --- 4. resilient path, splice-proxy ------------------------------------------------------
if wanted resil-sp || wanted resil-ha || wanted spliced || wanted spliced-px; then
    on_cleanup "nsx '$NS_R' '$ROOT/Scripts/remove-rules.sh' --family 4"
    rules_install "$NS_R" --ports "$PORT" "${RESILIENT_RULE_QUEUES[@]}" --family 4 --tproxy-port "$TPROXY_PORT"
fi
if wanted resil-sp; then
SPLICED_BG=spliced-rsp spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT"
proxy_start splice-proxy --no-ipv6
run_case resil-sp "$SERVER_IP"
alive_after resil-sp spliced-rsp
alive_after resil-sp splice-proxy
spliced_after resil-sp resilient
n=$(grep -c "cannot connect" "$(bg_log splice-proxy)" || true)
((n == 0)) || note_case resil-sp "splice-proxy could not connect upstream $n times, e.g. $(grep -m1 "cannot connect" "$(bg_log splice-proxy)" | sed 's/.*\] //')"
bg_kill splice-proxy TERM || true
bg_kill spliced-rsp TERM || log "spliced exited with status $? on SIGTERM"
fi

# --- 5. the splice path: the engine reads each request and splices it -----------------------
if wanted spliced; then
SPLICED_BG=spliced-spl spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT"
proxy_start splice-proxy-spl --no-ipv6
splicectl rules add --method GET --action splice >/dev/null || fail "splicectl rules add failed"
run_case spliced "$SERVER_IP"
alive_after spliced spliced-spl
alive_after spliced splice-proxy-spl
spliced_after spliced spliced
bg_kill splice-proxy-spl TERM || true
bg_kill spliced-spl TERM || log "spliced exited with status $? on SIGTERM"
fi

# --- 5b. the splice path with the proxy reading each request --------------------------------
if wanted spliced-px; then
SPLICED_BG=spliced-spx spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT"
proxy_start splice-proxy-spx --no-ipv6
splicectl rules default --request-reader proxy >/dev/null || fail "splicectl rules default failed"
splicectl rules add --method GET --action splice >/dev/null || fail "splicectl rules add failed"
run_case spliced-px "$SERVER_IP"
alive_after spliced-px spliced-spx
alive_after spliced-px splice-proxy-spx
spliced_after spliced-px spliced-px
bg_kill splice-proxy-spx TERM || true
bg_kill spliced-spx TERM || log "spliced exited with status $? on SIGTERM"
fi

# --- 6. resilient path, HAProxy as the transparent proxy ------------------------------------
if wanted resil-ha; then
SPLICED_BG=spliced-rha spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT" --proxy-pidfile "$TEST_TMP/haproxy.pid"
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
run_case resil-ha "$SERVER_IP"
alive_after resil-ha spliced-rha
haproxy_alive || note_case resil-ha "haproxy (pid $HAPROXY_PID) is no longer running after the run"
spliced_after resil-ha resilient
kill -TERM "$HAPROXY_PID" 2>/dev/null || true
bg_kill spliced-rha TERM || log "spliced exited with status $? on SIGTERM"
fi
rules_remove "$NS_R" --family 4

# --- report ----------------------------------------------------------------------------
for c in "${CASES[@]}"; do
    printf '%s' "${NOTES[$c]:-}" >"$TEST_TMP/notes-$c.txt"
done
echo
echo "New connections per second through the router: wrk -t $THREADS -c $CONNS -d ${DURATION}s, one request of $FILE_BYTES bytes per connection"
echo "$(nproc) cores ($(uname -r)); load average before the run: $LOAD_BEFORE"
python3 - "$TEST_TMP" "$DURATION" "$CONNS" "$THREADS" "$FILE_BYTES" "$(nproc)" "$(uname -r)" \
    "$LOAD_BEFORE" "$SETTLE" "${CASES[@]}" <<'PYEOF'
import json, os, sys, time
tmp, duration, conns, threads, fbytes, cores, kernel, load, settle = sys.argv[1:10]
names = sys.argv[10:]
def load_json(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
cases = []
for n in names:
    c = load_json(os.path.join(tmp, "case-%s.json" % n)) or {"case": n, "rps": None}
    c.pop("problems", None)
    sp = load_json(os.path.join(tmp, "spliced-%s.json" % n))
    if sp is not None:
        c["spliced"] = sp
    pr = load_json(os.path.join(tmp, "probe-%s.json" % n))
    if pr is not None:
        c["probe"] = pr
    cpu = load_json(os.path.join(tmp, "cpu-%s.json" % n))
    if cpu is not None:
        c["cpu"] = cpu
    st = load_json(os.path.join(tmp, "settle-%s.json" % n))
    if st is not None:
        c["settle"] = st
    c["problems"] = [x for x in open(os.path.join(tmp, "notes-%s.txt" % n)).read().splitlines() if x]
    c["ok"] = not c["problems"]
    cases.append(c)
by = {c["case"]: c for c in cases}
def ratio(a, b):
    return round(a / b, 3) if a and b else None
for c in cases:
    c["vs_plain"] = ratio(c.get("rps"), by.get("plain", {}).get("rps"))
    if c["case"].startswith("resil-") or c["case"].startswith("spliced"):
        c["vs_haproxy"] = ratio(c.get("rps"), by.get("haproxy", {}).get("rps"))
    if c["case"].startswith("spliced") and "haproxy-http" in by:
        c["vs_haproxy_http"] = ratio(c.get("rps"), by["haproxy-http"].get("rps"))
def f(v, fmt):
    return fmt % v if v is not None else "n/a"
row = "%-12s %9s %9s %11s %9s %8s %8s %13s %17s %12s  %s"
print(row % ("path", "conn/s", "vs plain", "vs haproxy", "vs hap-http", "p50 ms", "p99 ms", "new conn ms", "sock err c/r/w/t", "non-2xx/3xx", "problems"))
for c in cases:
    e = c.get("errors") or {}
    errs = "/".join(str(e.get(k, "?")) for k in ("connect", "read", "write", "timeout"))
    pr = c.get("probe") or {}
    newconn = "%s/%s" % (f(pr.get("connect_ms_p50"), "%.1f"), f(pr.get("total_ms_p50"), "%.1f"))
    print(row % (c["case"], f(c.get("rps"), "%.0f"), f(c.get("vs_plain"), "%.2f"),
                 f(c.get("vs_haproxy"), "%.2f") if "vs_haproxy" in c else "",
                 f(c.get("vs_haproxy_http"), "%.2f") if "vs_haproxy_http" in c else "",
                 f(c.get("p50_ms"), "%.2f"), f(c.get("p99_ms"), "%.2f"), newconn, errs,
                 c.get("non_2xx_3xx", "n/a"), "none" if c["ok"] else "%d (see below)" % len(c["problems"])))
print()
print("CPU while wrk ran (the whole machine: client, router and server share its %s cores):" % cores)
row2 = "%-12s %7s %12s %8s %8s %8s  %s"
print(row2 % ("path", "busy %", "CPU ms/conn", "user s", "kernel s", "irq s", "CPU seconds of the busiest commands"))
for c in cases:
    u = c.get("cpu") or {}
    top = ", ".join("%s %.1f" % kv for kv in sorted((u.get("by_command_s") or {}).items(), key=lambda kv: -kv[1])[:6])
    print(row2 % (c["case"], f(u.get("busy_pct"), "%.1f"), f(u.get("busy_ms_per_request"), "%.3f"),
                  f(u.get("user_s"), "%.1f"), f(u.get("system_s"), "%.1f"), f(u.get("interrupts_s"), "%.1f"), top or "n/a"))
for c in cases:
    for p in c["problems"]:
        print("  %s: %s" % (c["case"], p))
summary = {
    "benchmark": "connrate", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "duration_s": int(duration), "connections": int(conns), "threads": int(threads),
    "file_bytes": int(fbytes), "cores": int(cores), "kernel": kernel, "loadavg_before": load,
    "settle_max_s": int(settle), "ok": all(c["ok"] for c in cases), "cases": cases,
}
json.dump(summary, open(os.path.join(tmp, "summary.json"), "w"), sort_keys=True)
PYEOF
[[ -z "$JSON_OUT" ]] || cp "$TEST_TMP/summary.json" "$JSON_OUT"
echo
cat "$TEST_TMP/summary.json"
echo
[[ "$(json_get ok <"$TEST_TMP/summary.json")" == True ]] || exit 1
