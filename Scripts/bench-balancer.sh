#!/usr/bin/env bash
# tcpsplice benchmark (not part of the test suite): the layer-7 balancer
# (Docs/balancer.md) against HAProxy as an HTTP balancer, in one run on one
# topology of namespaces: a client, the router, three backends (each behind a
# link of its own from the router, as Tests/netns/test_balancer.sh builds them),
# each running nginx (Debian's) serving the same files. The service address
# 10.77.9.1 is on the router's lo. Three cases, one after the other (in the
# order plain, splice-lb, haproxy-lb; printed in the order below):
#
#   plain        the client fetches straight from backend 1 through kernel
#                forwarding, no rules (the reference of the references)
#   haproxy-lb   HAProxy (Debian's) on the router at 10.77.9.1:80, `mode http`,
#                `balance roundrobin` over the three backends, HAProxy's default
#                connection handling (--haproxy keep-alive: keep-alive on both
#                sides, `http-reuse safe`, under which the first request of a
#                client connection always gets a server connection of its own:
#                with one request per connection, one server connection per
#                request, as splice-lb; --haproxy reuse-always adds `http-reuse
#                always`, idle server connections shared by all clients;
#                --haproxy server-close sets `option http-server-close`), its
#                default thread count (one per core), maxconn 9900 (two fds a
#                connection under a hard limit of 20,000 open files, as
#                haproxy_start): the userspace reference
#   splice-lb    the splice balancer: Scripts/install-rules.sh --ports 80
#                --queues 0 --service 10.77.9.1:80, spliced --queue 0,
#                splice-proxy --service 10.77.9.1:80=web, `splicectl pools add
#                web --method round-robin` over the three backends and `splicectl
#                rules default --action splice`: the proxy reads each request,
#                connects to a backend and has spliced join the two connections
#                (--lb-rules large: `splicectl rules default --action proxy` and
#                `splicectl rules add --content-length-above 65536 --action splice`,
#                as an operator sets it for a mix of small and large answers: the
#                answers above 64 KiB joined after their head, the short requests'
#                relayed by the proxy, none of their connections joined)
#
# Per case:
#   1. a large HTTP download (--http-mib, default 1024 MiB) with curl: one
#      download checked for the file's SHA-256, then --tries (3) timed ones to
#      /dev/null, the best kept, in Gbit/s;
#   2. short requests: wrk (Debian's) with a new connection per request (wrk -H
#      'Connection: close'), a 1 KiB file, --connections concurrent connections
#      (a comma-separated list runs one wrk per level), --time seconds each:
#      requests/s (= new connections/s), wrk's latency p50/p99 (from the
#      request's first byte written to the answer's last byte read: the connect
#      is not in it), "new conn ms" (the medians of connect and of the whole
#      request of 15 curls on new connections while wrk runs: connect included),
#      wrk's socket errors and answers neither 2xx nor 3xx, and the whole
#      machine's share of busy CPU and busy CPU microseconds per request
#      while wrk ran (Scripts/lib/cpu_use.py: client, router and backends
#      share the cores, so once they are busy the rate is set by that figure,
#      wherever the time goes). One curl fetch first checks the file's
#      SHA-256 through that path.
#   3. keep-alive requests (--keepalive-kib, default 1024 KiB; 0: none): wrk with
#      its persistent connections (no Connection: close), the same levels; for
#      splice-lb a rule `splicectl rules add --action splice --per-request` is
#      added for it (Docs/balancer.md, keep-alive re-routing): every request's
#      response joined for itself and handed back to the proxy at its end, the
#      next request routed again (`returned` counted beside `joined`).
# Every backend's access log counts the requests and the connections each
# backend served in each wrk run (so the spread over the backends shows, and
# HAProxy's reuse of its server connections). For splice-lb, spliced's counters
# (splicectl status --json, `balancer`) are read before and after each
# measurement: `joined` must grow by about the number of requests (the script
# says so when fewer than 90% of wrk's requests, or fewer than the downloads,
# were joined), and the joins refused or cancelled (the connection stayed in the
# proxy), queue drops and flows let through untracked are reported. CPU time
# (user + system, /proc) of the router's daemons during each measurement:
# haproxy, or spliced + splice-proxy (the kernel's own forwarding work is in
# none of them).
#
# Prints a table per measurement with the ratios splice-lb/haproxy-lb and
# haproxy-lb/plain (and each case against plain), the aims (splice-lb's
# throughput >= 1.0x haproxy-lb's, its request rate >= haproxy-lb's) and
# whether this run met them, and the peak RSS (VmHWM) of spliced, splice-proxy
# and haproxy. Anything wrong is said per case, and the script then exits 1
# (after printing everything). Namespaces and processes are removed on exit,
# also on failure or Ctrl-C (Tests/netns/lib.sh).
#
# Every namespace gets the load sysctls (Tests/netns/lib.sh load_sysctls:
# somaxconn, tcp_max_syn_backlog, ephemeral ports 10000-65000), the client also
# tcp_tw_reuse=1, and the router's ephemeral ports end at 60999 instead: the
# balancer's backend connections leave from 61000-65535 (splice-proxy
# --balancer-ports), which the kernel must not hand to anyone else.
#
# Usage: Scripts/bench-balancer.sh [--time SECONDS] [--http-mib MIB]
#            [--connections N[,N...]] [--threads N] [--tries N]
#            [--backend-keepalive SECONDS] [--haproxy keep-alive|reuse-always|server-close]
#            [--keepalive-kib KIB] [--lb-rules all|large|none]
#            [--bin DIR] [--json FILE] [--no-setup]
#   --time SECONDS          wrk's duration per case and level (default 10)
#   --http-mib MIB          size of the downloaded file (default 1024)
#   --connections LIST      wrk's concurrent connections, one level or a
#                           comma-separated list (default 50)
#   --threads N             wrk's threads (default 2)
#   --tries N               timed downloads per case, the best kept (default 3)
#   --backend-keepalive S   the backends' nginx keepalive_timeout (default 75; 0:
#                           nginx closes every connection after one answer, so
#                           HAProxy cannot reuse its server connections)
#   --haproxy MODE          HAProxy's connection handling (see haproxy-lb above):
#                           keep-alive (default), reuse-always, server-close
#   --lb-rules all|large|none
#                           splice-lb's rules: every connection joined (all, the
#                           default), the answers above 64 KiB only (large), or
#                           none (every connection relayed by the proxy)
#   --keepalive-kib KIB     the keep-alive requests' file (default 1024; 0: no
#                           keep-alive measurement)
#   --bin DIR               spliced, splicectl, splice-proxy from DIR (default
#                           .build/release; built with `swift build -c release`
#                           when missing, with --scratch-path DIR/.. when DIR ends
#                           in /release)
#   --json FILE             also write the summary as JSON to FILE
#   --no-setup              do not run Scripts/setup.sh (then wrk, haproxy, nginx
#                           and curl must already be installed)
#   BENCH_PROXY_ARGS (environment): more splice-proxy options for splice-lb, such
#   as "--log-level debug" (with TCPSPLICE_KEEP_TMP=1 the logs are kept)
#   (as root: namespaces, iptables; ~3 x (number of levels x SECONDS + 3 x the
#   download) plus ~30 s)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The wrk output parser both connection-rate benchmarks share.
export TCPSPLICE_SCRIPTS_LIB="$SCRIPT_DIR/lib"
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

