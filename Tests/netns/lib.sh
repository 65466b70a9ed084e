# shellcheck shell=bash
# tcpsplice netns test harness. Sourced by Tests/netns/test_*.sh, never run.
#
# Sourcing it: sets `set -euo pipefail`, checks that we are root and that
# network namespaces work (fails loudly otherwise: these tests never skip),
# creates a per-test temp dir $TEST_TMP, and installs a cleanup trap (EXIT INT
# TERM) that kills every background process the test started, deletes every
# namespace it created, and on failure dumps the logs of the background
# processes.
#
# Topology (topo_create):
#
#   client (NS_C)              router (NS_R)                 server (NS_S)
#   eth0 10.77.1.2/24  ---  rc0 10.77.1.1   rs0 10.77.2.1  ---  eth0 10.77.2.2/24
#        fd77:1::2/64           fd77:1::1   fd77:2::1               fd77:2::2/64
#
# The veth pairs are created directly inside the namespaces, so nothing ever
# appears in the host's own namespace, and the names are per-run unique.
#
# Functions (see each for details):
#   log MSG / fail MSG / check COND-CMD... MSG
#   ns_add SUFFIX            create one namespace "${TOPO_ID}SUFFIX" (lo up), echo nothing;
#                            its name is in NS_LAST
#   topo_create              client/router/server as above
#   nsx NS CMD...            run CMD in namespace NS
#   bg_start NAME NS CMD...  start CMD in NS in the background, log to $TEST_TMP/NAME.log
#   bg_pid NAME / bg_alive NAME / bg_wait NAME [TIMEOUT] / bg_kill NAME [SIGNAL] [TIMEOUT]
#   wait_for TIMEOUT DESC CMD...   poll CMD until it succeeds
#   wait_port NS PORT [TIMEOUT]    until something listens on TCP PORT in NS
#   make_random_file PATH MIB / sha256_of PATH / xfer_sha LOGFILE
#   need_bin NAME            path of a tcpsplice binary in $TCPSPLICE_BIN (fails if missing)
#   rules_install NS ARGS... / rules_remove NS ARGS...
#   spliced_start [ARGS...]  start spliced in the router with a control socket
#   splicectl ARGS...        run splicectl against that socket
#   json_get EXPR            python expression on `d` (the JSON read from stdin)

set -euo pipefail

NETNS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$NETNS_DIR/../.." && pwd)
TCPSPLICE_BIN=${TCPSPLICE_BIN:-$REPO_ROOT/.build/debug}
TEST_NAME=$(basename "$0" .sh)

# Variables for the tests that source this file.
# shellcheck disable=SC2034
XFER="$NETNS_DIR/xfer.py"

# Per-run unique prefix of namespace names (PID plus a random number).
TOPO_ID="tsp$$r${RANDOM}"

# shellcheck disable=SC2034
CLIENT_IP=10.77.1.2
ROUTER_IP_C=10.77.1.1
ROUTER_IP_S=10.77.2.1
SERVER_IP=10.77.2.2
CLIENT_IP6=fd77:1::2
ROUTER_IP6_C=fd77:1::1
ROUTER_IP6_S=fd77:2::1
SERVER_IP6=fd77:2::2
NS_C="" NS_R="" NS_S="" NS_LAST=""

_NAMESPACES=()
declare -A _BG_PID=()
declare -A _BG_DONE=()   # reaped: its PID may belong to someone else by now
declare -A _BG_RC=()     # exit status of a reaped process
_BG_ORDER=()
_CLEANUP_HOOKS=()
_CLEANING=0

log() {
    printf '[%s %s] %s\n' "$(date +%T)" "$TEST_NAME" "$*"
}

fail() {
    printf '[%s %s] FAIL: %s\n' "$(date +%T)" "$TEST_NAME" "$*" >&2
    exit 1
}

# check MSG CMD... : run CMD, fail with MSG when it does not succeed.
check() {
    local msg=$1
    shift
    "$@" || fail "$msg"
}

# --- preconditions: loud failure, never a skip --------------------------------
if [[ $(id -u) -ne 0 ]]; then
    fail "these tests need root (network namespaces, iptables); run them as root"
fi
for _tool in ip iptables ip6tables python3 ss setsid timeout sha256sum; do
    command -v "$_tool" >/dev/null 2>&1 || fail "'$_tool' not found on PATH (run Scripts/setup.sh)"
