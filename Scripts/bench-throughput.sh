#!/usr/bin/env bash
# tcpsplice benchmark (not part of the test suite): TCP throughput through the
# router, in one run on one client/router/server topology of namespaces:
#
#   plain         kernel forwarding, no rules
#   spliced       the rules + spliced (release build, .build/release), bypass mode
#   haproxy       HAProxy (Debian's package) alone, mode tcp, non-transparent: the
#                 client connects to the router's address, haproxy to the server
#   resil-sp      the resilient path: the rules with --tproxy-port, spliced
#                 --proxy-ports, splice-proxy in the path (flows resilient)
#   resil-ha      the resilient path with HAProxy as the transparent proxy
#                 (Docs/resilient.md), watched by spliced through its pidfile
#
# Each with iperf3 (-J, parsed with python3), one stream and 4 streams. Prints
# Gbit/s per case and the ratio to plain forwarding as a table, and the peak RSS
# (VmHWM) of spliced, splice-proxy and haproxy in each case. The resilient cases
# check that the iperf3 flows really went through the proxy (resilient flows
# counted by spliced, none failed over).
#
# Then an HTTP download of a large file (--http-mib, default 1024 MiB) from nginx
# with curl, best of three, each case checked once for the file's SHA-256:
#
#   http-plain     kernel forwarding, no rules
#   http-haproxy   HAProxy alone, mode http, non-transparent (the L7 reference)
#   http-resil     the resilient path, splice-proxy relaying the whole download
#   http-spliced   the splice path: the rule "GET -> splice", the engine reads
#                  the request and splices the flow (Docs/splicing.md); checked
#                  spliced from the request
#   http-spliced-px  the same, splice-proxy reading the request (request reader
#                  `proxy`) and stepping out; checked spliced
#
# and the connection rate of short requests (Scripts/bench-connrate.sh --cases
# plain,haproxy,haproxy-http,resil-sp,spliced,spliced-px: wrk, a new connection per
# request).
#
# Then the layer-7 balancer against HAProxy as an HTTP balancer over the same
# three backends (Scripts/bench-balancer.sh --time SECONDS --http-mib MIB: plain,
# haproxy-lb, splice-lb; the download in Gbit/s and wrk's requests/s, on a
# topology of its own).
#
# Usage: Scripts/bench-throughput.sh [--time SECONDS] [--http-mib MIB] [--no-build]
#        [--no-setup] [--no-connrate] [--no-balancer]
#        (as root; ~13 x SECONDS plus ~3 min, and a release build unless --no-build)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

DURATION=10
BUILD=1
SETUP=1
HTTP_MIB=1024
CONNRATE=1
BALANCER=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --time|-t)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--time needs a number of seconds"
            DURATION=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --http-mib)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -ge 1 ]] || die "--http-mib needs a number of MiB"
            HTTP_MIB=$2; shift 2 ;;
        --no-connrate) CONNRATE=0; shift ;;
        --no-balancer) BALANCER=0; shift ;;
        --no-setup) SETUP=0; shift ;;
        -h|--help) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
exec </dev/null

ensure_swift_on_path
if ((SETUP)); then "$SCRIPT_DIR/setup.sh"; fi
if ((BUILD)); then
    (cd "$ROOT" && swift build -c release) || die "release build failed"
fi
export TCPSPLICE_BIN="${TCPSPLICE_BIN:-$ROOT/.build/release}"

# shellcheck source=Tests/netns/lib.sh
. "$ROOT/Tests/netns/lib.sh"
require_tools iperf3 haproxy

PORT=5201
RESULTS="$TEST_TMP/results.tsv"   # case, streams, bits/s (or n/a), note
: >"$RESULTS"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
topo_create
bg_start iperf3-server "$NS_S" iperf3 -s -p "$PORT"
wait_port "$NS_S" "$PORT"