DURATION=10
HTTP_MIB=1024
CONNS_LIST=50
THREADS=2
TRIES=3
BACKEND_KEEPALIVE=75
HAPROXY_MODE=keep-alive
KA_KIB=1024
LB_RULES=all
BIN="$ROOT/.build/release"
JSON_OUT=""
SETUP=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --time|-t)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--time needs a number of seconds (1 or more)"
            DURATION=$2; shift 2 ;;
        --http-mib)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--http-mib needs a number of MiB (1 or more)"
            HTTP_MIB=$2; shift 2 ;;
        --connections|-c)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] \
                || die "--connections needs a number, or a comma-separated list of numbers (e.g. 10,50,200)"
            CONNS_LIST=$2; shift 2 ;;
        --threads)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--threads needs a number (1 or more)"
            THREADS=$2; shift 2 ;;
        --tries)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--tries needs a number (1 or more)"
            TRIES=$2; shift 2 ;;
        --backend-keepalive)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--backend-keepalive needs a number of seconds (0 = none)"
            BACKEND_KEEPALIVE=$2; shift 2 ;;
        --haproxy)
            [[ $# -ge 2 && "$2" =~ ^(keep-alive|reuse-always|server-close)$ ]] \
                || die "--haproxy needs keep-alive, reuse-always or server-close"
            HAPROXY_MODE=$2; shift 2 ;;
        --lb-rules)
            [[ $# -ge 2 && "$2" =~ ^(all|large|none)$ ]] || die "--lb-rules needs all, large or none"
            LB_RULES=$2; shift 2 ;;
        --keepalive-kib)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--keepalive-kib needs a number of KiB (0 = none)"
            KA_KIB=$2; shift 2 ;;
        --bin)
            [[ $# -ge 2 && -n "$2" ]] || die "--bin needs a directory"
            BIN=$2; shift 2 ;;
        --json)
            [[ $# -ge 2 && -n "$2" ]] || die "--json needs a file name"
            JSON_OUT=$2; shift 2 ;;
        --no-setup) SETUP=0; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
IFS=, read -r -a CONNS_LEVELS <<<"$CONNS_LIST"
for c in "${CONNS_LEVELS[@]}"; do
    ((THREADS <= c)) || die "--threads ($THREADS) must not exceed any level of --connections ($c)"
done
[[ $(id -u) -eq 0 ]] || die "this benchmark needs root (network namespaces, iptables, nginx and HAProxy in namespaces): run it as root, e.g. sudo $0"
exec </dev/null

ensure_swift_on_path
if ((SETUP)); then "$SCRIPT_DIR/setup.sh"; fi
require_tools wrk haproxy nginx curl python3 ip
[[ "$BIN" == /* ]] || BIN="$PWD/$BIN"
[[ -z "$JSON_OUT" || "$JSON_OUT" == /* ]] || JSON_OUT="$PWD/$JSON_OUT"
ensure_release_bins "$BIN" "$ROOT"
export TCPSPLICE_BIN="$BIN"

# shellcheck source=Tests/netns/lib.sh
. "$ROOT/Tests/netns/lib.sh"
# install-rules.sh saves the sysctls it changes in a file per namespace: keep
# it in our temp dir, not in /run.
export TCPSPLICE_STATE_DIR="$TEST_TMP/rules-state"

VIP=10.77.9.1
PORT=80
B_IPS=("$SERVER_IP" 10.77.12.2 10.77.13.2)
FILE_BYTES=1024
CASES=(plain haproxy-lb splice-lb)
declare -A NOTES=()     # case -> notes, one per line
declare -A RSS=()       # process -> peak RSS (KiB)
note_case() {
    NOTES[$1]+="$2"$'\n'
    log "$1: PROBLEM: $2"
}

# --- topology: client, router, three backends (as Tests/netns/test_balancer.sh) ------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
topo_create
NS_B1=$NS_S
ns_add b2; NS_B2=$NS_LAST
ns_add b3; NS_B3=$NS_LAST
B_NS=("$NS_B1" "$NS_B2" "$NS_B3")
for i in 2 3; do
    ns=${B_NS[$((i - 1))]}
    ip -n "$ns" link add eth0 type veth peer name "rb$i" netns "$NS_R" || fail "cannot create the veth of backend $i"
    ip -n "$ns" addr add "10.77.1$i.2/24" dev eth0
    ip -n "$NS_R" addr add "10.77.1$i.1/24" dev "rb$i"
    ip -n "$ns" link set eth0 up
    ip -n "$NS_R" link set "rb$i" up
    end_link_queue "$ns" eth0
    ip -n "$ns" route add default via "10.77.1$i.1"
done
ip -n "$NS_R" addr add "$VIP/32" dev lo || fail "cannot put the service address on the router's lo"
for ns in "$NS_C" "$NS_R" "${B_NS[@]}"; do load_sysctls "$ns"; done
nsx "$NS_C" sysctl -qw net.ipv4.tcp_tw_reuse=1 >/dev/null || fail "cannot set tcp_tw_reuse in the client"
# The balancer's backend connections leave from 61000-65535: keep the router's
# ephemeral range below it (the kernel must never hand those ports out itself).
nsx "$NS_R" sysctl -qw net.ipv4.ip_local_port_range="10000 60999" >/dev/null \
    || fail "cannot set the router's ephemeral port range"
for i in 2 3; do
    wait_for 10 "the client to reach backend $i" nsx "$NS_C" ping -c1 -W1 "${B_IPS[$((i - 1))]}" >/dev/null
done

# --- the files and the three nginx ----------------------------------------------------------
WWW="$TEST_TMP/www"
mkdir -p "$WWW"
make_random_file "$WWW/big" "$HTTP_MIB"
BIG_SHA=$(sha256_of "$WWW/big")
head -c "$FILE_BYTES" /dev/urandom >"$WWW/f"
FILE_SHA=$(sha256_of "$WWW/f")
head -c $((KA_KIB * 1024)) /dev/urandom >"$WWW/ka"
KA_SHA=$(sha256_of "$WWW/ka")
for i in 1 2 3; do
    nginx_start_named "nginx-b$i" "${B_NS[$((i - 1))]}" "${B_IPS[$((i - 1))]}" "$PORT" "$WWW" "$BACKEND_KEEPALIVE"
done
log "three backends serving $HTTP_MIB MiB at /big and $FILE_BYTES bytes at /f (nginx keepalive_timeout $BACKEND_KEEPALIVE)"

# --- measurements -----------------------------------------------------------------------------
# CPU time (Scripts/lib/cpu_use.py): cpu_snapshot FILE records the machine's counters and
# every process's; daemon_cpu BEFORE AFTER prints the router daemons' (DAEMON_PIDS) CPU
# seconds between two snapshots, or null when the case has none.
CPU_USE="$TCPSPLICE_SCRIPTS_LIB/cpu_use.py"
cpu_snapshot() { python3 "$CPU_USE" snapshot "$1"; }
daemon_cpu() {
    if ((${#DAEMON_PIDS[@]} == 0)); then echo null; return; fi
    local pids="${DAEMON_PIDS[*]}" s
    s=$(python3 "$CPU_USE" diff "$1" "$2" --pids "${pids// /,}" | json_get pids_total_s) || s=null
    echo "${s:-null}"
}

vmhwm() { # vmhwm PID: peak RSS in KiB
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# Where the current case's router daemons are (for daemon_cpu), and whether
# spliced's counters are read (splice-lb).
DAEMON_PIDS=()
WITH_SPLICED=0

# status_save FILE: spliced's status as JSON in FILE (splice-lb only; "{}" otherwise).
status_save() {
    if ((WITH_SPLICED)); then
        splicectl status --json >"$1" 2>"$1.err" || { echo '{}' >"$1"; return 1; }
    else
        echo '{}' >"$1"
    fi
}

# status_delta CASE WHAT BEFORE AFTER EXPECT OUT: what spliced counted between the two
# statuses (balancer counters, queue drops, untracked flows) into OUT as JSON, and logs how
# long the ends' packets waited in the queues meanwhile; notes a
# problem when fewer than EXPECT joins happened (EXPECT is 90% of wrk's requests, or the
# number of downloads), or when packets were dropped at a queue or flows went untracked.
status_delta() {
    local case=$1 what=$2 line
    ((WITH_SPLICED)) || return 0
    python3 - "$3" "$4" "$5" "$6" >"$TEST_TMP/delta-$case-$what.txt" <<'PYEOF' || note_case "$case" "$what: could not read spliced's status"
import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:3])
expect, out = float(sys.argv[3]), sys.argv[4]
def bal(d, k):
    return (d.get("balancer") or {}).get(k) or 0
def qsum(d, *keys):
    return sum((q.get(k) or 0) for q in d.get("queues", []) for k in keys)
keys = ("prepared", "joined", "notYetDrained", "refused", "cancelled", "translated", "proxyPacketsDropped", "windowUpdates",
        "returned", "heldBack")
r = {k: bal(after, k) - bal(before, k) for k in keys}
r["queue_packets"] = qsum(after, "packets") - qsum(before, "packets")
r["queue_dropped"] = qsum(after, "queueDropped", "userDropped") - qsum(before, "queueDropped", "userDropped")
r["verdict_send_failures"] = qsum(after, "verdictSendFailures") - qsum(before, "verdictSendFailures")
r["flows_table_full"] = ((after.get("flows") or {}).get("tableFull") or 0) - ((before.get("flows") or {}).get("tableFull") or 0)
json.dump(r, open(out, "w"))
print("INFO spliced counted: " + ", ".join("%s %d" % kv for kv in r.items()))
if r["joined"] < expect:
    print("PROBLEM only %d joins for the %d expected: not every connection was joined (refused %d, cancelled %d)"
          % (r["joined"], expect, r["refused"], r["cancelled"]))
if r["queue_dropped"]:
    print("PROBLEM %d packets dropped at spliced's queues" % r["queue_dropped"])
if r["verdict_send_failures"]:
    print("PROBLEM %d verdict sends refused by the kernel" % r["verdict_send_failures"])
if r["flows_table_full"]:
    print("PROBLEM %d flows let through untracked (table full)" % r["flows_table_full"])
PYEOF
    while IFS= read -r line; do
        case "$line" in
            "PROBLEM "*) note_case "$case" "$what: ${line#PROBLEM }" ;;
            "INFO "*) log "$case: $what: ${line#INFO }" ;;
        esac
    done <"$TEST_TMP/delta-$case-$what.txt"
    # How long the ends' packets waited in spliced's queues meanwhile (Docs/packet-path.md,
    # "Waiting in the queue"; flowcheck, as the tests read it).
    local waits
    waits=$(flowcheck queue-waits --since "$3" <"$4" | tr '\n' ';') || note_case "$case" "$what: the queues' waits were not measured"
    [[ -z "$waits" ]] || log "$case: $what: waited in spliced's queues: $waits"
}

# download CASE URL: one download checked for the file's SHA-256, then $TRIES timed ones to
# /dev/null; the best, the daemons' CPU and spliced's counters in $TEST_TMP/dl-CASE.json.
download() {
    local case=$1 url=$2 best=0 ok=0 bps i body="$TEST_TMP/dl-$1.body"
    log "$case: downloading $HTTP_MIB MiB from $url (checked once, then the best of $TRIES)"
    status_save "$TEST_TMP/st-$case-dl-0.json" || note_case "$case" "splicectl status failed"
    cpu_snapshot "$TEST_TMP/cpu-$case-dl-0.json"
    if ! nsx "$NS_C" curl -sS --max-time 900 -o "$body" "$url" 2>"$TEST_TMP/dl-$case.err"; then
        note_case "$case" "download of $url failed: $(head -c 200 "$TEST_TMP/dl-$case.err" | tr '\n' ' ')"
    elif [[ "$(sha256_of "$body")" != "$BIG_SHA" ]]; then
        note_case "$case" "the download of $url arrived with another SHA-256 ($(stat -c %s "$body") bytes)"
    else
        rm -f "$body"
        for ((i = 1; i <= TRIES; i++)); do
            if ! bps=$(nsx "$NS_C" curl -sS --max-time 900 -o /dev/null -w '%{speed_download}' "$url" 2>>"$TEST_TMP/dl-$case.err"); then
                note_case "$case" "timed download $i of $url failed: $(tail -c 200 "$TEST_TMP/dl-$case.err" | tr '\n' ' ')"
                continue
            fi
            bps=$((${bps%.*} * 8))
            ok=$((ok + 1))
            if ((bps > best)); then best=$bps; fi
            log "$case: download $i: $((bps / 1000000)) Mbit/s"
        done
    fi
    rm -f "$body"
    cpu_snapshot "$TEST_TMP/cpu-$case-dl-1.json"
    status_save "$TEST_TMP/st-$case-dl-1.json" || note_case "$case" "splicectl status failed"
    # Every download of the case (the checked one and the timed ones) must have been joined
    # (with --lb-rules none, none).
    status_delta "$case" download "$TEST_TMP/st-$case-dl-0.json" "$TEST_TMP/st-$case-dl-1.json" \
        "$( [[ "$LB_RULES" == none ]] && echo 0 || echo $((ok + 1)) )" \
        "$TEST_TMP/spl-$case-dl.json"
    printf '{"bps": %s, "timed_ok": %d, "tries": %d, "daemon_cpu_s": %s}\n' \
        "$( ((ok > 0)) && echo "$best" || echo null)" "$ok" "$TRIES" \
        "$(daemon_cpu "$TEST_TMP/cpu-$case-dl-0.json" "$TEST_TMP/cpu-$case-dl-1.json")" \
        >"$TEST_TMP/dl-$case.json"
}

# log_lines: the line count of each backend's access log, space-separated (after a flush).
log_lines() {
    local i
    for i in 1 2 3; do
        printf '%s ' "$(wc -l <"$(nginx_requests_log "nginx-b$i")" 2>/dev/null || echo 0)"
    done
}

# backend_spread OUT FROM1 FROM2 FROM3: requests and connections each backend served since
# those line counts (its access log: "PID CONNECTION CONNECTION_REQUESTS STATUS BYTES"), as JSON.
backend_spread() {
    local out=$1
    shift
    python3 - "$out" "$@" "$(nginx_requests_log nginx-b1)" "$(nginx_requests_log nginx-b2)" "$(nginx_requests_log nginx-b3)" <<'PYEOF'
import json, sys
out, froms, logs = sys.argv[1], [int(x) for x in sys.argv[2:5]], sys.argv[5:8]
r = {"requests": [], "connections": [], "reused": []}
for start, path in zip(froms, logs):
    try:
        lines = open(path).read().splitlines()[start:]
    except FileNotFoundError:
        lines = []
    conns, reused = set(), 0
    for line in lines:
        f = line.split()
        if len(f) < 3:
            continue
        conns.add((f[0], f[1]))
        if f[2] != "1":
            reused += 1
    r["requests"].append(len(lines))
    r["connections"].append(len(conns))
    r["reused"].append(reused)
json.dump(r, open(out, "w"))
PYEOF
}

# short_requests CASE HOST CONNS [keepalive]: a curl check of /f, then wrk (a new connection per
# request); with `keepalive`, of /ka on wrk's persistent connections. wrk's result, the
# backends' spread, the daemons' CPU and spliced's counters in $TEST_TMP/wrk-CASE-cCONNS.json
# (wrk-CASE-ka-cCONNS.json).
short_requests() {
    local case=$1 url="http://$2:$PORT/f" conns=$3 got="$TEST_TMP/got-$1" rc=0 from tag="$1-c$3" line
    local close=(-H 'Connection: close') sha=$FILE_SHA
    if [[ "${4:-}" == keepalive ]]; then
        url="http://$2:$PORT/ka" tag="$1-ka-c$3" close=() sha=$KA_SHA
    fi
    if ! nsx "$NS_C" curl -sS --max-time 10 -H 'Connection: close' -o "$got" "$url" 2>"$TEST_TMP/curl-$tag.err"; then
        note_case "$case" "curl check of $url failed: $(head -c 200 "$TEST_TMP/curl-$tag.err" | tr '\n' ' ')"
    elif [[ "$(sha256_of "$got")" != "$sha" ]]; then
        note_case "$case" "curl check of $url: the file arrived with another SHA-256 ($(stat -c %s "$got") bytes)"
    fi
    sleep 1.5   # the backends' access logs flush within a second
    from=$(log_lines)
    status_save "$TEST_TMP/st-$tag-0.json" || note_case "$case" "splicectl status failed"
    log "$case: wrk -t $THREADS -c $conns -d ${DURATION}s --latency ${close[*]} $url"
    cpu_snapshot "$TEST_TMP/cpu0-$tag.json"
    nsx "$NS_C" timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$conns" -d "${DURATION}s" --latency \
        "${close[@]}" "$url" >"$TEST_TMP/wrk-$tag.out" 2>"$TEST_TMP/wrk-$tag.err" &
    local wrk_pid=$!
    # New connections timed while wrk runs (Scripts/lib/common.sh): connect included.
    if [[ -z "${4:-}" ]]; then
        probe_new_connections "$TEST_TMP/probe-$tag" "$url" "$DURATION"
        local probed
        probed=$(json_get ok <"$TEST_TMP/probe-$tag.json" 2>/dev/null || echo 0)
        [[ "$probed" == "$PROBES" ]] || note_case "$case" "c=$conns: only $probed of $PROBES probe requests (curl, new connections during wrk) answered 200"
    fi
    wait "$wrk_pid" || rc=$?
    cpu_snapshot "$TEST_TMP/cpu1-$tag.json"
    sed 's/^/    /' "$TEST_TMP/wrk-$tag.out" "$TEST_TMP/wrk-$tag.err"
    sleep 1.5
    status_save "$TEST_TMP/st-$tag-1.json" || note_case "$case" "splicectl status failed"
    # shellcheck disable=SC2086 # from: three numbers
    backend_spread "$TEST_TMP/spread-$tag.json" $from || note_case "$case" "could not read the backends' access logs"
    python3 - "$case" "$conns" "$url" "$rc" "$TEST_TMP/wrk-$tag.out" "$TEST_TMP/wrk-$tag.err" \
        "$TEST_TMP/wrk-$tag.json" "${DAEMON_PIDS[*]}" \
        "$TEST_TMP/probe-$tag.json" "$TEST_TMP/cpu0-$tag.json" "$TEST_TMP/cpu1-$tag.json" "$TEST_TMP/cpu-$tag.txt" \
        >"$TEST_TMP/wrk-$tag.problems" <<'PYEOF' || note_case "$case" "could not parse wrk's output (c=$conns)"
import json, os, sys
sys.path.insert(0, os.environ["TCPSPLICE_SCRIPTS_LIB"])
import cpu_use
import wrk_result
case, conns, url, rc, out_path, err_path, json_path, pids, probe_path, cpu0, cpu1, by_daemon = sys.argv[1:13]
out = open(out_path).read()
err = open(err_path).read().strip()
r = {"case": case, "connections": int(conns), "url": url, "wrk_status": int(rc), "problems": [],
     "daemon_cpu_s": None}
wrk_result.parse(out, err, rc, r)
if os.path.exists(probe_path):
    r["probe"] = json.load(open(probe_path))
# The whole machine while wrk ran (client, router and backends share its cores): how busy, and
# its busy CPU time per completed request, the figure that sets the rate once it is busy; and
# the router daemons' own CPU (logged by daemon: where splice-lb's time goes).
try:
    m = cpu_use.diff(json.load(open(cpu0)), json.load(open(cpu1)), r.get("requests") or 0, {}, pids.split())
    r["machine"] = m
    if pids:
        r["daemon_cpu_s"] = m["pids_total_s"]
        open(by_daemon, "w").write(", ".join("%s %.2f s" % (c, t) for c, t in m["pids_s"].values()))
except (OSError, ValueError) as e:
    r["problems"].append("could not account the CPU time: %s" % e)
json.dump(r, open(json_path, "w"))
for p in r["problems"]:
    print(p)
PYEOF
    [[ ! -s "$TEST_TMP/cpu-$tag.txt" ]] || log "$case: CPU by daemon during the run: $(cat "$TEST_TMP/cpu-$tag.txt")"
    while IFS= read -r line; do
        [[ -z "$line" ]] || note_case "$case" "c=$conns: $line"
    done <"$TEST_TMP/wrk-$tag.problems"
    local requests
    requests=$(json_get 'requests?0' <"$TEST_TMP/wrk-$tag.json" 2>/dev/null || echo 0)
    [[ "$requests" =~ ^[0-9]+$ ]] || requests=0
    # (--lb-rules large: the short answers are relayed, none joined.)
    local expect=$((requests * 9 / 10))
    [[ "$LB_RULES" == all || -n "${4:-}" ]] || expect=0
    status_delta "$case" "${4:+$4-}c=$conns" "$TEST_TMP/st-$tag-0.json" "$TEST_TMP/st-$tag-1.json" "$expect" \
        "$TEST_TMP/spl-$tag.json"
}

# alive_after CASE NAME: the background process NAME is still running.
alive_after() {
    bg_alive "$2" || note_case "$1" "$2 is no longer running after the run (see $(bg_log "$2"))"
}

# run_case CASE HOST: the download and every wrk level against HOST.
run_case() {
    local c
    download "$1" "http://$2:$PORT/big"
    for c in "${CONNS_LEVELS[@]}"; do short_requests "$1" "$2" "$c"; done
    ((KA_KIB > 0)) || return 0
    if ((WITH_SPLICED)); then
        splicectl rules add --action splice --per-request --name keepalive --position 1 >/dev/null \
            || fail "splicectl rules add --per-request failed"
    fi
    for c in "${CONNS_LEVELS[@]}"; do short_requests "$1" "$2" "$c" keepalive; done
    if ((WITH_SPLICED)); then
        splicectl rules remove "$(splicectl rules --json | python3 -c 'import json,sys; print([r["id"] for r in json.load(sys.stdin)["rules"] if r.get("name") == "keepalive"][0])')" >/dev/null \
            || fail "splicectl rules remove keepalive failed"
    fi
}

# --- 1. plain: straight to backend 1 through kernel forwarding -------------------------------
run_case plain "${B_IPS[0]}"

# --- 2. splice-lb: the splice balancer, every connection joined ---------------------------------
# (Before haproxy-lb: HAProxy closes each client connection first, which leaves the router
# with thousands of TIME-WAIT sockets of the service address; the balancer's accepted
# sockets close without a packet and leave none in haproxy-lb's way.)
on_cleanup "nsx '$NS_R' '$ROOT/Scripts/remove-rules.sh'"
rules_install "$NS_R" --ports "$PORT" --queues 0 --service "$VIP:$PORT"
SPLICED_BG=spliced-lb spliced_start --queue 0
proxy_start splice-proxy-lb --service "$VIP:$PORT=web" ${BENCH_PROXY_ARGS:-}
wait_for 10 "splice-proxy listening on $VIP:$PORT" _listening_on "$NS_R" "$VIP" "$PORT"
splicectl pools add web --method round-robin --backend "${B_IPS[0]}:$PORT" --backend "${B_IPS[1]}:$PORT" \
    --backend "${B_IPS[2]}:$PORT" >/dev/null || fail "splicectl pools add web failed"
if [[ "$LB_RULES" == all ]]; then
    splicectl rules default --action splice >/dev/null || fail "splicectl rules default failed"
elif [[ "$LB_RULES" == none ]]; then
    splicectl rules default --action proxy >/dev/null || fail "splicectl rules default failed"
else
    splicectl rules default --action proxy >/dev/null || fail "splicectl rules default failed"
    splicectl rules add --content-length-above 65536 --action splice --name large >/dev/null \
        || fail "splicectl rules add --content-length-above failed"
fi
log "pools:"$'\n'"$(splicectl pools)"
log "rules:"$'\n'"$(splicectl rules)"
WITH_SPLICED=1
DAEMON_PIDS=("$(bg_pid spliced-lb)" "$(bg_pid splice-proxy-lb)")
run_case splice-lb "$VIP"
alive_after splice-lb spliced-lb
alive_after splice-lb splice-proxy-lb
RSS[spliced]=$(vmhwm "$(bg_pid spliced-lb)")
RSS[splice-proxy]=$(vmhwm "$(bg_pid splice-proxy-lb)")
log "spliced status after the runs:"
splicectl status | sed 's/^/    /' || true
WITH_SPLICED=0
bg_kill splice-proxy-lb TERM || true
bg_kill spliced-lb TERM || log "spliced exited with status $? on SIGTERM"
rules_remove "$NS_R"

# --- 3. haproxy-lb: HAProxy in mode http, round robin over the three backends -----------------
HAPROXY_CFG="$TEST_TMP/haproxy-lb.cfg"
{
    echo "# generated by tcpsplice Scripts/bench-balancer.sh"
    echo "global"
    echo "    maxconn 9900"
    echo "defaults"
    echo "    mode http"
    echo "    maxconn 9900"
    echo "    timeout connect 5s"
    echo "    timeout client 10m"
    echo "    timeout server 10m"
    echo "    timeout http-keep-alive 10s"
    [[ "$HAPROXY_MODE" != server-close ]] || echo "    option http-server-close"
    echo "frontend lb"
    echo "    bind $VIP:$PORT"
    echo "    default_backend web"
    echo "backend web"
    echo "    balance roundrobin"
    [[ "$HAPROXY_MODE" != reuse-always ]] || echo "    http-reuse always"
    for i in 1 2 3; do echo "    server b$i ${B_IPS[$((i - 1))]}:$PORT"; done
} >"$HAPROXY_CFG"
nsx "$NS_R" haproxy -c -q -f "$HAPROXY_CFG" || fail "haproxy rejects the generated configuration $HAPROXY_CFG"
bg_start haproxy-lb "$NS_R" haproxy -db -f "$HAPROXY_CFG"
wait_for 10 "haproxy listening on $VIP:$PORT" _listening_on "$NS_R" "$VIP" "$PORT"
log "haproxy-lb running (pid $(bg_pid haproxy-lb), $(awk '/^Threads:/ { print $2 }' "/proc/$(bg_pid haproxy-lb)/status") threads): $(grep -v '^#' "$HAPROXY_CFG" | tr -s ' ' | tr '\n' ';')"
DAEMON_PIDS=("$(bg_pid haproxy-lb)")
run_case haproxy-lb "$VIP"
alive_after haproxy-lb haproxy-lb
RSS[haproxy]=$(vmhwm "$(bg_pid haproxy-lb)")
bg_kill haproxy-lb TERM || true
DAEMON_PIDS=()

# --- report -------------------------------------------------------------------------------------
for c in "${CASES[@]}"; do
    printf '%s' "${NOTES[$c]:-}" >"$TEST_TMP/notes-$c.txt"
done
printf '{"spliced": "%s", "splice-proxy": "%s", "haproxy": "%s"}\n' \
    "${RSS[spliced]:-}" "${RSS[splice-proxy]:-}" "${RSS[haproxy]:-}" >"$TEST_TMP/rss.json"
echo
echo "The layer-7 balancer against HAProxy as an HTTP balancer, three backends (nginx), $(nproc) cores ($(uname -r)); load average before the run: $LOAD_BEFORE"
case "$HAPROXY_MODE" in
    keep-alive) HAPROXY_DESC="default keep-alive, http-reuse safe" ;;
    reuse-always) HAPROXY_DESC="keep-alive, http-reuse always" ;;
    server-close) HAPROXY_DESC="option http-server-close" ;;
esac
echo "haproxy-lb: HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }'), mode http, balance roundrobin, $HAPROXY_DESC; backends' nginx keepalive_timeout $BACKEND_KEEPALIVE"
python3 - "$TEST_TMP" "$HTTP_MIB" "$TRIES" "$DURATION" "$THREADS" "$FILE_BYTES" "$(nproc)" "$(uname -r)" \
    "$LOAD_BEFORE" "$BACKEND_KEEPALIVE" "$HAPROXY_MODE" "$CONNS_LIST" "$KA_KIB" "${CASES[@]}" <<'PYEOF'
import json, os, sys, time
tmp, mib, tries, duration, threads, fbytes, cores, kernel, load, keepalive, haproxy_mode, conns_list, ka_kib = sys.argv[1:14]
names = sys.argv[14:]
levels = [int(x) for x in conns_list.split(",")]
def load_json(p):
    try:
        return json.load(open(os.path.join(tmp, p)))
    except Exception:
        return None
def ratio(a, b):
    return round(a / b, 3) if a and b else None
def f(v, fmt):
    return fmt % v if v is not None else "n/a"
cases = {}
for n in names:
    c = {"case": n, "download": load_json("dl-%s.json" % n) or {"bps": None}}
    sp = load_json("spl-%s-dl.json" % n)
    if sp is not None:
        c["download"]["spliced"] = sp
    for kind, prefix in (("requests", ""), ("keepalive", "ka-")):
        c[kind] = []
        if kind == "keepalive" and int(ka_kib) == 0:
            continue
        for lv in levels:
            w = load_json("wrk-%s-%sc%d.json" % (n, prefix, lv)) or {"case": n, "connections": lv, "rps": None}
            w.pop("problems", None)
            w["backends"] = load_json("spread-%s-%sc%d.json" % (n, prefix, lv))
            sp = load_json("spl-%s-%sc%d.json" % (n, prefix, lv))
            if sp is not None:
                w["spliced"] = sp
            c[kind].append(w)
    c["problems"] = [x for x in open(os.path.join(tmp, "notes-%s.txt" % n)).read().splitlines() if x]
    c["ok"] = not c["problems"]
    cases[n] = c
def dl(n):
    return (cases.get(n) or {}).get("download", {}).get("bps")
def rps(n, lv, kind="requests"):
    for w in (cases.get(n) or {}).get(kind, []):
        if w["connections"] == lv:
            return w.get("rps")
for n, c in cases.items():
    d = c["download"]
    d["vs_plain"] = ratio(d.get("bps"), dl("plain"))
    d["vs_haproxy_lb"] = ratio(d.get("bps"), dl("haproxy-lb"))
    for kind in ("requests", "keepalive"):
        for w in c[kind]:
            w["vs_plain"] = ratio(w.get("rps"), rps("plain", w["connections"], kind))
            w["vs_haproxy_lb"] = ratio(w.get("rps"), rps("haproxy-lb", w["connections"], kind))

print()
print("1. HTTP download of %s MiB (curl, best of %s; one more checked by SHA-256):" % (mib, tries))
row = "%-11s %8s %9s %14s %9s %14s  %s"
print(row % ("path", "Gbit/s", "vs plain", "vs haproxy-lb", "joined", "daemon CPU s", "problems"))
for n in names:
    d = cases[n]["download"]
    sp = d.get("spliced")
    joined = ("%d of %d" % (sp["joined"], (d.get("timed_ok") or 0) + 1)) if sp else ""
    print(row % (n, f(d.get("bps") and d["bps"] / 1e9, "%.2f"), f(d.get("vs_plain"), "%.2f"),
                 f(d.get("vs_haproxy_lb"), "%.2f") if n != "plain" else "",
                 joined, f(d.get("daemon_cpu_s"), "%.2f") if n != "plain" else "",
                 "none" if cases[n]["ok"] else "see below"))
def request_table(kind, title):
  print()
  print(title)
  row = "%-11s %5s %9s %9s %14s %8s %8s %13s %16s %8s %20s %20s %16s %7s %10s %6s %11s"
  print(row % ("path", "conns", "req/s", "vs plain", "vs haproxy-lb", "p50 ms", "p99 ms", "new conn ms", "sock err c/r/w/t",
               "non-2xx", "backend requests", "backend conns", "joined", "CPU s", "CPU us/req", "busy%", "box us/req"))
  for n in names:
    for w in cases[n][kind]:
        e = w.get("errors") or {}
        errs = "/".join(str(e.get(k, "?")) for k in ("connect", "read", "write", "timeout"))
        b = w.get("backends") or {}
        sp = w.get("spliced")
        joined = ("%d of %d" % (sp["joined"], sp["prepared"])) if sp else ""
        cpu = w.get("daemon_cpu_s")
        per_req = cpu * 1e6 / w["requests"] if cpu is not None and w.get("requests") else None
        m = w.get("machine") or {}
        box = m.get("busy_ms_per_request")
        print(row % (n, w["connections"], f(w.get("rps"), "%.0f"), f(w.get("vs_plain"), "%.2f"),
                     f(w.get("vs_haproxy_lb"), "%.2f") if n != "plain" else "",
                     f(w.get("p50_ms"), "%.2f"), f(w.get("p99_ms"), "%.2f"),
                     "%s/%s" % (f((w.get("probe") or {}).get("connect_ms_p50"), "%.1f"), f((w.get("probe") or {}).get("total_ms_p50"), "%.1f")),
                     errs, w.get("non_2xx_3xx", "n/a"),
                     "/".join(map(str, b.get("requests", []))) or "n/a",
                     "/".join(map(str, b.get("connections", []))) or "n/a",
                     joined, f(cpu, "%.2f") if n != "plain" else "", f(per_req, "%.0f") if n != "plain" else "",
                     f(m.get("busy_pct"), "%.0f"), f(box and box * 1000, "%.0f")))
request_table("requests", "2. Short requests: wrk -t %s -d %ss, a new connection per request (Connection: close), %s bytes:"
              % (threads, duration, fbytes))
if int(ka_kib):
    request_table("keepalive", "3. Keep-alive requests: wrk -t %s -d %ss on its persistent connections, %s KiB (splice-lb: a --per-request rule,"
                  " each response joined for itself and handed back):" % (threads, duration, ka_kib))
print("   (new conn ms: medians of connect and whole request of 15 curls on new connections while wrk runs;")
print("   backend requests/conns: what backends 1/2/3 logged during the wrk run; joined: the joins spliced")
print("   counted during it, of those the proxy asked for (the rest were refused or cancelled and stayed in")
print("   the proxy); CPU: the router daemons' user+system time during the run, and per completed request;")
print("   busy%, box us/req: the whole machine (client, router, backends share its cores) while wrk ran, how")
print("   busy its cores were and its busy CPU time per completed request: once it is busy, the rate is")
print("   its cores divided by this, wherever the time went)")
print()
print("Ratios and aims (this run):")
aims = {}
r = ratio(dl("splice-lb"), dl("haproxy-lb"))
aims["throughput_vs_haproxy_lb"] = r
print("   download   splice-lb / haproxy-lb %s (aim >= 1.0: %s), haproxy-lb / plain %s, splice-lb / plain %s"
      % (f(r, "%.2f"), "n/a" if r is None else ("met" if r >= 1.0 else "NOT met"),
         f(ratio(dl("haproxy-lb"), dl("plain")), "%.2f"), f(ratio(dl("splice-lb"), dl("plain")), "%.2f")))
for lv in levels:
    r = ratio(rps("splice-lb", lv), rps("haproxy-lb", lv))
    aims["rate_vs_haproxy_lb_c%d" % lv] = r
    print("   req/s c=%-3d splice-lb / haproxy-lb %s (aim >= 1.0: %s), haproxy-lb / plain %s, splice-lb / plain %s"
          % (lv, f(r, "%.2f"), "n/a" if r is None else ("met" if r >= 1.0 else "NOT met"),
             f(ratio(rps("haproxy-lb", lv), rps("plain", lv)), "%.2f"), f(ratio(rps("splice-lb", lv), rps("plain", lv)), "%.2f")))
for lv in levels if int(ka_kib) else []:
    r = ratio(rps("splice-lb", lv, "keepalive"), rps("haproxy-lb", lv, "keepalive"))
    aims["keepalive_vs_haproxy_lb_c%d" % lv] = r
    print("   keep-alive c=%-3d splice-lb / haproxy-lb %s (no aim), haproxy-lb / plain %s"
          % (lv, f(r, "%.2f"), f(ratio(rps("haproxy-lb", lv, "keepalive"), rps("plain", lv, "keepalive")), "%.2f")))
rss = load_json("rss.json") or {}
print()
print("Peak RSS (VmHWM, KiB): spliced %s, splice-proxy %s, haproxy %s"
      % (rss.get("spliced") or "n/a", rss.get("splice-proxy") or "n/a", rss.get("haproxy") or "n/a"))
problems = [(n, p) for n in names for p in cases[n]["problems"]]
if problems:
    print()
    print("Problems:")
    for n, p in problems:
        print("  %s: %s" % (n, p))
summary = {
    "benchmark": "balancer", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "http_mib": int(mib), "tries": int(tries), "duration_s": int(duration), "threads": int(threads),
    "connections": levels, "file_bytes": int(fbytes), "keepalive_kib": int(ka_kib), "cores": int(cores), "kernel": kernel,
    "loadavg_before": load, "backend_keepalive_s": int(keepalive), "haproxy_mode": haproxy_mode,
    "peak_rss_kib": rss, "aims": aims, "ok": not problems, "cases": [cases[n] for n in names],
}
json.dump(summary, open(os.path.join(tmp, "summary.json"), "w"), sort_keys=True)
PYEOF
[[ -z "$JSON_OUT" ]] || cp "$TEST_TMP/summary.json" "$JSON_OUT"
[[ "$(json_get ok <"$TEST_TMP/summary.json")" == True ]] || exit 1