done
unset _tool
ip netns list >/dev/null 2>&1 || fail "'ip netns' does not work here (iproute2 without netns support?)"

TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tcpsplice-$TEST_NAME.XXXXXX")

# --- cleanup ------------------------------------------------------------------
# on_cleanup CMD... : run CMD (eval'd) during cleanup, before the namespaces go.
on_cleanup() {
    _CLEANUP_HOOKS+=("$*")
}

_kill_tree_of() {
    # $1 pid, $2 signal. Each background process leads its own process group
    # (setsid), so the group holds it and whatever it forked.
    kill "-$2" -- "-$1" 2>/dev/null || kill "-$2" "$1" 2>/dev/null || true
}

_cleanup() {
    local status=$?
    ((_CLEANING)) && return
    _CLEANING=1
    set +e
    trap - INT TERM
    local h name pid ns i
    for h in "${_CLEANUP_HOOKS[@]}"; do
        eval "$h" >/dev/null 2>&1
    done
    for name in "${_BG_ORDER[@]}"; do
        [[ -z "${_BG_DONE[$name]:-}" ]] || continue
        pid=${_BG_PID[$name]}
        kill -0 "$pid" 2>/dev/null && _kill_tree_of "$pid" TERM
    done
    for name in "${_BG_ORDER[@]}"; do
        [[ -z "${_BG_DONE[$name]:-}" ]] || continue
        pid=${_BG_PID[$name]}
        for ((i = 0; i < 30; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && _kill_tree_of "$pid" KILL
        wait "$pid" 2>/dev/null
    done
    # Anything still running inside our namespaces was started by this test.
    for ns in "${_NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
    done
    for ns in "${_NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || printf '%s: warning: could not delete netns %s\n' "$TEST_NAME" "$ns" >&2
    done
    if [[ $status -ne 0 ]]; then
        local f
        for f in "$TEST_TMP"/*.log; do
            [[ -e "$f" ]] || continue
            printf -- '----- %s (last 80 lines) -----\n' "$(basename "$f")" >&2
            tail -n 80 "$f" >&2
        done
    fi
    if [[ -n "${TCPSPLICE_KEEP_TMP:-}" ]]; then
        printf '%s: kept %s\n' "$TEST_NAME" "$TEST_TMP" >&2
    else
        rm -rf "$TEST_TMP"
    fi
    exit "$status"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- namespaces -----------------------------------------------------------------
nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

ns_add() {
    local ns="${TOPO_ID}$1"
    ip netns add "$ns" || fail "cannot create network namespace $ns"
    _NAMESPACES+=("$ns")
    ip -n "$ns" link set lo up || fail "cannot bring lo up in $ns"
    NS_LAST=$ns
}

topo_create() {
    ns_add c; NS_C=$NS_LAST
    ns_add r; NS_R=$NS_LAST
    ns_add s; NS_S=$NS_LAST
    ip -n "$NS_C" link add eth0 type veth peer name rc0 netns "$NS_R" \
        || fail "cannot create the client-router veth pair"
    ip -n "$NS_S" link add eth0 type veth peer name rs0 netns "$NS_R" \
        || fail "cannot create the server-router veth pair"

    ip -n "$NS_C" addr add "$CLIENT_IP/24" dev eth0
    ip -n "$NS_C" addr add "$CLIENT_IP6/64" dev eth0 nodad
    ip -n "$NS_R" addr add "$ROUTER_IP_C/24" dev rc0
    ip -n "$NS_R" addr add "$ROUTER_IP6_C/64" dev rc0 nodad
    ip -n "$NS_R" addr add "$ROUTER_IP_S/24" dev rs0
    ip -n "$NS_R" addr add "$ROUTER_IP6_S/64" dev rs0 nodad
    ip -n "$NS_S" addr add "$SERVER_IP/24" dev eth0
    ip -n "$NS_S" addr add "$SERVER_IP6/64" dev eth0 nodad
    ip -n "$NS_C" link set eth0 up
    ip -n "$NS_S" link set eth0 up
    ip -n "$NS_R" link set rc0 up
    ip -n "$NS_R" link set rs0 up
    ip -n "$NS_C" route add default via "$ROUTER_IP_C"
    ip -n "$NS_C" -6 route add default via "$ROUTER_IP6_C"
    ip -n "$NS_S" route add default via "$ROUTER_IP_S"
    ip -n "$NS_S" -6 route add default via "$ROUTER_IP6_S"
    nsx "$NS_R" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        || fail "cannot enable forwarding in the router"

    # Both families must pass end to end before a test starts.
    if command -v ping >/dev/null 2>&1; then
        wait_for 10 "IPv4 client->server ping" nsx "$NS_C" ping -c1 -W1 "$SERVER_IP" >/dev/null
        wait_for 10 "IPv6 client->server ping" nsx "$NS_C" ping -6 -c1 -W1 "$SERVER_IP6" >/dev/null
    fi
    log "topology up: client $NS_C ($CLIENT_IP, $CLIENT_IP6), router $NS_R, server $NS_S ($SERVER_IP, $SERVER_IP6)"
}

# --- background processes ---------------------------------------------------------
# bg_start NAME NS CMD... : start CMD inside namespace NS (NS "-" = this
# namespace) in its own session; stdout+stderr go to $TEST_TMP/NAME.log.
bg_start() {
    local name=$1 ns=$2
    shift 2
    [[ -z "${_BG_PID[$name]:-}" ]] || fail "bg_start: a process named '$name' was already started"
    local logf="$TEST_TMP/$name.log"
    if [[ "$ns" == "-" ]]; then
        setsid "$@" >"$logf" 2>&1 </dev/null &
    else
        setsid ip netns exec "$ns" "$@" >"$logf" 2>&1 </dev/null &
    fi
    _BG_PID[$name]=$!
    _BG_ORDER+=("$name")
}

bg_pid() {
    [[ -n "${_BG_PID[$1]:-}" ]] || fail "no background process named '$1'"
    echo "${_BG_PID[$1]}"
}

bg_log() {
    echo "$TEST_TMP/$1.log"
}

bg_alive() {
    [[ -z "${_BG_DONE[$1]:-}" ]] && kill -0 "$(bg_pid "$1")" 2>/dev/null
}

# bg_wait NAME [TIMEOUT_S]: wait for the process to exit; returns its status,
# fails the test if it is still running after TIMEOUT_S (default 120).
bg_wait() {
    local name=$1 timeout=${2:-120} pid deadline rc
    pid=$(bg_pid "$name")
    [[ -z "${_BG_DONE[$name]:-}" ]] || return "${_BG_RC[$name]}"
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "'$name' still running after ${timeout}s"
        sleep 0.1
    done
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    _BG_DONE[$name]=1
    _BG_RC[$name]=$rc
    return "$rc"
}

# bg_kill NAME [SIGNAL] [TIMEOUT_S]: signal the process (default TERM), wait
# up to TIMEOUT_S (default 10) for it to exit and reap it. Returns its exit
# status (128+N when a signal N ended it), or 124 if it is still running.
# The shell's "Killed" job notice is kept out of the output.
bg_kill() {
    local name=$1 sig=${2:-TERM} timeout=${3:-10} pid rc=0
    pid=$(bg_pid "$name")
    [[ -z "${_BG_DONE[$name]:-}" ]] || return "${_BG_RC[$name]}"
    {
        kill "-$sig" "$pid"
        local deadline=$((SECONDS + timeout))
        while kill -0 "$pid" && ((SECONDS < deadline)); do
            sleep 0.05
        done
        if kill -0 "$pid"; then
            rc=124
        else
            wait "$pid" || rc=$?
            _BG_DONE[$name]=1
            _BG_RC[$name]=$rc
        fi
    } 2>/dev/null
    return "$rc"
}

# --- polling ------------------------------------------------------------------------
# wait_for TIMEOUT_S DESCRIPTION CMD... : poll CMD every 0.1 s.
wait_for() {
    local timeout=$1 desc=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for: $desc"
        sleep 0.1
    done
}

_listening() {
    [[ -n "$(nsx "$1" ss -Hltn "sport = :$2" 2>/dev/null)" ]]
}

wait_port() {
    wait_for "${3:-10}" "a TCP listener on port $2 in $1" _listening "$1" "$2"
}

# --- data ---------------------------------------------------------------------------
make_random_file() {
    dd if=/dev/urandom of="$1" bs=1M count="$2" status=none || fail "cannot write $1"
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# xfer_sha LOGFILE: the SHA256= value of the last result line of an xfer.py log.
xfer_sha() {
    sed -n 's/.*SHA256=\([0-9a-f]\{64\}\).*/\1/p' "$1" | tail -n 1
}

# json_get EXPR: evaluate a python expression over d = the JSON on stdin.
json_get() {
    python3 -c 'import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list)) else v)' "$1"
}

# --- tcpsplice pieces -----------------------------------------------------------------
need_bin() {
    local p="$TCPSPLICE_BIN/$1"
    [[ -x "$p" ]] || fail "binary '$1' not found at $p (build it with 'swift build', or set TCPSPLICE_BIN)"
    echo "$p"
}

rules_install() {
    local ns=$1
    shift
    nsx "$ns" "$REPO_ROOT/Scripts/install-rules.sh" "$@" || fail "install-rules.sh $* failed in $ns"
}

rules_remove() {
    local ns=$1
    shift
    nsx "$ns" "$REPO_ROOT/Scripts/remove-rules.sh" "$@" || fail "remove-rules.sh $* failed in $ns"
}

CTL_SOCK=""
# spliced_start [ARGS...]: start spliced in the router (default --queue 0) with
# its control socket and pidfile in $TEST_TMP; waits for the socket. The
# background name is $SPLICED_BG (default "spliced"; set another one for a
# second daemon in the same test).
spliced_start() {
    local bin name=${SPLICED_BG:-spliced}
    bin=$(need_bin spliced)
    CTL_SOCK="$TEST_TMP/spliced.sock"
    local args=("$@")
    [[ ${#args[@]} -gt 0 ]] || args=(--queue 0)
    bg_start "$name" "$NS_R" "$bin" "${args[@]}" --control-socket "$CTL_SOCK" \
        --pidfile "$TEST_TMP/spliced.pid"
    local deadline=$((SECONDS + 20))
    # Ready when it answers on the socket (a socket file alone may be the
    # stale one of a killed daemon).
    until [[ -S "$CTL_SOCK" ]] && splicectl status >/dev/null 2>&1; do
        bg_alive "$name" || fail "spliced exited at startup (see $name.log)"
        ((SECONDS < deadline)) || fail "spliced did not answer on its control socket $CTL_SOCK within 20s"
        sleep 0.1
    done
    log "spliced running (pid $(bg_pid "$name")): ${args[*]}"
}

splicectl() {
    local bin
    bin=$(need_bin splicectl)
    nsx "$NS_R" "$bin" --socket "$CTL_SOCK" "$@"
}

# queue_bound_count NS: how many NFQUEUE queues have a program bound in NS.
queue_bound_count() {
    nsx "$1" sh -c 'cat /proc/net/netfilter/nfnetlink_queue 2>/dev/null | wc -l'
}

# status_json / flows_json: the daemon's answers (fail the test if splicectl fails).
status_json() {
    local out
    out=$(splicectl status --json) || fail "splicectl status --json failed"
    printf '%s\n' "$out"
}

flows_json() {
    local out
    out=$(splicectl flows --json 2>/dev/null) || fail "splicectl flows --json failed"
    printf '%s\n' "$out"
}

# queue_packets_total: packets the running spliced has read from all its queues.
queue_packets_total() {
    status_json | json_get 'sum(q["packets"] for q in d["queues"])'
}

# find_flow SRC DST DPORT [STATE] [MODE]: print the first flow of
# `splicectl flows --json` with those fields (state/mode "" = any), as JSON;
# returns 1 when there is none.
find_flow() {
    flows_json | python3 -c '
import json, sys
src, dst, dport, state, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
for f in json.load(sys.stdin):
    if f.get("src") == src and f.get("dst") == dst and f.get("dport") == dport \
            and (not state or f.get("state") == state) and (not mode or f.get("mode") == mode):
        print(json.dumps(f, sort_keys=True))
        sys.exit(0)
sys.exit(1)' "$1" "$2" "$3" "${4:-}" "${5:-}"
}

# file_size PATH: bytes in PATH (0 if it does not exist yet).
file_size() {
    if [[ -e "$1" ]]; then stat -c %s "$1"; else echo 0; fi
}