# run_iperf CASE HOST STREAMS: one iperf3 run from the client; appends a row.
run_iperf() {
    local case=$1 host=$2 streams=$3 json="$TEST_TMP/$1-P$3.json" bps
    log "$case: iperf3 -c $host -P $streams -t $DURATION"
    if ! nsx "$NS_C" timeout $((DURATION + 30)) iperf3 -c "$host" -p "$PORT" -P "$streams" -t "$DURATION" -J \
        >"$json" 2>"$TEST_TMP/$case-P$streams.err"; then
        log "$case: iperf3 failed: $(head -c 300 "$json" "$TEST_TMP/$case-P$streams.err" 2>/dev/null | tr '\n' ' ')"
        printf '%s\t%s\tn/a\tiperf3 failed\n' "$case" "$streams" >>"$RESULTS"
        return 0
    fi
    bps=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit(d["error"])
print(int(d["end"]["sum_received"]["bits_per_second"]))' "$json") || bps=n/a
    printf '%s\t%s\t%s\t\n' "$case" "$streams" "$bps" >>"$RESULTS"
}

vmhwm() { # vmhwm PID: peak RSS in KiB
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# --- plain forwarding ---------------------------------------------------------
run_iperf plain "$SERVER_IP" 1
run_iperf plain "$SERVER_IP" 4

have_tcpsplice() {
    [[ -x "$TCPSPLICE_BIN/spliced" && -x "$TCPSPLICE_BIN/splicectl" && -x "$TCPSPLICE_BIN/splice-proxy" ]]
}
declare -A RSS=()
NOTES=()
MISSING=""

# resilient_check CASE MIN_FLOWS: spliced counted at least MIN_FLOWS resilient
# flows and no failover (the flows went through the proxy, and stayed there).
resilient_check() {
    local st flows failovers
    st=$(status_json)
    flows=$(printf '%s' "$st" | json_get resilient.flows)
    failovers=$(printf '%s' "$st" | json_get resilient.failovers)
    log "$1: spliced counted $flows resilient flows, $failovers failovers"
    if ((flows < $2 || failovers != 0)); then
        NOTES+=("$1: only $flows resilient flows (expected >= $2) or $failovers failovers: the path was not the proxy's")
        return 1
    fi
}

if have_tcpsplice; then
    # --- rules + spliced (bypass) ---------------------------------------------------
    rules_install "$NS_R" --ports "$PORT" --queues 0 --family 4
    SPLICED_BG=spliced-bypass spliced_start --queue 0
    run_iperf spliced "$SERVER_IP" 1
    run_iperf spliced "$SERVER_IP" 4
    RSS[spliced-bypass]=$(vmhwm "$(bg_pid spliced-bypass)")
    log "spliced status after the runs:"
    splicectl status | sed 's/^/    /' || true
    bg_kill spliced-bypass TERM || log "spliced exited with status $? on SIGTERM"
    rules_remove "$NS_R" --family 4
else
    MISSING="no release build of spliced/splicectl/splice-proxy in $TCPSPLICE_BIN"
    log "tcpsplice cases skipped: $MISSING"
    for c in spliced resil-sp resil-ha; do
        printf '%s\t1\tn/a\t%s\n%s\t4\tn/a\t%s\n' "$c" "$MISSING" "$c" "$MISSING" >>"$RESULTS"
    done
fi

# --- haproxy alone, mode tcp --------------------------------------------------------
haproxy_alone_start haproxy-plain tcp "$PORT"
run_iperf haproxy "$ROUTER_IP_C" 1
run_iperf haproxy "$ROUTER_IP_C" 4
RSS[haproxy-alone]=$(vmhwm "$(bg_pid haproxy-plain)")
bg_kill haproxy-plain TERM || true

if have_tcpsplice; then
    # --- resilient path, splice-proxy -------------------------------------------------
    rules_install "$NS_R" --ports "$PORT" "${RESILIENT_RULE_QUEUES[@]}" --family 4 --tproxy-port "$TPROXY_PORT"
    SPLICED_BG=spliced-rsp spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT"
    proxy_start splice-proxy --no-ipv6
    run_iperf resil-sp "$SERVER_IP" 1
    run_iperf resil-sp "$SERVER_IP" 4
    resilient_check resil-sp 7 || true   # 2 control + 1 + 4 data connections
    RSS[spliced-resil-sp]=$(vmhwm "$(bg_pid spliced-rsp)")
    RSS[splice-proxy]=$(vmhwm "$(bg_pid splice-proxy)")
    log "spliced status after the runs:"
    splicectl status | sed 's/^/    /' || true
    bg_kill splice-proxy TERM || true
    bg_kill spliced-rsp TERM || true

    # --- resilient path, HAProxy as the transparent proxy ------------------------------
    SPLICED_BG=spliced-rha spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT" --proxy-pidfile "$TEST_TMP/haproxy.pid"
    haproxy_start
    wait_proxy_registered "$HAPROXY_PID" 10
    run_iperf resil-ha "$SERVER_IP" 1
    run_iperf resil-ha "$SERVER_IP" 4
    resilient_check resil-ha 7 || true
    RSS[spliced-resil-ha]=$(vmhwm "$(bg_pid spliced-rha)")
    RSS[haproxy-transparent]=$(vmhwm "$HAPROXY_PID")
    log "spliced status after the runs:"
    splicectl status | sed 's/^/    /' || true
    kill -TERM "$HAPROXY_PID" 2>/dev/null || true
    bg_kill spliced-rha TERM || true
    rules_remove "$NS_R" --family 4
fi

# --- HTTP: a large download through each path ------------------------------------------
HTTP_PORT=80
HTTP_RESULTS="$TEST_TMP/http.tsv"   # case, bits/s (best of three) or n/a, note
: >"$HTTP_RESULTS"
CROWD_DIR="$TEST_TMP/www"
mkdir -p "$CROWD_DIR"
make_random_file "$CROWD_DIR/big" "$HTTP_MIB"
HTTP_SHA=$(sha256_of "$CROWD_DIR/big")
nginx_start "$NS_S" "$HTTP_PORT"
# http_case CASE URL: one checked download (SHA-256), then three timed ones to /dev/null.
http_case() {
    local case=$1 url=$2 best=0 bps i
    if ! nsx "$NS_C" curl -sS --max-time 600 -o "$TEST_TMP/http-$case.body" "$url" 2>"$TEST_TMP/http-$case.err"; then
        printf '%s\tn/a\tcurl failed: %s\n' "$case" "$(head -c 200 "$TEST_TMP/http-$case.err" | tr '\n' ' ')" >>"$HTTP_RESULTS"
        return 0
    fi
    if [[ "$(sha256_of "$TEST_TMP/http-$case.body")" != "$HTTP_SHA" ]]; then
        printf '%s\tn/a\tthe file arrived with another SHA-256\n' "$case" >>"$HTTP_RESULTS"
        NOTES+=("$case: the downloaded file differs")
        return 0
    fi
    rm -f "$TEST_TMP/http-$case.body"
    for i in 1 2 3; do
        bps=$(nsx "$NS_C" curl -sS --max-time 600 -o /dev/null -w '%{speed_download}' "$url" 2>/dev/null) || continue
        bps=${bps%.*}
        ((bps * 8 > best)) && best=$((bps * 8))
    done
    log "$case: best of three $((best / 1000000)) Mbit/s"
    printf '%s\t%s\t\n' "$case" "$best" >>"$HTTP_RESULTS"
}
http_case http-plain "http://$SERVER_IP:$HTTP_PORT/big"

haproxy_alone_start haproxy-http http "$HTTP_PORT" 1000 600s
http_case http-haproxy "http://$ROUTER_IP_C:$HTTP_PORT/big"
RSS[haproxy-http]=$(vmhwm "$(bg_pid haproxy-http)")
bg_kill haproxy-http TERM || true

if have_tcpsplice; then
    rules_install "$NS_R" --ports "$HTTP_PORT" "${RESILIENT_RULE_QUEUES[@]}" --family 4 --tproxy-port "$TPROXY_PORT"
    SPLICED_BG=spliced-http spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$HTTP_PORT"
    proxy_start splice-proxy-http --no-ipv6
    http_case http-resil "http://$SERVER_IP:$HTTP_PORT/big"
    splicectl rules add --method GET --action splice >/dev/null || fail "splicectl rules add failed"
    d0=$(status_json | json_get splices.decidedAtRequest)
    http_case http-spliced "http://$SERVER_IP:$HTTP_PORT/big"
    d1=$(status_json | json_get splices.decidedAtRequest)
    ((d1 - d0 >= 4)) || NOTES+=("http-spliced: only $((d1 - d0)) of the 4 downloads were spliced by the engine from the request")
    log "http-spliced: $((d1 - d0)) downloads spliced by the engine from the request"
    splicectl rules default --request-reader proxy >/dev/null || fail "splicectl rules default failed"
    d0=$(status_json | json_get splices.drained)
    http_case http-spliced-px "http://$SERVER_IP:$HTTP_PORT/big"
    d1=$(status_json | json_get splices.drained)
    ((d1 - d0 >= 4)) || NOTES+=("http-spliced-px: only $((d1 - d0)) of the 4 downloads were spliced drained by the proxy")
    log "http-spliced-px: $((d1 - d0)) downloads spliced drained by the proxy; status.splices $(status_json | json_get splices)"
    RSS[splice-proxy-http]=$(vmhwm "$(bg_pid splice-proxy-http)")
    bg_kill splice-proxy-http TERM || true
    bg_kill spliced-http TERM || true
    rules_remove "$NS_R" --family 4
fi
bg_kill nginx TERM || true

# --- report -------------------------------------------------------------------------
echo
echo "TCP throughput through the router, iperf3 -t $DURATION, $(nproc) cores ($(uname -r)); load average before the run: $LOAD_BEFORE"
python3 - "$RESULTS" <<'EOF'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
plain = {s: float(b) for c, s, b, _ in rows if c == "plain" and b != "n/a"}
print("%-10s %8s %12s %10s  %s" % ("path", "streams", "Gbit/s", "vs plain", ""))
for c, s, b, note in rows:
    if b == "n/a":
        print("%-10s %8s %12s %10s  %s" % (c, s, "n/a", "", note))
        continue
    g = float(b) / 1e9
    ratio = "%.2f" % (float(b) / plain[s]) if plain.get(s) else "-"
    print("%-10s %8s %12.2f %10s  %s" % (c, s, g, ratio, note))
EOF
echo
echo "HTTP download of $HTTP_MIB MiB (nginx -> curl), best of three:"
python3 - "$HTTP_RESULTS" <<'PYREPORT'
import sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
bps = {c: float(b) for c, b, _ in rows if b != "n/a"}
print("%-16s %10s %10s %12s  %s" % ("path", "Gbit/s", "vs plain", "vs haproxy", ""))
for c, b, note in rows:
    if b == "n/a":
        print("%-16s %10s %10s %12s  %s" % (c, "n/a", "", "", note))
        continue
    r = lambda k: "%.2f" % (float(b) / bps[k]) if bps.get(k) else "-"
    print("%-16s %10.2f %10s %12s  %s" % (c, float(b) / 1e9, r("http-plain"), r("http-haproxy"), note))
PYREPORT
echo
echo "peak RSS (VmHWM, KiB):"
for k in spliced-bypass spliced-resil-sp splice-proxy spliced-resil-ha haproxy-alone haproxy-transparent haproxy-http splice-proxy-http; do
    printf '    %-20s %s\n' "$k" "${RSS[$k]:-n/a}"
done
for n in "${NOTES[@]}"; do
    echo "bench-throughput: $n" >&2
done
if [[ -n "$MISSING" ]]; then
    echo "bench-throughput: the tcpsplice cases were not measured: $MISSING" >&2
    exit 1
fi
status=0
[[ ${#NOTES[@]} -eq 0 ]] || status=1
if ((CONNRATE)); then
    # The connection rate of short requests, in the same run (its own topology).
    echo
    "$SCRIPT_DIR/bench-connrate.sh" --no-setup --bin "$TCPSPLICE_BIN" --cases plain,haproxy,haproxy-http,resil-sp,spliced,spliced-px --time "$DURATION" \
        || status=1
fi
if ((BALANCER)); then
    # The layer-7 balancer against HAProxy as a balancer, in the same run (its own topology).
    echo
    "$SCRIPT_DIR/bench-balancer.sh" --no-setup --bin "$TCPSPLICE_BIN" --time "$DURATION" --http-mib "$HTTP_MIB" \
        || status=1
fi
exit "$status"
