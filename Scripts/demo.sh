#!/usr/bin/env bash
# tcpsplice demo: the application proxy dies in the middle of a download that
# goes through it, and the download does not notice.
#
# Builds the release binaries, creates a client/router/server topology of
# network namespaces (Tests/netns/lib.sh), installs the rules with the resilient
# mode's additions in the router, starts spliced (port 8080 claimed for the
# proxy) and splice-proxy, serves a 64 MiB random file over HTTP from the server
# (python3 -m http.server) and downloads it from the client with
# `curl --limit-rate` (~7 s). The flow goes through splice-proxy: `splicectl
# flows` shows it in mode resilient. Halfway, splice-proxy is killed with
# SIGKILL; `splicectl flows` then shows the flow in bypass, reason proxy-died.
# The download completes; both SHA-256 are printed with MATCH or MISMATCH. Exits
# non-zero on a mismatch. Everything is cleaned up, always.
#
# Usage: Scripts/demo.sh [--no-build] [--no-setup]   (as root)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

BUILD=1
SETUP=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --no-setup) SETUP=0; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
exec </dev/null

if [[ -t 1 ]]; then
    BOLD=$'\033[1m' GREEN=$'\033[1;32m' RED=$'\033[1;31m' PLAIN=$'\033[0m'
else
    BOLD="" GREEN="" RED="" PLAIN=""
fi
step() {
    printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"
}

ensure_swift_on_path
if ((SETUP)); then
    step "Checking the machine (Scripts/setup.sh)"
    "$SCRIPT_DIR/setup.sh"
fi
if ((BUILD)); then
    step "Building the release binaries (swift build -c release)"
    (cd "$ROOT" && swift build -c release) || die "release build failed"
fi
# The binaries: .build/release unless TCPSPLICE_BIN names another directory.
export TCPSPLICE_BIN="${TCPSPLICE_BIN:-$ROOT/.build/release}"

# The netns harness: topology, background processes, cleanup on any exit.
# shellcheck source=Tests/netns/lib.sh
. "$ROOT/Tests/netns/lib.sh"
need_bin spliced >/dev/null
need_bin splicectl >/dev/null
need_bin splice-proxy >/dev/null

PORT=8080
SIZE_MIB=64
RATE=9M   # curl's --limit-rate: 64 MiB at 9 MiB/s is ~7 s

step "Creating the network: client -- router -- server (three network namespaces)"
topo_create
# A small receive buffer on the client, so that curl's slow reading slows the
# server down and the download really is in the middle when the proxy dies (not
# sitting whole in the client's socket buffer).
nsx "$NS_C" sysctl -qw net.ipv4.tcp_rmem="4096 131072 524288"

step "Installing the tcpsplice rules in the router (port $PORT; queue 0 for the ends, 1 for the proxy, 2 for handshakes; transparent proxy port $TPROXY_PORT)"
rules_install "$NS_R" --ports "$PORT" "${RESILIENT_RULE_QUEUES[@]}" --family 4 --tproxy-port "$TPROXY_PORT"
nsx "$NS_R" iptables -t mangle -S TCPSPLICE_PRE | sed 's/^/    /'
nsx "$NS_R" iptables -t raw -S TCPSPLICE_OUT | sed 's/^/    /'

step "Starting spliced (new flows to port $PORT go through the proxy) and splice-proxy in the router"
spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$PORT"
proxy_start splice-proxy
echo "    spliced pid $(bg_pid spliced), splice-proxy pid $(bg_pid splice-proxy), control socket $CTL_SOCK"

step "Serving a $SIZE_MIB MiB random file from the server (python3 -m http.server)"
mkdir -p "$TEST_TMP/www"
make_random_file "$TEST_TMP/www/data.bin" "$SIZE_MIB"
SRC_SHA=$(sha256_of "$TEST_TMP/www/data.bin")
bg_start http "$NS_S" python3 -m http.server "$PORT" --bind "$SERVER_IP" --directory "$TEST_TMP/www"
wait_port "$NS_S" "$PORT"
echo "    http://$SERVER_IP:$PORT/data.bin"

step "Downloading it from the client: curl --limit-rate $RATE (about 7 seconds)"
OUT="$TEST_TMP/download.bin"
bg_start curl "$NS_C" curl -sS --fail --max-time 120 --limit-rate "$RATE" -o "$OUT" "http://$SERVER_IP:$PORT/data.bin"
SIZE=$((SIZE_MIB << 20))
progress() {
    printf '    received %5.1f MiB of %d MiB\n' "$(awk -v b="$(file_size "$OUT")" 'BEGIN { print b / 1048576 }')" "$SIZE_MIB"
}
deadline=$((SECONDS + 60))
while (($(file_size "$OUT") < SIZE / 2)); do
    bg_alive curl || fail "curl ended before halfway (see the logs)"
    ((SECONDS < deadline)) || fail "the download did not reach halfway in 60 s"
    progress
    sleep 1
done
progress

step "Halfway. The download goes through splice-proxy (splicectl flows; the proxy's sockets):"
splicectl flows 2>&1 | sed 's/^/    /'
nsx "$NS_R" ss -Htnp "( sport = :$PORT or dport = :$PORT )" 2>/dev/null \
    | awk '{ printf "    %-6s %-22s %-22s %s\n", $1, $4, $5, $6 }'
sent=$(flows_json | json_get sum '*.bytesReply')
awk -v b="$sent" -v t="$SIZE_MIB" 'BEGIN { printf "    the server has sent %.1f MiB of %d MiB so far\n", b / 1048576, t }'

step "Killing splice-proxy with SIGKILL (pid $(bg_pid splice-proxy))"
rc=0
bg_kill splice-proxy KILL || rc=$?
if [[ $rc -eq 137 ]]; then
    echo "    splice-proxy is gone (killed by signal 9)"
else
    fail "splice-proxy did not die of SIGKILL (status $rc)"
fi
wait_no_proxy 10
echo "    spliced noticed at once: the flow is in bypass now (splicectl flows):"
splicectl flows 2>&1 | sed 's/^/    /'

step "The download goes on, straight between client and server"
while bg_alive curl; do
    progress
    sleep 1
done
rc=0
bg_wait curl 120 || rc=$?
progress
[[ $rc -eq 0 ]] || fail "curl failed with exit status $rc"

step "Result"
GOT_SHA=$(sha256_of "$OUT")
echo "    served:     $SRC_SHA"
echo "    downloaded: $GOT_SHA"
if [[ "$GOT_SHA" == "$SRC_SHA" ]]; then
    printf '    %sMATCH%s: the download survived the death of the proxy in its path, byte for byte\n' "$GREEN" "$PLAIN"
else
    printf '    %sMISMATCH%s: the download is not the file that was served\n' "$RED" "$PLAIN"
    exit 1
fi
