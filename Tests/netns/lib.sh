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
#   json_get QUERY [ARG...]  a path or query into the JSON on stdin (jsonq.py; no eval)
#   flowcheck SUBCMD [ARG...]   checks of the flows/status JSON on stdin (flowcheck.py; no
#                            eval): find/count/list/modes of flows, the assertions below
#   status_json / flows_json / find_flow SRC DST DPORT [STATE] [MODE]
#
# Resilient mode (see the sections below for details):
#   resilient_rules_install / resilient_spliced_start   rules with --tproxy-port, spliced --proxy-ports
#   proxy_start [NAME]       splice-proxy in the router, waits until spliced lists it
#   haproxy_start            HAProxy as the transparent proxy (pidfile $HAPROXY_PIDFILE)
#   haproxy_alone_start      HAProxy alone, not transparent (the benchmarks' reference)
#   proxy_registered_pid PID / wait_proxy_registered PID / wait_no_proxy / proxy_id_of PID /
#   resilient_stat KEY
#   xfers_prepare / xfers_servers_start / xfers_start / xfers_wait_progress /
#   xfers_assert_running / xfers_wait / xfers_verify   N concurrent transfers, SHA-256 each
#   flows_assert_all MODE REASON MIN / flows_of_clients_assert MODE REASON PORT... /
#   resilient_assert_through_proxy N [PROXY_ID]   (each a flowcheck.py assertion)
#
# Python helpers beside this file (none evaluates code passed from bash): xfer.py (the
# transfers), jsonq.py (json_get), flowcheck.py (flowcheck: flow and status assertions,
# transfer progress), crowd.py (crowd_run), tsorder.py (paws_report), resent.py (segments
# a capture shows twice: test_resilient_first_byte).

set -euo pipefail

NETNS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$NETNS_DIR/../.." && pwd)
TCPSPLICE_BIN=${TCPSPLICE_BIN:-$REPO_ROOT/.build/release}
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

# report MSG: a measurement a passing test shows even without run.sh -v (never an assertion).
report() {
    log "report: $*"
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
    # A failed test shows what the engine counted, taken before anything is stopped.
    if [[ $status -ne 0 && -n "${CTL_SOCK:-}" && -S "${CTL_SOCK:-}" ]]; then
        (splicectl status; echo "flows:"; splicectl flows) >"$TEST_TMP/zz-spliced-status-at-failure.log" 2>&1
    fi
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

# end_link_queue NS IF: an end's link gets a queue, as a host's NIC has one. A veth has none
# (noqueue): a packet its peer's backlog cannot take fails the send itself, and a Linux server
# whose SYN-ACK retransmission failed that way forgot the connection and reset the client's
# late ACK (the resilient crowd test saw up to 1,130 of 10,000 connections reset so, while the
# router's backlog overflowed: its interface's RX drops matched the server's TX drops; see
# Docs/testing.md). Behind a queue, the same overflow is a loss on the wire, which TCP repairs.
end_link_queue() {
    tc -n "$1" qdisc replace dev "$2" root pfifo limit 1000 || fail "cannot give $2 in $1 a queue"
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
    end_link_queue "$NS_C" eth0
    end_link_queue "$NS_S" eth0
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
    [[ "${TOPO_SNAT:-0}" == 1 ]] && topo_source_nat
    if [[ -n "${TOPO_ROUTER_SYSCTL:-}" ]]; then
        # shellcheck disable=SC2086 # a list of KEY=VALUE words
        nsx "$NS_R" sysctl -qw $TOPO_ROUTER_SYSCTL || fail "cannot set the router's sysctls: $TOPO_ROUTER_SYSCTL"
        log "the router's own TCP settings: $TOPO_ROUTER_SYSCTL"
    fi
    pcap_start
}

# banner_exchanges COUNT BANNER_PORT ASKING_PORT: banner.py serving in the server (on the
# first port the server speaks first, as SMTP does; on the second the client does), then per
# family COUNT connections to each, one after the other, every answer checked (fails on the
# first wrong one). The server (bg banner-serve) is left running.
banner_exchanges() {
    local count=$1 first=$2 second=$3 fam ip out
    bg_start banner-serve "$NS_S" python3 "$NETNS_DIR/banner.py" serve "$first" "$second"
    wait_port "$NS_S" "$first"
    wait_port "$NS_S" "$second"
    for fam in 4 6; do
        ip=$SERVER_IP
        [[ $fam == 6 ]] && ip=$SERVER_IP6
        out=$(nsx "$NS_C" timeout 120 python3 "$NETNS_DIR/banner.py" client "$ip" "$first" "$count" first 2>&1) \
            || fail "IPv$fam, a server that speaks first: $out"
        log "IPv$fam, a server that speaks first: $out"
        out=$(nsx "$NS_C" timeout 120 python3 "$NETNS_DIR/banner.py" client "$ip" "$second" "$count" second 2>&1) \
            || fail "IPv$fam, a client that speaks first: $out"
        log "IPv$fam, a client that speaks first: $out"
    done
}

# pmtu_exchanges PORT MIB WHAT: per family, one connection from the client to pmtu.py on the
# server's PORT: MIB MiB up, checked, then the same back; fails naming WHAT unless both
# arrived right.
pmtu_exchanges() {
    local port=$1 mib=$2 what=$3 fam ip out
    for fam in 4 6; do
        ip=$SERVER_IP
        [[ $fam == 6 ]] && ip=$SERVER_IP6
        bg_start "pmtu-serve$port-$fam" "$NS_S" python3 "$NETNS_DIR/pmtu.py" serve "$fam" "$port" "$mib"
        wait_port "$NS_S" "$port"
        out=$(nsx "$NS_C" timeout 60 python3 "$NETNS_DIR/pmtu.py" client "$ip" "$port" "$mib" 2>&1) \
            || fail "IPv$fam, $what: $out"
        bg_wait "pmtu-serve$port-$fam" 10 || fail "IPv$fam, $what, the server's side: $(tail -n 1 "$(bg_log "pmtu-serve$port-$fam")")"
        log "IPv$fam, $what: $out, $(tail -n 1 "$(bg_log "pmtu-serve$port-$fam")")"
    done
}

# topo_source_nat: the router masquerades toward the server (both families), as a gateway
# does (test_resilient_nat_gateway; TOPO_SNAT=1 runs any test so). The server then sees each
# client's port from the router's address: XF_SNAT4 / XF_SNAT6 tell the transfer checks.
topo_source_nat() {
    local ipt
    for ipt in iptables ip6tables; do
        nsx "$NS_R" "$ipt" -t nat -A POSTROUTING -o rs0 -j MASQUERADE || fail "cannot add MASQUERADE in the router ($ipt)"
    done
    export XF_SNAT4=$ROUTER_IP_S XF_SNAT6=$ROUTER_IP6_S
    log "the router source-NATs toward the server (MASQUERADE on rs0)"
}

# topo_host_behind NAME NS PREFIX4 PREFIX6 [silent]: a host NAME in a namespace of its own
# (NS_LAST), behind NS (which forwards for it), at PREFIX4.2 / PREFIX6::2; the link from NS
# to it takes 1400 bytes at most, and NS says so to a sender of a larger packet with DF set
# (ICMP fragmentation-needed, ICMPv6 packet-too-big), as a tunnel or a PPPoE hop does; with
# `silent` it drops those errors instead, as a path whose ICMP is filtered does.
topo_host_behind() {
    local name=$1 ns=$2 p4=$3 p6=$4 host
    ns_add "$name"
    host=$NS_LAST
    ip -n "$host" link add eth0 type veth peer name "${name}0" netns "$ns" || fail "cannot create the veth of $name"
    ip -n "$host" addr add "$p4.2/24" dev eth0
    ip -n "$host" addr add "$p6::2/64" dev eth0 nodad
    ip -n "$ns" addr add "$p4.1/24" dev "${name}0"
    ip -n "$ns" addr add "$p6::1/64" dev "${name}0" nodad
    ip -n "$host" link set eth0 up
    ip -n "$ns" link set "${name}0" up
    end_link_queue "$host" eth0
    ip -n "$host" route add default via "$p4.1"
    ip -n "$host" -6 route add default via "$p6::1"
    nsx "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 || fail "cannot enable forwarding in $ns"
    ip -n "$ns" route add "$p4.2/32" dev "${name}0" mtu lock 1400 || fail "cannot limit the route to $name"
    ip -n "$ns" -6 route add "$p6::2/128" dev "${name}0" mtu lock 1400 || fail "cannot limit the IPv6 route to $name"
    if [[ "${5:-}" == silent ]]; then
        nsx "$ns" iptables -A OUTPUT -p icmp --icmp-type fragmentation-needed -j DROP || fail "cannot silence $ns (IPv4)"
        nsx "$ns" ip6tables -A OUTPUT -p icmpv6 --icmpv6-type packet-too-big -j DROP || fail "cannot silence $ns (IPv6)"
    fi
}

# topo_far_and_near [silent]: after topo_create, "far" behind the server's namespace
# (FAR_IP, FAR_IP6; NS_FAR) and "near" behind the client's (NEAR_IP, NEAR_IP6; NS_NEAR), each
# behind a 1400-byte link (topo_host_behind, `silent` passed on), the router routing to both;
# near reaches far in both families before it returns.
FAR_IP=10.77.3.2
FAR_IP6=fd77:3::2
NEAR_IP=10.77.4.2
NEAR_IP6=fd77:4::2
topo_far_and_near() {
    topo_host_behind far "$NS_S" 10.77.3 fd77:3 "${1:-}"
    NS_FAR=$NS_LAST
    topo_host_behind near "$NS_C" 10.77.4 fd77:4 "${1:-}"
    NS_NEAR=$NS_LAST
    ip -n "$NS_R" route add 10.77.3.0/24 via "$SERVER_IP"
    ip -n "$NS_R" -6 route add fd77:3::/64 via "$SERVER_IP6"
    ip -n "$NS_R" route add 10.77.4.0/24 via "$CLIENT_IP"
    ip -n "$NS_R" -6 route add fd77:4::/64 via "$CLIENT_IP6"
    wait_for 10 "IPv4 near->far ping" nsx "$NS_NEAR" ping -c1 -W1 "$FAR_IP" >/dev/null
    wait_for 10 "IPv6 near->far ping" nsx "$NS_NEAR" ping -6 -c1 -W1 "$FAR_IP6" >/dev/null
}

# capture_start NAME: tcpdump (headers only, 128 bytes) at the client's and the server's
# eth0 into $TEST_TMP/NAME-c.pcap and NAME-s.pcap; capture_stop NAME ends both (what is in
# flight is written first) and fails the test if either holds no packet: a check that reads
# an empty capture finds nothing wrong. (--immediate-mode: without it libpcap hands tcpdump
# its packets a ring block at a time, when the block fills or a timer retires it, and a
# capture of a second or two ended by SIGINT wrote none: "56 packets received by filter,
# 0 packets captured".)
capture_start() {
    local ns n
    for ns in c s; do
        [[ $ns == c ]] && n=$NS_C || n=$NS_S
        bg_start "pcap-$1-$ns" "$n" tcpdump -i eth0 -n --immediate-mode -s 128 -B 16384 -U -w "$TEST_TMP/$1-$ns.pcap" tcp
    done
    sleep 1
}
capture_stop() {
    local ns
    sleep 0.5
    for ns in c s; do bg_kill "pcap-$1-$ns" INT >/dev/null || true; done
    for ns in c s; do
        [[ -n "$(tcpdump -n -r "$TEST_TMP/$1-$ns.pcap" -c 1 2>/dev/null)" ]] \
            || fail "the capture $1-$ns.pcap holds no packet ($(tr '\n' ' ' <"$(bg_log "pcap-$1-$ns")"))"
    done
}

# pcap_start: with TCPSPLICE_PCAP=1 in the environment (a debugging aid, off in the suite),
# capture the whole test (capture_start all: $TEST_TMP/all-c.pcap and all-s.pcap, kept with
# TCPSPLICE_KEEP_TMP=1).
pcap_start() {
    [[ -n "${TCPSPLICE_PCAP:-}" ]] || return 0
    command -v tcpdump >/dev/null 2>&1 || fail "TCPSPLICE_PCAP is set but 'tcpdump' is not on PATH"
    capture_start all
}

# --- background processes ---------------------------------------------------------
# bg_start NAME NS CMD... : start CMD inside namespace NS (NS "-" = this
# namespace) in its own session; stdout+stderr go to $TEST_TMP/NAME.log.
# A name is taken again only once its process was reaped (bg_kill, bg_wait): a helper
# started once per variant in one run (a capture), its log overwritten.
bg_start() {
    local name=$1 ns=$2
    shift 2
    if [[ -n "${_BG_PID[$name]:-}" ]]; then
        [[ -n "${_BG_DONE[$name]:-}" ]] || fail "bg_start: a process named '$name' is still running"
        unset "_BG_DONE[$name]" "_BG_RC[$name]"
    else
        _BG_ORDER+=("$name")
    fi
    local logf="$TEST_TMP/$name.log"
    if [[ "$ns" == "-" ]]; then
        setsid "$@" >"$logf" 2>&1 </dev/null &
    else
        setsid ip netns exec "$ns" "$@" >"$logf" 2>&1 </dev/null &
    fi
    _BG_PID[$name]=$!
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
    if command -v openssl >/dev/null 2>&1; then
        # ~10x faster than /dev/urandom here; random enough for test data. `openssl rand`
        # takes at most 2^31 - 1 bytes: written 1 GiB at a time.
        local left=$2 chunk
        : >"$1" || fail "cannot write $1"
        while ((left > 0)); do
            chunk=$((left < 1024 ? left : 1024))
            openssl rand $((chunk << 20)) >>"$1" || fail "cannot write $1"
            left=$((left - chunk))
        done
    else
        dd if=/dev/urandom of="$1" bs=1M count="$2" status=none || fail "cannot write $1"
    fi
}

# sha256_files FILE...: "HEX PATH" per file. OpenSSL's digest where there is one
# (~4x sha256sum's speed here: it uses the CPU's SHA instructions; the failure tests
# hash 800 MB twice), sha256sum otherwise.
sha256_files() {
    if command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r -- "$@" | sed 's/ \*/ /'
    else
        sha256sum -- "$@"
    fi
}

sha256_of() {
    sha256_files "$1" | cut -d' ' -f1
}

# xfer_sha LOGFILE: the SHA256= value of the last result line of an xfer.py log.
xfer_sha() {
    sed -n 's/.*SHA256=\([0-9a-f]\{64\}\).*/\1/p' "$1" | tail -n 1
}

# json_get QUERY [ARG...]: what QUERY names in the JSON on stdin (Tests/netns/jsonq.py: a
# path such as resilient.failovers, or sum/len/sorted/pick/pairs/lines/first/mib/is-list/
# where/count-in over one); never code evaluated from bash.
json_get() {
    python3 "$NETNS_DIR/jsonq.py" "$@"
}

# flowcheck SUBCOMMAND [ARG...]: a check of spliced's flows or status (the JSON on stdin),
# Tests/netns/flowcheck.py: a failed assertion says what is wrong on stderr and returns 1;
# never code evaluated from bash. Its docstring lists the subcommands.
flowcheck() {
    python3 "$NETNS_DIR/flowcheck.py" "$@"
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
# second daemon in the same test). $SPLICED_EXTRA_ARGS (split on spaces) is
# added to every start: e.g. SPLICED_EXTRA_ARGS="--reader-threads one" runs the
# tests or the benchmarks with one reader thread.
spliced_start() {
    local bin name=${SPLICED_BG:-spliced}
    bin=$(need_bin spliced)
    CTL_SOCK="$TEST_TMP/spliced.sock"
    local args=("$@")
    [[ ${#args[@]} -gt 0 ]] || args=(--queue 0)
    # shellcheck disable=SC2206
    [[ -z "${SPLICED_EXTRA_ARGS:-}" ]] || args+=($SPLICED_EXTRA_ARGS)
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
    status_json | json_get sum 'queues.*.packets'
}

# find_flow SRC DST DPORT [STATE] [MODE]: print the first flow of
# `splicectl flows --json` with those fields (state/mode "" = any), as JSON;
# returns 1 when there is none.
find_flow() {
    flows_json | flowcheck find --src "$1" --dst "$2" --dport "$3" --state "${4:-}" --mode "${5:-}"
}

# file_size PATH: bytes in PATH (0 if it does not exist yet).
file_size() {
    if [[ -e "$1" ]]; then stat -c %s "$1"; else echo 0; fi
}

# --- resilient mode: rules, proxies -------------------------------------------------------
# Ports of the resilient tests: downloads from the server on XF_DOWN_PORT,
# uploads to it on XF_UP_PORT; the proxy's transparent listener on TPROXY_PORT.
XF_DOWN_PORT=5001
XF_UP_PORT=5002
TPROXY_PORT=8081

# resilient_rules_install [PORTS]: the rules with the resilient mode's additions
# (TPROXY to $TPROXY_PORT, the proxy's sockets fail-closed, policy routing, early
# demux off) in the router, for PORTS (default "$XF_DOWN_PORT,$XF_UP_PORT"), queue 0
# for the clients' packets, queue 3 for the servers', queues 1 and 4 for the proxy's (to the
# servers, to the clients), queue 2 for the ends' handshakes.
# The queue layout of the resilient mode (Docs/deploy.md): a queue per direction for the ends'
# packets and for the proxy's, because the kernel holds at most 65,536 packets per queue
# (Docs/packet-path.md), and the handshakes apart. RESILIENT_RULE_QUEUES for install-rules.sh,
# RESILIENT_SPLICED_QUEUES for spliced: the same queues.
RESILIENT_RULE_QUEUES=(--queues 0 --reply-queue 3 --proxy-queue 1 --proxy-reply-queue 4 --syn-queue 2)
RESILIENT_SPLICED_QUEUES=(--queue 0 --queue 3 --proxy-queue 1 --proxy-queue 4 --syn-queue 2)
resilient_rules_install() {
    rules_install "$NS_R" --ports "${1:-$XF_DOWN_PORT,$XF_UP_PORT}" "${RESILIENT_RULE_QUEUES[@]}" \
        --tproxy-port "$TPROXY_PORT"
    # Deleting the namespace undoes the rules, but not the file in which
    # install-rules.sh saved the sysctls it changed (/run/tcpsplice, per netns).
    on_cleanup "nsx '$NS_R' '$REPO_ROOT/Scripts/remove-rules.sh'"
}

# resilient_spliced_start [PORTS] [ARGS...]: spliced on queues 0 and 3 (the ends' packets),
# queues 1 and 4 (the proxy's, fail-closed) and queue 2 (handshakes) with --proxy-ports PORTS (default
# "$XF_DOWN_PORT,$XF_UP_PORT") and any further ARGS.
resilient_spliced_start() {
    local ports=${1:-$XF_DOWN_PORT,$XF_UP_PORT}
    shift || true
    spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$ports" "$@"
}

# resilient_start [ARGS...]: after the topology (and whatever a test adds to it),
# the resilient rules for the transfer ports and spliced claiming them, with any
# further spliced ARGS. splicectl must be there (every check reads its status);
# spliced_start and proxy_start check their own binaries.
resilient_start() {
    need_bin splicectl >/dev/null
    resilient_rules_install ""
    resilient_spliced_start "" "$@"
}

# xfers_size_defaults: N, MIB and RATE (bytes/s) of the failure tests: 50
# transfers of 8 MiB, each paced at 512 KiB/s and held (xfers_servers_start
# RATE hold) until the test's events in their middle are over. XF_N,
# XF_MIB_EACH and XF_KIBPS make a quick run smaller.
# shellcheck disable=SC2034 # N, MIB, RATE: for the test that sources this file
xfers_size_defaults() {
    N=${XF_N:-50}
    MIB=${XF_MIB_EACH:-8}
    RATE=$((${XF_KIBPS:-512} << 10))
}

# proxies_json: the `proxies` list of spliced's status, as JSON.
proxies_json() {
    status_json | json_get 'proxies?[]'
}

# proxy_registered_pid PID: true when spliced lists a proxy with that pid.
proxy_registered_pid() {
    status_json | flowcheck proxy-listed --pid "$1"
}

# proxy_id_of PID: the id spliced gave the registered proxy with that pid.
proxy_id_of() {
    status_json | flowcheck proxy-id "$1"
}

# wait_proxy_registered PID [TIMEOUT_S]: until spliced lists a proxy with that pid.
wait_proxy_registered() {
    wait_for "${2:-20}" "spliced to list the proxy with pid $1 (status.proxies)" proxy_registered_pid "$1"
}

# wait_no_proxy [TIMEOUT_S]: until spliced lists no proxy at all.
_no_proxy() {
    [[ "$(proxies_json | json_get len .)" == 0 ]]
}
wait_no_proxy() {
    wait_for "${1:-10}" "spliced to list no proxy (status.proxies empty)" _no_proxy
}

# proxy_start [NAME] [ARGS...]: start splice-proxy in the router (background
# name NAME, default "splice-proxy") against spliced's control socket, listening
# on $TPROXY_PORT; waits until spliced lists it. Its pid is $(bg_pid NAME).
proxy_start() {
    local name=${1:-splice-proxy} bin
    shift || true
    bin=$(need_bin splice-proxy)
    [[ -n "$CTL_SOCK" ]] || fail "proxy_start: start spliced first (no control socket)"
    bg_start "$name" "$NS_R" "$bin" --control-socket "$CTL_SOCK" --listen-port "$TPROXY_PORT" \
        --pidfile "$TEST_TMP/$name.pid" "$@"
    local deadline=$((SECONDS + 20))
    until _listening "$NS_R" "$TPROXY_PORT"; do
        bg_alive "$name" || fail "splice-proxy exited at startup (see $name.log)"
        ((SECONDS < deadline)) || fail "splice-proxy (pid $(bg_pid "$name")) did not listen on port $TPROXY_PORT within 20s"
        sleep 0.1
    done
    until proxy_registered_pid "$(bg_pid "$name")"; do
        bg_alive "$name" || fail "splice-proxy exited at startup (see $name.log)"
        ((SECONDS < deadline)) || fail "splice-proxy (pid $(bg_pid "$name")) did not register with spliced within 20s"
        sleep 0.1
    done
    log "splice-proxy running (pid $(bg_pid "$name"), proxy id $(proxy_id_of "$(bg_pid "$name")"))"
}

# haproxy_alone_start NAME MODE PORT [MAXCONN] [TIMEOUT]: HAProxy (Debian's) alone in the
# router, the userspace-proxy reference of the benchmarks: not transparent, `mode MODE` (tcp or
# http); the client connects to $ROUTER_IP_C:PORT, HAProxy to the server's PORT. Background
# NAME, its configuration in $TEST_TMP/NAME.cfg.
haproxy_alone_start() {
    local name=$1 mode=$2 port=$3 maxconn=${4:-1000} timeout=${5:-120s} cfg="$TEST_TMP/$1.cfg"
    cat >"$cfg" <<HAEOF
# generated by tcpsplice Tests/netns/lib.sh (haproxy_alone_start)
global
    maxconn $maxconn
defaults
    mode $mode
    timeout connect 5s
    timeout client $timeout
    timeout server $timeout
listen $name
    bind $ROUTER_IP_C:$port
    server s1 $SERVER_IP:$port
HAEOF
    nsx "$NS_R" haproxy -c -q -f "$cfg" || fail "haproxy rejects the generated configuration $cfg"
    bg_start "$name" "$NS_R" haproxy -db -f "$cfg"
    wait_port "$NS_R" "$port"
}

# haproxy_start: HAProxy as the transparent application proxy in the router
# (Docs/resilient.md), daemonized (-D) with its pidfile $HAPROXY_PIDFILE, which
# spliced watches (start spliced with --proxy-pidfile "$HAPROXY_PIDFILE", before
# or after). Sets HAPROXY_PID; a cleanup hook kills it (it leaves our process
# group when it daemonizes).
HAPROXY_PIDFILE=""
HAPROXY_PID=""
haproxy_start() {
    command -v haproxy >/dev/null 2>&1 || fail "'haproxy' not found on PATH (run Scripts/setup.sh)"
    HAPROXY_PIDFILE="$TEST_TMP/haproxy.pid"
    local cfg="$TEST_TMP/haproxy.cfg"
    cat >"$cfg" <<HAEOF
# generated by tcpsplice Tests/netns/lib.sh (haproxy_start)
global
    maxconn 9900
defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
frontend splice
    bind 0.0.0.0:$TPROXY_PORT transparent
    bind :::$TPROXY_PORT v6only transparent
    default_backend origin
backend origin
    source 0.0.0.0 usesrc client
    server origin 0.0.0.0
HAEOF
    nsx "$NS_R" haproxy -c -q -f "$cfg" || fail "haproxy rejects the generated configuration $cfg"
    on_cleanup _haproxy_cleanup
    nsx "$NS_R" haproxy -D -f "$cfg" -p "$HAPROXY_PIDFILE" >"$TEST_TMP/haproxy.log" 2>&1 \
        || fail "haproxy -D failed (see haproxy.log)"
    wait_for 10 "haproxy's pidfile $HAPROXY_PIDFILE" test -s "$HAPROXY_PIDFILE"
    HAPROXY_PID=$(head -n 1 "$HAPROXY_PIDFILE")
    [[ "$HAPROXY_PID" =~ ^[0-9]+$ ]] || fail "haproxy's pidfile holds '$HAPROXY_PID'"
    wait_port "$NS_R" "$TPROXY_PORT" 10
    log "haproxy running (pid $HAPROXY_PID, pidfile $HAPROXY_PIDFILE)"
}

# haproxy_alive: the haproxy we started is still running (and is haproxy; a
# zombie waiting for init to reap it counts as dead).
haproxy_alive() {
    [[ -n "$HAPROXY_PID" ]] || return 1
    local stat
    stat=$(cat "/proc/$HAPROXY_PID/stat" 2>/dev/null) || return 1
    [[ "$stat" == "$HAPROXY_PID (haproxy) "* && "$stat" != "$HAPROXY_PID (haproxy) Z "* ]]
}

_haproxy_cleanup() {
    haproxy_alive && kill -KILL "$HAPROXY_PID" 2>/dev/null
    return 0
}

# --- concurrent transfers ---------------------------------------------------------------
# A set of transfers between the client and the server, each with its own random
# file: downloads (fetch --request NAME from serve-send --dir) on $XF_DOWN_PORT,
# uploads (push to serve-recv) on $XF_UP_PORT. Rate-limited at the sender, so that
# they last SIZE/RATE seconds. Names: d1..dN, u1..uM; background processes
# xf-d1.., xf-u1..; the server processes xf-serve-send and xf-serve-recv.
#
#   xfers_prepare NDOWN NUP MIB     random files, expected SHA-256s
#   xfers_servers_start RATE [hold] the two servers in the server namespace
#   xfers_release [RATE]            held transfers (hold) may end: the rest unpaced (or at RATE)
#   xfers_start HOST [PREFIX]       all clients at once, to HOST (IPv4 or IPv6)
#   xfers_min_progress / xfers_max_progress   least / most bytes moved, in per mille of MIB
#   xfers_wait_progress PERMILLE TIMEOUT      until every transfer has moved that much
#   xfers_assert_running            fail if any transfer has ended
#   xfers_wait TIMEOUT              all clients exit 0 (fails naming those that did not)
#   xfers_verify                    every transfer arrived with the SHA-256 it left with
#   xfers_wait_connected TIMEOUT    until every client has connected
#   xfers_client_ports              the client ports (one per line) of the transfers
XF_NAMES=()
XF_MIB=0
XF_RATE=0
XF_DIR=""
declare -A XF_WANT=()     # name -> sha256 of its source file
declare -A XF_KIND=()     # name -> down|up
declare -A XF_IDX=()      # name -> its number among its kind

# xfers_prepare NDOWN NUP MIB [TAG]: NDOWN + NUP random files of MIB MiB each,
# named TAGd1.. and TAGu1..: a new set (the set the other xfers_* functions work
# on); with a TAG per set, a test can run several sets one after the other
# against the same servers.
xfers_prepare() {
    local nd=$1 nu=$2 mib=$3 tag=${4:-} i name
    XF_MIB=$mib
    XF_DIR="$TEST_TMP/xf"
    mkdir -p "$XF_DIR/src" "$XF_DIR/got" "$XF_DIR/recv"
    XF_NAMES=()
    rm -f "$XF_DIR/release"
    XF_SEND_LOG_LINES=0
    [[ ! -e "$(bg_log xf-serve-send)" ]] || XF_SEND_LOG_LINES=$(wc -l <"$(bg_log xf-serve-send)")
    for ((i = 1; i <= nd; i++)); do XF_NAMES+=("${tag}d$i"); XF_KIND[${tag}d$i]=down; XF_IDX[${tag}d$i]=$i; done
    for ((i = 1; i <= nu; i++)); do XF_NAMES+=("${tag}u$i"); XF_KIND[${tag}u$i]=up; XF_IDX[${tag}u$i]=$i; done
    for name in "${XF_NAMES[@]}"; do
        make_random_file "$XF_DIR/src/$name" "$mib"
    done
    while read -r sum path; do
        XF_WANT[$(basename "$path")]=$sum
    done < <(cd "$XF_DIR/src" && sha256_files "${XF_NAMES[@]}")
    for name in "${XF_NAMES[@]}"; do
        [[ -n "${XF_WANT[$name]:-}" ]] || fail "xfers_prepare: no sha256 for $name"
    done
    log "prepared ${#XF_NAMES[@]} random files of $mib MiB ($nd downloads, $nu uploads)"
}

# xfers_servers_start RATE [hold]: serve-send (downloads paced at RATE bytes/s each) and
# serve-recv in the server namespace, on both families. With XF_MPTCP=1 every socket of the
# transfers, servers' and clients', is an MPTCP socket (xfer.py --mptcp).
# With "hold", every transfer's sender (serve-send, push) sends its last MiB at a crawl
# (8 KiB/s: still a packet every 0.1 s) until xfers_release (xfers_wait releases them
# first): a failure test's kill, and whatever it checks before and after, finds every
# transfer running however slow the machine, and the rest then goes unpaced instead
# of taking its paced time.
XF_HOLD=""
XF_SEND_LOG_LINES=0
xfers_servers_start() {
    XF_RATE=$1
    XF_HOLD=""
    [[ "${2:-}" != hold ]] || XF_HOLD="$XF_DIR/release"
    bg_start xf-serve-send "$NS_S" python3 "$XFER" serve-send ${XF_MPTCP:+--mptcp} --port "$XF_DOWN_PORT" \
        --dir "$XF_DIR/src" --rate "$XF_RATE" ${XF_HOLD:+--release-file "$XF_HOLD"} --timeout 120
    bg_start xf-serve-recv "$NS_S" python3 "$XFER" serve-recv ${XF_MPTCP:+--mptcp} --port "$XF_UP_PORT" \
        --out-dir "$XF_DIR/recv" --timeout 120
    wait_port "$NS_S" "$XF_DOWN_PORT"
    wait_port "$NS_S" "$XF_UP_PORT"
}

# xfers_start HOST [HOST2]: every transfer at once, from the client namespace, to
# HOST; with HOST2 (e.g. the server's IPv6 address), every second transfer of
# each kind goes to HOST2. Uploads are paced at the rate given to
# xfers_servers_start.
xfers_start() {
    local host1=$1 host2=${2:-$1} ns=$NS_C name host
    for name in "${XF_NAMES[@]}"; do
        host=$host1
        ((XF_IDX[$name] % 2 == 0)) && host=$host2
        rm -f "$XF_DIR/got/$name"
        if [[ "${XF_KIND[$name]}" == down ]]; then
            bg_start "xf-$name" "$ns" python3 "$XFER" fetch ${XF_MPTCP:+--mptcp} --host "$host" --port "$XF_DOWN_PORT" \
                --request "$name" --out "$XF_DIR/got/$name" --timeout 120 --deadline 400
        else
            bg_start "xf-$name" "$ns" python3 "$XFER" push ${XF_MPTCP:+--mptcp} --host "$host" --port "$XF_UP_PORT" \
                --file "$XF_DIR/src/$name" --rate "$XF_RATE" ${XF_HOLD:+--release-file "$XF_HOLD"} \
                --timeout 120 --deadline 400
        fi
    done
    log "started ${#XF_NAMES[@]} transfers of $XF_MIB MiB to $host1${2:+ and $host2} at $((XF_RATE >> 10)) KiB/s each"
}

# xfers_client_port NAME: the client port of transfer NAME ("" before it connected).
xfers_client_port() {
    sed -n 's/^CONNECTED LOCAL=.*:\([0-9]*\)$/\1/p' "$(bg_log "xf-$1")" | head -n 1
}

# xfers_client_tuple NAME: "ADDR:PORT" ("[ADDR6]:PORT") of transfer NAME's client.
xfers_client_tuple() {
    sed -n 's/^CONNECTED LOCAL=//p' "$(bg_log "xf-$1")" | head -n 1
}

xfers_client_ports() {
    local name
    for name in "${XF_NAMES[@]}"; do xfers_client_port "$name"; done
}

# xfers_wait_connected TIMEOUT_S: until every client has connected.
_xf_all_connected() {
    local name
    for name in "${XF_NAMES[@]}"; do
        [[ -n "$(xfers_client_port "$name")" ]] || return 1
    done
}
xfers_wait_connected() {
    wait_for "$1" "all ${#XF_NAMES[@]} transfers to connect" _xf_all_connected
}

# _xf_moved NAME: bytes moved so far: what the client received (download), what
# the server received from that client's port (upload; 0 until it connected).
_xf_moved() {
    local name=$1 port n
    if [[ "${XF_KIND[$name]}" == down ]]; then
        file_size "$XF_DIR/got/$name"
        return
    fi
    port=$(xfers_client_tuple "$name")
    [[ -n "$port" ]] || { echo 0; return; }
    n=$(_xf_upload_conn "$port")
    if [[ -n "$n" ]]; then file_size "$XF_DIR/recv/$n"; else echo 0; fi
}

# _xf_upload_conn TUPLE: serve-recv's connection number (its file name) of the
# upload from the client's ADDR:PORT ("" before it was accepted).
# With XF_SNAT4 / XF_SNAT6 set (a router that source-NATs, keeping the port), the server
# sees the client's port from that address.
_xf_upload_conn() {
    local peer=$1
    if [[ -n "${XF_SNAT6:-}" && "$peer" == \[* ]]; then peer="[$XF_SNAT6]:${peer##*:}"
    elif [[ -n "${XF_SNAT4:-}" && "$peer" != \[* && -n "$peer" ]]; then peer="$XF_SNAT4:${peer##*:}"; fi
    awk -v peer="$peer" '$1 == "ACCEPTED" && $3 == "PEER=" peer { n = substr($2, 6) } END { print n }' \
        "$(bg_log xf-serve-recv)"
}

# _xf_moved_all: "NAME BYTES" for every transfer of the set, in one pass (one
# python process, so that polling stays cheap with 50 transfers).
_xf_moved_all() {
    local name specs=()
    for name in "${XF_NAMES[@]}"; do specs+=("$name:${XF_KIND[$name]}"); done
    flowcheck xfers-moved "$TEST_TMP" "$XF_DIR" "${specs[@]}"
}

# xfers_progress_permille: "MIN MAX" bytes moved by the transfers of the set, in
# per mille of the size (uploads: what the server has received so far).
xfers_progress_permille() {
    local size=$((XF_MIB << 20))
    _xf_moved_all | awk -v size="$size" '
        { p = int($2 * 1000 / size); if (NR == 1 || p < min) min = p; if (p > max) max = p }
        END { print min + 0, max + 0 }'
}

# xfers_progress_list: "NAME:PERMILLE ..." for every transfer.
xfers_progress_list() {
    _xf_moved_all | awk -v size=$((XF_MIB << 20)) '{ printf "%s%s:%d", (NR > 1 ? " " : ""), $1, int($2 * 1000 / size) } END { print "" }'
}

# xfers_wait_progress PERMILLE TIMEOUT_S: until every transfer has moved at least
# PERMILLE/1000 of its size; fails if one ends (or none progresses) first.
xfers_wait_progress() {
    # The slowest transfer reaching WANT ends the wait; so does the fastest reaching
    # CAP (third argument, default 700): on a loaded machine the transfers do not all
    # move at their paced rate, and an event meant for the middle of every transfer
    # must happen before the first one ends (xfers_assert_running checks that).
    local want=$1 timeout=$2 cap=${3:-700} deadline=$((SECONDS + $2)) p name
    while :; do
        p=$(xfers_progress_permille)
        ((${p% *} >= want)) && break
        if ((want > 100 && ${p#* } >= cap)); then
            log "the fastest transfer reached $cap per mille before the slowest reached $want"
            break
        fi
        for name in "${XF_NAMES[@]}"; do
            bg_alive "xf-$name" || fail "transfer $name ended before all reached $want per mille (per mille moved: $(xfers_progress_list))"
        done
        ((SECONDS < deadline)) || fail "transfers did not all reach $want per mille within ${timeout}s (per mille moved: $(xfers_progress_list))"
        sleep 0.2
    done
    log "transfers progress: min/max ${p// //} per mille of $XF_MIB MiB"
}

# xfers_assert_running: every client is still running (so an event now happens
# in the middle of every transfer).
xfers_assert_running() {
    local name ended=()
    for name in "${XF_NAMES[@]}"; do
        bg_alive "xf-$name" || ended+=("$name")
    done
    [[ ${#ended[@]} -eq 0 ]] || fail "transfers already ended: ${ended[*]} (the test would prove nothing for them)"
}

# xfers_release [RATE]: held transfers (xfers_servers_start RATE hold) send the rest
# of their files, unpaced (or at RATE bytes/s each). Says how many reached the hold
# point first (the test's events took longer than the paced part of the transfers).
xfers_release() {
    [[ -n "$XF_HOLD" && ! -e "$XF_HOLD" ]] || return 0
    local rate=${1:-} held=0 name at
    at=$(xfers_progress_permille | tr ' ' /)
    # serve-send's log holds earlier sets' lines too: only its lines since xfers_prepare.
    held=$(tail -n "+$((XF_SEND_LOG_LINES + 1))" "$(bg_log xf-serve-send)" | grep -c '^HELD ' || true)
    for name in "${XF_NAMES[@]}"; do
        if [[ "${XF_KIND[$name]}" == up ]] && grep -q '^HELD ' "$(bg_log "xf-$name")"; then held=$((held + 1)); fi
    done
    # The rate in the file before the file is there (xfer.py reads it when it appears).
    printf '%s' "$rate" >"$XF_HOLD.new" && mv -f "$XF_HOLD.new" "$XF_HOLD" || fail "cannot write $XF_HOLD"
    local how=unpaced
    [[ -z "$rate" ]] || how="at $((rate >> 10)) KiB/s each"
    log "transfers released at progress $at per mille ($held had reached the hold point), the rest $how"
}

# xfers_wait TIMEOUT_S: release held transfers, then wait for every client; fail naming
# those that failed or hang.
xfers_wait() {
    local timeout=$1 deadline=$((SECONDS + $1)) name bad=() left bad_ports=()
    xfers_release
    for name in "${XF_NAMES[@]}"; do
        left=$((deadline - SECONDS))
        ((left > 0)) || left=1
        local rc=0
        if ! bg_alive "xf-$name" && [[ -n "${_BG_DONE[xf-$name]:-}" ]]; then
            rc=${_BG_RC[xf-$name]}
        else
            local pid
            pid=$(bg_pid "xf-$name")
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
            if kill -0 "$pid" 2>/dev/null; then
                bad+=("$name(still running after ${timeout}s, moved $(_xf_moved "$name") bytes)")
                bad_ports+=("$(xfers_client_port "$name")")
                continue
            fi
            bg_wait "xf-$name" 5 || rc=$?
        fi
        ((rc == 0)) || { bad+=("$name(exit $rc: $(tail -n 1 "$(bg_log "xf-$name")"))"); bad_ports+=("$(xfers_client_port "$name")"); }
    done
    if [[ ${#bad[@]} -gt 0 ]]; then
        xfers_debug_dump "${bad_ports[@]}"
        fail "${#bad[@]} of ${#XF_NAMES[@]} transfers failed: ${bad[*]}"
    fi
    log "all ${#XF_NAMES[@]} transfers ended with status 0"
}

# xfers_verify: every download's file and every upload as the server stored it
# has the SHA-256 of its source (uploads matched through the client port).
xfers_verify() {
    local name got port n bad=()
    for name in "${XF_NAMES[@]}"; do
        if [[ "${XF_KIND[$name]}" == down ]]; then
            got=$(sha256_of "$XF_DIR/got/$name")
        else
            port=$(xfers_client_tuple "$name")
            n=$(_xf_upload_conn "$port")
            if [[ -z "$port" || -z "$n" ]]; then
                bad+=("$name(the server logged no upload from client '${port}')")
                continue
            fi
            got=$(cut -d' ' -f1 "$XF_DIR/recv/$n.sha256" 2>/dev/null || true)
        fi
        [[ "$got" == "${XF_WANT[$name]}" ]] || bad+=("$name(sha256 ${got:-none}, want ${XF_WANT[$name]})")
    done
    [[ ${#bad[@]} -eq 0 ]] || fail "${#bad[@]} of ${#XF_NAMES[@]} transfers differ: ${bad[*]}"
    log "all ${#XF_NAMES[@]} transfers byte-exact (SHA-256 of each equals its source's)"
}

# xfers_debug_dump [CLIENT_PORT...]: what a stalled transfer looks like, to stderr: sockets
# in every namespace (`ss -e` too: iproute2 6.1 prints "ts" and "sack" only with it), the
# kernels' counters of what they dropped, and spliced's view; with client ports, 6 s of
# those connections' packets at both ends (tcpdump -vv: TSvals, checksums), where a stalled
# transfer's retransmissions show why they are not taken.
xfers_debug_dump() {
    local ns
    {
        local filter="" p pids=()
        for p in "$@"; do [[ -n "$p" ]] && filter+="${filter:+ or }port $p"; done
        if [[ -n "$filter" ]]; then
            for ns in "$NS_C" "$NS_S"; do
                nsx "$ns" timeout 6 tcpdump -i eth0 -n -vv -c 40 "tcp and ($filter)" >"$TEST_TMP/stall-$ns.txt" 2>&1 &
                pids+=($!)
            done
            wait "${pids[@]}"
            for ns in "$NS_C" "$NS_S"; do
                echo "----- 6 s of tcp ($filter) at eth0 in $ns -----"
                head -n 120 "$TEST_TMP/stall-$ns.txt"
            done
        fi
        for ns in "${_NAMESPACES[@]}"; do
            echo "----- ss -tnie in $ns -----"
            nsx "$ns" ss -tnie 2>&1 | grep -v 'cgroup2 mount' | head -n 400
            # Which way the kernel ended a connection (TCPAbortOnTimeout: ETIMEDOUT), and what it
            # dropped on arrival (checksum, PAWS, out of window).
            echo "----- nstat (aborts, resets, timeouts, PAWS, undo, drops) in $ns -----"
            nsx "$ns" nstat -az 2>/dev/null \
                | awk '$2 > 0 && /Abort|Reset|Timeout|PAWS|Undo|SpuriousRTO|CsumErrors|InErrs|OutOfWindow|Challenge|SeqSkip|Drop/ { printf "%s=%s ", $1, $2 } END { print "" }'
        done
        if [[ -n "$CTL_SOCK" && -S "$CTL_SOCK" ]]; then
            echo "----- splicectl status --json -----"
            splicectl status --json 2>&1 || true
            echo "----- splicectl flows -----"
            splicectl flows 2>&1 | head -n 200 || true
        fi
    } >&2
}

# flows_assert_all MODE REASON MIN [PORTS]: spliced lists at least MIN flows to
# the transfer ports (or the comma-separated PORTS), and every one of them is in
# MODE with REASON. Prints the flows that are not on failure.
flows_assert_all() {
    local mode=$1 reason=$2 min=$3 ports=${4:-$XF_DOWN_PORT,$XF_UP_PORT}
    flows_json | flowcheck all "$mode" "$reason" "$min" "$ports" \
        || fail "not every flow to ports $ports is $mode/$reason (or fewer than $min flows)"
    log "every flow to ports $ports ($(flows_json | json_get count-in . dport "$ports") flows) is $mode/$reason"
}

# flows_of_clients_assert MODE REASON [--proxy ID] PORTS...: the flows of exactly
# these client ports are listed and all in MODE/REASON (and bound to proxy ID).
# Where a port has several flows (an earlier flow of the same port number, in
# TIME_WAIT, or of the other family), the youngest is the one meant.
flows_of_clients_assert() {
    local mode=$1 reason=$2 proxy=-1
    shift 2
    if [[ "${1:-}" == --proxy ]]; then proxy=$2; shift 2; fi
    local opts=()
    ((proxy < 0)) || opts=(--proxy "$proxy")
    flows_json | flowcheck clients "${opts[@]}" "$mode" "$reason" "$@" \
        || fail "the flows of client ports $* are not all $mode/$reason$( ((proxy < 0)) || echo " with proxy $proxy")"
}

# resilient_stat KEY: one counter of status.resilient.
resilient_stat() {
    status_json | json_get "resilient.$1"
}

# resilient_assert_through_proxy N [PROXY_ID]: the N transfers go through the
# proxy: every flow to the transfer ports is resilient/policy (bound to PROXY_ID
# when given), the router holds N established sockets facing the clients (local
# port = a server port) and N facing the server (bound to the clients' tuples),
# and spliced has translated packets of the proxy.
resilient_assert_through_proxy() {
    local n=$1 id=${2:-} down up translated
    flows_assert_all resilient policy "$n"
    if [[ -n "$id" ]]; then
        flows_json | flowcheck bound "$id" \
            || fail "resilient flows not bound to the proxy's id $id"
    fi
    down=$(nsx "$NS_R" ss -Htn state established "( sport = :$XF_DOWN_PORT or sport = :$XF_UP_PORT )" | wc -l)
    up=$(nsx "$NS_R" ss -Htn state established "( dport = :$XF_DOWN_PORT or dport = :$XF_UP_PORT )" | wc -l)
    log "the proxy holds $down sockets facing the clients and $up facing the server"
    ((down >= n && up >= n)) || fail "the proxy holds $down client-side and $up server-side sockets in the router, expected $n each"
    translated=$(resilient_stat fromProxyTranslated)
    ((translated > 0)) || fail "no packet of the proxy was translated (fromProxyTranslated=$translated)"
    # The ends' packets arrive on queue 0 (fail-open), the proxy's on queue 1
    # (fail-closed: a full queue drops them rather than let them out untranslated).
    status_json | flowcheck resilient-queues \
        || fail "queues not as expected (0: the ends', fail-open; 1: the proxy's, fail-closed)"
}

# resilient_xfers_start N MIB RATE DST...: the common start of the failure tests
# (after the rules and spliced): splice-proxy started (PROXY_PID, PROXY_ID), N
# transfers of MIB MiB (half downloads, half uploads) at RATE bytes/s each to the
# DST addresses in turn, all connected and 5% of the way, every flow
# resilient/policy through the proxy, which holds both sockets of each.
resilient_xfers_start() {
    local n=$1 mib=$2 rate=$3
    shift 3
    proxy_start splice-proxy
    PROXY_PID=$(bg_pid splice-proxy)
    PROXY_ID=$(proxy_id_of "$PROXY_PID")
    xfers_prepare $((n / 2)) $((n - n / 2)) "$mib"
    xfers_servers_start "$rate" hold
    xfers_start "$@"
    xfers_wait_connected 30
    xfers_wait_progress 50 60
    resilient_assert_through_proxy "$n" "$PROXY_ID"
}

# proxy_kill_now: SIGKILL to splice-proxy (started by proxy_start), which must die
# of it (exit status 137).
proxy_kill_now() {
    local rc=0 pid
    pid=$(bg_pid splice-proxy)
    bg_kill splice-proxy KILL || rc=$?
    [[ $rc -eq 137 ]] || fail "splice-proxy exited with $rc after SIGKILL, expected 137"
    local at=""
    ((${#XF_NAMES[@]} == 0)) || at=" at progress $(xfers_progress_permille | tr ' ' /) per mille"
    log "splice-proxy (pid $pid) killed with SIGKILL$at"
}

# proxy_killed_midway: once every transfer is a third of the way (all still running),
# splice-proxy is killed (SIGKILL); its death is seen and every one of the N flows is in
# bypass because of it.
proxy_killed_midway() {
    xfers_wait_progress 333 120
    xfers_assert_running
    proxy_kill_now
    wait_no_proxy 10
    flows_assert_all bypass proxy-died "$N"
}

# --- a second path (seed 000 FIG. 2E) ---------------------------------------------------
# topo_add_alt: after topo_create, an "alt" router (NS_A, plain forwarding, no
# tcpsplice) joined to a second interface of the client and of the server:
#
#   client eth1 10.77.3.2/24 fd77:3::2 --- ac0 10.77.3.1 [alt] as0 10.77.4.1 --- eth1 10.77.4.2/24 fd77:4::2 server
#
# The client and the server reach each other's prefix through the splice router
# (metric 10) and, second best, through alt (metric 100), and ignore routes whose
# link is down (ignore_routes_with_linkdown), so that when the splice router's
# links go down the kernel routes over alt. alt counts the forwarded packets of
# the transfer ports in FORWARD (alt_forwarded_packets).
ALT_IP_C=10.77.3.1
ALT_IP_S=10.77.4.1
ALT_IP6_C=fd77:3::1
ALT_IP6_S=fd77:4::1
NS_A=""
topo_add_alt() {
    [[ -n "$NS_C" && -n "$NS_S" ]] || fail "topo_add_alt: call topo_create first"
    ns_add a; NS_A=$NS_LAST
    ip -n "$NS_C" link add eth1 type veth peer name ac0 netns "$NS_A" \
        || fail "cannot create the client-alt veth pair"
    ip -n "$NS_S" link add eth1 type veth peer name as0 netns "$NS_A" \
        || fail "cannot create the server-alt veth pair"
    ip -n "$NS_C" addr add 10.77.3.2/24 dev eth1
    ip -n "$NS_C" addr add fd77:3::2/64 dev eth1 nodad
    ip -n "$NS_S" addr add 10.77.4.2/24 dev eth1
    ip -n "$NS_S" addr add fd77:4::2/64 dev eth1 nodad
    ip -n "$NS_A" addr add "$ALT_IP_C/24" dev ac0
    ip -n "$NS_A" addr add "$ALT_IP6_C/64" dev ac0 nodad
    ip -n "$NS_A" addr add "$ALT_IP_S/24" dev as0
    ip -n "$NS_A" addr add "$ALT_IP6_S/64" dev as0 nodad
    local ns
    for ns in "$NS_C" "$NS_S"; do
        nsx "$ns" sysctl -qw net.ipv4.conf.all.ignore_routes_with_linkdown=1 \
            net.ipv4.conf.default.ignore_routes_with_linkdown=1 \
            net.ipv6.conf.all.ignore_routes_with_linkdown=1 \
            net.ipv6.conf.default.ignore_routes_with_linkdown=1 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            || fail "cannot set ignore_routes_with_linkdown in $ns"
        nsx "$ns" sysctl -qw net.ipv4.conf.eth0.ignore_routes_with_linkdown=1 \
            net.ipv6.conf.eth0.ignore_routes_with_linkdown=1 net.ipv4.conf.eth0.rp_filter=0 \
            || fail "cannot set ignore_routes_with_linkdown on eth0 in $ns"
        end_link_queue "$ns" eth1
        ip -n "$ns" link set eth1 up
    done
    ip -n "$NS_A" link set ac0 up
    ip -n "$NS_A" link set as0 up
    nsx "$NS_A" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        || fail "cannot enable forwarding in alt"
    ip -n "$NS_A" route add 10.77.1.0/24 via 10.77.3.2
    ip -n "$NS_A" -6 route add fd77:1::/64 via fd77:3::2
    ip -n "$NS_A" route add 10.77.2.0/24 via 10.77.4.2
    ip -n "$NS_A" -6 route add fd77:2::/64 via fd77:4::2
    # The ends: the splice router first, alt second.
    ip -n "$NS_C" route add 10.77.2.0/24 via "$ROUTER_IP_C" metric 10
    ip -n "$NS_C" route add 10.77.2.0/24 via "$ALT_IP_C" metric 100
    ip -n "$NS_C" -6 route add fd77:2::/64 via "$ROUTER_IP6_C" metric 10
    ip -n "$NS_C" -6 route add fd77:2::/64 via "$ALT_IP6_C" metric 100
    ip -n "$NS_S" route add 10.77.1.0/24 via "$ROUTER_IP_S" metric 10
    ip -n "$NS_S" route add 10.77.1.0/24 via "$ALT_IP_S" metric 100
    ip -n "$NS_S" -6 route add fd77:1::/64 via "$ROUTER_IP6_S" metric 10
    ip -n "$NS_S" -6 route add fd77:1::/64 via "$ALT_IP6_S" metric 100
    # Count what alt forwards of the transfers.
    local ipt
    for ipt in iptables ip6tables; do
        nsx "$NS_A" "$ipt" -A FORWARD -p tcp -m multiport --ports "$XF_DOWN_PORT,$XF_UP_PORT" \
            -m comment --comment "tcpsplice test: transfers through alt" \
            || fail "cannot add the counting rule in alt ($ipt)"
    done
    log "alt path up: client eth1 10.77.3.2 -- alt $NS_A -- server eth1 10.77.4.2 (metric 100, ignore_routes_with_linkdown)"
}

# alt_forwarded_packets [4|6] / alt_forwarded_bytes [4|6]: what alt forwarded of
# the transfers (both families, or one).
_alt_counter() {
    local col=$1 fam=${2:-} ipt total=0 v ipts=(iptables ip6tables)
    [[ "$fam" == 4 ]] && ipts=(iptables)
    [[ "$fam" == 6 ]] && ipts=(ip6tables)
    for ipt in "${ipts[@]}"; do
        v=$(nsx "$NS_A" "$ipt" -w 5 -t filter -L FORWARD -v -n -x | awk -v c="$col" '/transfers through alt/ { print $c; exit }')
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
alt_forwarded_packets() { _alt_counter 1 "${1:-}"; }
alt_forwarded_bytes() { _alt_counter 2 "${1:-}"; }

# alt_withdraw_router_routes6: delete the ends' IPv6 routes through the splice
# router, as a routing protocol withdraws the routes of a dead neighbour. Needed
# for IPv6: a connected IPv6 socket keeps its cached route through the dead link
# (linkdown does not invalidate it; seen with plain forwarding, no tcpsplice at
# all), while IPv4 sockets move to the alternate route on linkdown alone.
alt_withdraw_router_routes6() {
    ip -n "$NS_C" -6 route del fd77:2::/64 via "$ROUTER_IP6_C" metric 10 || fail "cannot withdraw the client's IPv6 route via the splice router"
    ip -n "$NS_S" -6 route del fd77:1::/64 via "$ROUTER_IP6_S" metric 10 || fail "cannot withdraw the server's IPv6 route via the splice router"
}

# route_dev NS DST: the interface NS routes DST through right now.
route_dev() {
    ip -n "$1" route get "$2" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1
}

# --- impaired links (no netem in this kernel) --------------------------------------------
# impair_links [LOSS] [DUP] [REORDER] [SLOW_RATE]: after topo_create, loss,
# duplication and reordering of TCP on both links (client<->router and
# router<->server), in both directions, each a random fraction of the packets
# (defaults 0.01, 0.01, 0.03), emulated with what this kernel has (netem is not
# built; statistic, TEE, CLASSIFY and HTB are):
#
#   loss       -m statistic --mode random --probability LOSS -j DROP at the
#              receiver's ingress (raw PREROUTING -i IF, before conntrack and
#              before the engine's queue): the packet was sent and the link lost
#              it. Not at the sender's egress: a locally generated packet dropped
#              there makes the sender's send fail with EPERM, so its TCP knows
#              and sends it again at once, which is no loss at all.
#   duplicate  -j TEE (a copy of the packet): client->router and server->router
#              at the sender's egress (--gateway the router); router->client and
#              router->server at the receiver's ingress (mangle PREROUTING -i
#              eth0, --gateway the end's own address: the copy loops back and is
#              delivered again). Not at the router's egress: TEE sends its copy
#              through OUTPUT, where raw TCPSPLICE_OUT would queue a copy of a
#              forwarded packet as if the proxy had sent it.
#   reorder    -j CLASSIFY --set-class 1:20 into a slow HTB class (SLOW_RATE,
#              default 12mbit: ~1 ms per packet, one packet of burst) whose FIFO
#              holds at most 16 packets, at the sender's egress: a selected packet
#              waits for tokens (up to ~20 ms) and leaves after packets sent after
#              it. The delay stays far below the 200 ms minimum RTO on purpose:
#              an earlier 2mbit class with a 200-packet FIFO held packets up to
#              1.2 s in their sender's own qdisc, and 3-4 of 50 connections ended
#              with ETIMEDOUT at an RTO while the segment they waited for was
#              still there (captured; the kernel does not retransmit a segment
#              still in the host queue). Real reordering happens in the network,
#              not in the sender's qdisc.
#
# Rules live in chains of our own (TSTEST_IMPAIR_LOSS in raw PREROUTING,
# TSTEST_IMPAIR_OUT in mangle POSTROUTING, TSTEST_IMPAIR_IN in mangle PREROUTING
# of the ends), which the tcpsplice chains (mangle PREROUTING jump TCPSPLICE_PRE,
# raw OUTPUT) never meet: in the router the impairments sit in raw PREROUTING
# (loss, before the engine sees the packet) and mangle POSTROUTING (after the
# engine's verdicts). GSO,
# TSO and GRO are turned off on the impaired interfaces and their gso_max_segs is
# 1 (TCP builds GSO packets even for a device without GSO), so that every packet
# is one MTU-sized segment, the proxy's included; a counter checks it.
# Both families (iptables and ip6tables).
IMPAIR_IFS=()   # "NS IF" of every impaired egress
impair_links() {
    local loss=${1:-0.01} dup=${2:-0.01} reorder=${3:-0.03} slow=${4:-12mbit}
    command -v ethtool >/dev/null 2>&1 || fail "'ethtool' not found on PATH (run Scripts/setup.sh)"
    command -v tc >/dev/null 2>&1 || fail "'tc' not found on PATH (run Scripts/setup.sh)"
    local spec ns ifc fam ipt
    IMPAIR_IFS=("$NS_C eth0" "$NS_S eth0" "$NS_R rc0" "$NS_R rs0")
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        for ipt in iptables ip6tables; do
            nsx "$ns" "$ipt" -w 5 -t mangle -N TSTEST_IMPAIR_OUT || fail "cannot create TSTEST_IMPAIR_OUT in $ns ($ipt)"
            nsx "$ns" "$ipt" -w 5 -t mangle -I POSTROUTING 1 -j TSTEST_IMPAIR_OUT
            nsx "$ns" "$ipt" -w 5 -t raw -N TSTEST_IMPAIR_LOSS || fail "cannot create TSTEST_IMPAIR_LOSS in $ns ($ipt)"
            nsx "$ns" "$ipt" -w 5 -t raw -I PREROUTING 1 -j TSTEST_IMPAIR_LOSS
            if [[ "$ns" != "$NS_R" ]]; then
                nsx "$ns" "$ipt" -w 5 -t mangle -N TSTEST_IMPAIR_IN || fail "cannot create TSTEST_IMPAIR_IN in $ns ($ipt)"
                nsx "$ns" "$ipt" -w 5 -t mangle -I PREROUTING 1 -j TSTEST_IMPAIR_IN
            fi
        done
    done
    # _impair_rule NS FAMILY CHAIN IF-MATCH PROBABILITY WHAT TARGET...
    _impair_rule() {
        local ns=$1 fam=$2 chain=$3 ifm=$4 p=$5 what=$6 ipt=iptables table=mangle
        shift 6
        [[ "$fam" == 6 ]] && ipt=ip6tables
        [[ "$chain" == TSTEST_IMPAIR_LOSS ]] && table=raw
        # shellcheck disable=SC2086 # ifm is "-o IF" or "-i IF"
        nsx "$ns" "$ipt" -w 5 -t "$table" -A "$chain" $ifm -p tcp -m statistic --mode random --probability "$p" \
            -m comment --comment "tstest impair: $what" "$@" \
            || fail "cannot add the '$what' impairment in $ns ($ipt $chain $ifm): $*"
    }
    for spec in "${IMPAIR_IFS[@]}"; do
        read -r ns ifc <<<"$spec"
        nsx "$ns" ethtool -K "$ifc" gso off tso off gro off || fail "ethtool -K $ifc gso/tso/gro off failed in $ns"
        # TCP builds GSO packets whatever the device offers (segmented later, at
        # the device, after POSTROUTING); one segment per packet needs this:
        ip -n "$ns" link set dev "$ifc" gso_max_segs 1 || fail "cannot set gso_max_segs 1 on $ifc in $ns"
        # Counts packets larger than the MTU at the impaired egress (must stay 0).
        for fam in 4 6; do
            local ipt6=iptables
            [[ "$fam" == 6 ]] && ipt6=ip6tables
            nsx "$ns" "$ipt6" -w 5 -t mangle -A TSTEST_IMPAIR_OUT -o "$ifc" -m length --length 1501:65535 \
                -m comment --comment "tstest impair: oversize " || fail "cannot add the oversize counter in $ns"
        done
        # Reordering at the egress; loss at the ingress (this interface is the
        # receiver of the opposite direction).
        for fam in 4 6; do
            _impair_rule "$ns" "$fam" TSTEST_IMPAIR_OUT "-o $ifc" "$reorder" reorder -j CLASSIFY --set-class 1:20
            _impair_rule "$ns" "$fam" TSTEST_IMPAIR_LOSS "-i $ifc" "$loss" loss -j DROP
        done
        tc -n "$ns" qdisc replace dev "$ifc" root handle 1: htb default 10 || fail "cannot add htb on $ifc in $ns"
        tc -n "$ns" class add dev "$ifc" parent 1: classid 1:10 htb rate 10gbit quantum 60000
        tc -n "$ns" class add dev "$ifc" parent 1: classid 1:20 htb rate "$slow" ceil "$slow" burst 1600 cburst 1600
        tc -n "$ns" qdisc add dev "$ifc" parent 1:10 handle 10: pfifo limit 10000
        tc -n "$ns" qdisc add dev "$ifc" parent 1:20 handle 20: pfifo limit 16
    done
    # Duplication: the ends' egress toward the router, and their ingress from it.
    _impair_rule "$NS_C" 4 TSTEST_IMPAIR_OUT "-o eth0" "$dup" duplicate -j TEE --gateway "$ROUTER_IP_C"
    _impair_rule "$NS_C" 6 TSTEST_IMPAIR_OUT "-o eth0" "$dup" duplicate -j TEE --gateway "$ROUTER_IP6_C"
    _impair_rule "$NS_S" 4 TSTEST_IMPAIR_OUT "-o eth0" "$dup" duplicate -j TEE --gateway "$ROUTER_IP_S"
    _impair_rule "$NS_S" 6 TSTEST_IMPAIR_OUT "-o eth0" "$dup" duplicate -j TEE --gateway "$ROUTER_IP6_S"
    _impair_rule "$NS_C" 4 TSTEST_IMPAIR_IN "-i eth0" "$dup" duplicate -j TEE --gateway "$CLIENT_IP"
    _impair_rule "$NS_C" 6 TSTEST_IMPAIR_IN "-i eth0" "$dup" duplicate -j TEE --gateway "$CLIENT_IP6"
    _impair_rule "$NS_S" 4 TSTEST_IMPAIR_IN "-i eth0" "$dup" duplicate -j TEE --gateway "$SERVER_IP"
    _impair_rule "$NS_S" 6 TSTEST_IMPAIR_IN "-i eth0" "$dup" duplicate -j TEE --gateway "$SERVER_IP6"
    # Those copies are made after an end's capture point (paws_report).
    [[ "$dup" == 0 ]] || IMPAIR_INGRESS_COPIES=1
    log "links impaired both ways: loss $loss, duplication $dup, reordering $reorder (slow class $slow); GSO/TSO/GRO off"
}

# impair_loss_off: no more loss (the loss chains flushed in every namespace; duplication and
# reordering stay), for a step whose point is not loss: a reset lost on the way is never made
# again when its receiver only waits (nothing it sends would draw another).
impair_loss_off() {
    local ns ipt
    for ns in "$NS_C" "$NS_S" "$NS_R"; do
        for ipt in iptables ip6tables; do
            nsx "$ns" "$ipt" -w 5 -t raw -F TSTEST_IMPAIR_LOSS || fail "cannot flush TSTEST_IMPAIR_LOSS in $ns ($ipt)"
        done
    done
    log "links: no more loss (duplication and reordering as before)"
}

# impair_counts: one line per impaired direction, "DIRECTION loss=N dup=N reorder=N
# slow_sent=N slow_overlimits=N slow_dropped=N oversize=N" (packets; slow_* from the HTB class
# 1:20 of the egress interface; oversize: packets larger than the MTU at the
# egress, which would make loss hit many segments at once).
_impair_rule_count() {  # NS CHAIN IF-MATCH WHAT -> packets matched (both families)
    local ns=$1 chain=$2 ifm=$3 what=$4 ipt total=0 v table=mangle
    [[ "$chain" == TSTEST_IMPAIR_LOSS ]] && table=raw
    for ipt in iptables ip6tables; do
        v=$(nsx "$ns" "$ipt" -w 5 -t "$table" -L "$chain" -v -n -x 2>/dev/null | awk -v ifc="$ifm" -v w="tstest impair: $what " '
            index($0, w) && (($6 == ifc && ifc != "*") || ($7 == ifc)) { s += $1 } END { print s + 0 }')
        total=$((total + v))
    done
    echo "$total"
}
_impair_slow() {  # NS IF -> "SENT OVERLIMITS DROPPED" of class 1:20
    tc -n "$1" -s class show dev "$2" classid 1:20 | awk '/Sent/ { s = $4; for (i = 1; i <= NF; i++) { if ($i == "overlimits") o = $(i + 1); if ($i == "(dropped") d = $(i + 1) } } END { gsub(",", "", d); print s + 0, o + 0, d + 0 }'
}
impair_counts() {
    local dir name ns_tx if_tx ns_dup chain_dup if_dup ns_rx if_rx slow_sent slow_over slow_drop
    for dir in "client->router|$NS_C|eth0|$NS_C|TSTEST_IMPAIR_OUT|eth0|$NS_R|rc0" \
               "router->client|$NS_R|rc0|$NS_C|TSTEST_IMPAIR_IN|eth0|$NS_C|eth0" \
               "server->router|$NS_S|eth0|$NS_S|TSTEST_IMPAIR_OUT|eth0|$NS_R|rs0" \
               "router->server|$NS_R|rs0|$NS_S|TSTEST_IMPAIR_IN|eth0|$NS_S|eth0"; do
        IFS='|' read -r name ns_tx if_tx ns_dup chain_dup if_dup ns_rx if_rx <<<"$dir"
        read -r slow_sent slow_over slow_drop < <(_impair_slow "$ns_tx" "$if_tx")
        printf '%s loss=%s dup=%s reorder=%s slow_sent=%s slow_overlimits=%s slow_dropped=%s oversize=%s\n' "$name" \
            "$(_impair_rule_count "$ns_rx" TSTEST_IMPAIR_LOSS "$if_rx" loss)" \
            "$(_impair_rule_count "$ns_dup" "$chain_dup" "$if_dup" duplicate)" \
            "$(_impair_rule_count "$ns_tx" TSTEST_IMPAIR_OUT "$if_tx" reorder)" \
            "$slow_sent" "$slow_over" "$slow_drop" \
            "$(_impair_rule_count "$ns_tx" TSTEST_IMPAIR_OUT "$if_tx" oversize)"
    done
}

# impair_assert_active: every impaired direction dropped, duplicated and
# reordered packets (rule counters > 0, packets sent through the slow class > 0,
# and some of them made to wait there: overlimits > 0, these are the packets that
# left after their successors), and no packet larger than the MTU left an
# impaired interface.
impair_assert_active() {
    local line bad=() counts
    counts=$(impair_counts)
    while read -r line; do
        log "impaired $line"
        local name=${line%% *} k v kv
        for kv in ${line#* }; do
            k=${kv%%=*} v=${kv#*=}
            case "$k" in
                slow_overlimits) ((v > 0)) || bad+=("$name:no packet waited in the slow class (nothing reordered)") ;;
                slow_dropped) ;;   # a full slow FIFO: more loss, reported only
                oversize) ((v == 0)) || bad+=("$name:$v packets larger than the MTU") ;;
                *) ((v > 0)) || bad+=("$name:$k=0") ;;
            esac
        done
    done <<<"$counts"
    [[ ${#bad[@]} -eq 0 ]] || fail "impairments did not all happen: ${bad[*]}"
}

# --- crowds: thousands of concurrent short HTTP downloads -------------------------------
# nginx serves one random file from the server namespace; crowd.py in the client
# starts COUNT connections at once, each downloading it once (Connection: close),
# and counts ok, wrong (arrived whole, not byte-exact) and errors by kind.
#
#   load_sysctls NS               what a host taking thousands of connections sets
#                                 (somaxconn, SYN backlog, ephemeral ports)
#   nginx_start NS PORT           nginx (Debian's) in NS on PORT, IPv4 and IPv6, serving
#                                 $CROWD_DIR; background name nginx
#   nginx_start_named NAME NS ADDR PORT ROOT [KEEPALIVE_S] [WORKERS]
#                                 one more nginx (several may run side by side): in NS on
#                                 ADDR:PORT (IPv4), serving ROOT; background name NAME,
#                                 its files in $TEST_TMP/NAME, a buffered access log
#                                 $TEST_TMP/NAME/access.log (nginx_requests_log)
#   crowd_prepare BYTES           the file ($CROWD_DIR/f) and its SHA-256 ($CROWD_SHA)
#   crowd_run NAME HOST PORT COUNT [CROWD ARGS...]
#                                 crowd.py in the client; its JSON line in
#                                 $TEST_TMP/crowd-NAME.json; returns crowd.py's status
#   crowd_field NAME PATH         a path into the JSON of run NAME (json_get)
CROWD_DIR=""
CROWD_SHA=""
CROWD_BYTES=0

load_sysctls() {
    nsx "$1" sysctl -qw net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 \
        net.ipv4.ip_local_port_range="10000 65000" >/dev/null \
        || fail "cannot set the load sysctls in $1"
}

nginx_start() {
    local ns=$1 port=$2 dir="$TEST_TMP/nginx"
    command -v nginx >/dev/null 2>&1 || fail "'nginx' not found on PATH (run Scripts/setup.sh)"
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<NGEOF
# generated by tcpsplice Tests/netns/lib.sh (nginx_start)
user root;
worker_processes 2;
worker_rlimit_nofile 100000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 40000; multi_accept on; }
http {
    access_log off;
    sendfile on;
    tcp_nopush off;
    keepalive_timeout 0;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen $port backlog=65535;
        listen [::]:$port backlog=65535 ipv6only=on;
        root $CROWD_DIR;
    }
}
NGEOF
    bg_start nginx "$ns" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    wait_port "$ns" "$port" 10
    log "nginx running in $ns on port $port (pid $(bg_pid nginx))"
}

# nginx_start_named NAME NS ADDR PORT ROOT [KEEPALIVE_S] [WORKERS]: nginx (Debian's) in NS,
# listening on ADDR:PORT only (IPv4), serving the directory ROOT, with WORKERS worker processes
# (default 2) and keepalive_timeout KEEPALIVE_S (default 0: every answer closes its
# connection, as nginx_start). Background name NAME; its configuration, pid, error log and
# access log in $TEST_TMP/NAME. The access log (buffered, flushed within a second) has one
# line per request: "PID CONNECTION CONNECTION_REQUESTS STATUS BYTES" (nginx's $pid,
# $connection, $connection_requests, $status, $body_bytes_sent), so that a benchmark can count
# the requests and the connections a backend served. Several can run side by side, in the same
# namespace or not (distinct NAMEs).
nginx_start_named() {
    local name=$1 ns=$2 addr=$3 port=$4 root=$5 keepalive=${6:-0} workers=${7:-2} dir="$TEST_TMP/$1"
    command -v nginx >/dev/null 2>&1 || fail "'nginx' not found on PATH (run Scripts/setup.sh)"
    [[ -d "$root" ]] || fail "nginx_start_named $name: no directory $root to serve"
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<NGEOF
# generated by tcpsplice Tests/netns/lib.sh (nginx_start_named $name)
user root;
worker_processes $workers;
worker_rlimit_nofile 100000;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 40000; multi_accept on; }
http {
    log_format conns '\$pid \$connection \$connection_requests \$status \$body_bytes_sent';
    access_log $dir/access.log conns buffer=256k flush=1s;
    sendfile on;
    tcp_nopush off;
    keepalive_timeout $keepalive;
    keepalive_requests 100000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen $addr:$port backlog=65535;
        root $root;
    }
}
NGEOF
    nsx "$ns" nginx -t -q -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" \
        || fail "nginx rejects the generated configuration $dir/nginx.conf (see $dir/error.log)"
    bg_start "$name" "$ns" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf"
    wait_for 10 "nginx $name listening on $addr:$port in $ns" _listening_on "$ns" "$addr" "$port"
    log "nginx $name running in $ns on $addr:$port (pid $(bg_pid "$name")), serving $root"
}

# _listening_on NS ADDR PORT: something listens on TCP ADDR:PORT in NS.
_listening_on() {
    [[ -n "$(nsx "$1" ss -Hltn "src $2 and sport = :$3" 2>/dev/null)" ]]
}

# nginx_requests_log NAME: the access log of nginx_start_named NAME (empty until its first
# flush; wait a second after the last request for the rest).
nginx_requests_log() {
    echo "$TEST_TMP/$1/access.log"
}

crowd_prepare() {
    CROWD_DIR="$TEST_TMP/crowd"
    CROWD_BYTES=$1
    mkdir -p "$CROWD_DIR"
    head -c "$CROWD_BYTES" /dev/urandom >"$CROWD_DIR/f"
    CROWD_SHA=$(sha256sum "$CROWD_DIR/f" | cut -d' ' -f1)
}

crowd_run() {
    local name=$1 host=$2 port=$3 count=$4
    shift 4
    local rc=0
    nsx "$NS_C" python3 "$NETNS_DIR/crowd.py" --host "$host" --port "$port" --path /f \
        --count "$count" --sha256 "$CROWD_SHA" --bytes "$CROWD_BYTES" \
        --json "$TEST_TMP/crowd-$name.json" --failures "$TEST_TMP/crowd-$name.failed" "$@" >"$TEST_TMP/crowd-$name.out" 2>&1 || rc=$?
    log "crowd $name ($count to $host:$port): $(tail -n 1 "$TEST_TMP/crowd-$name.out")"
    return "$rc"
}

# tx_dropped NS IF: packets IF in NS could not hand over (for a veth: its peer's backlog full).
tx_dropped() {
    nsx "$1" cat "/sys/class/net/$2/statistics/tx_dropped"
}

crowd_field() {
    json_get "$2" <"$TEST_TMP/crowd-$1.json"
}

# --- floods: spoofed SYNs and ACKs ---------------------------------------------------------
# flood_route: the router routes every address it does not know back to the client, so that
# the server's answers to spoofed sources leave the router (and die in the client, which is
# not a router) instead of being dropped by rp_filter before the queue.
# flood_start NAME syn|ack [PPS]: hping3 in the client floods the server's $XF_DOWN_PORT with
# SYNs or ACKs from random spoofed sources, PPS packets a second or as fast as it can
# (background NAME; stop it with bg_kill NAME).
flood_route() {
    ip -n "$NS_R" route replace default via "$CLIENT_IP" || fail "cannot route spoofed sources back to the client"
}

flood_start() {
    local name=$1 kind=$2 pps=${3:-} flag rate=(--flood)
    command -v hping3 >/dev/null 2>&1 || fail "'hping3' not found on PATH (run Scripts/setup.sh)"
    case "$kind" in
        syn) flag=-S ;;
        ack) flag=-A ;;
        *) fail "flood_start: kind must be syn or ack, not '$kind'" ;;
    esac
    [[ -z "$pps" ]] || rate=(-i "u$((1000000 / pps))")
    bg_start "$name" "$NS_C" hping3 "$flag" "${rate[@]}" --rand-source -q -p "$XF_DOWN_PORT" "$SERVER_IP"
    sleep 0.5
    bg_alive "$name" || fail "hping3 ($kind flood) exited at once (see $name.log)"
}

# ns_counter NS NAME: a kernel SNMP counter (nstat) of namespace NS.
ns_counter() {
    nsx "$1" nstat -az "$2" | awk -v n="$2" '$1 == n { print $2 }'
}

# --- PAWS: segments an end dropped for an old timestamp -----------------------------------
# paws_baseline: remembers TcpExtPAWSEstab of the client and the server (segments an end
# dropped because their TSval was older than one it had seen). paws_report WHAT: prints how
# much each grew since, the segments behind it when a capture was taken (capture_start paws), and
# how many of the ends' packets spliced raised to the TSval the proxy had shown
# (status.resilient.timestampsRaised: those that waited in the ends' queue while the proxy's
# went ahead, Docs/resilient.md). Any growth fails the test, unless both ends' captures show
# that every old segment was the path's own (tsorder.py: a copy the links made, an original
# overtaken by its retransmission, an original that arrived behind later ones; see below).
# PAWS_STRICT=0 makes it a report only, for looking at the captures of a run that shows some
# (Docs/testing.md).
PAWS_BASE_C=0
PAWS_BASE_S=0
# wire_old_tsvals PCAP WHO OUT: the segments of capture PCAP (taken at WHO's interface) with a
# TSval older than one WHO had seen (tsorder.py), into OUT and reported (the count and the first
# 40 lines).
wire_old_tsvals() {
    local line
    tcpdump -n -tt -S -r "$1" 2>/dev/null | python3 "$NETNS_DIR/tsorder.py" >"$3"
    report "segments at $2 with a TSval older than one it had seen, on the wire (capture): $(tail -1 "$3")"
    while IFS= read -r line; do report "    $line"; done < <(head -40 "$3" | grep -v '^old: ')
}
paws_baseline() {
    PAWS_BASE_C=$(ns_counter "$NS_C" TcpExtPAWSEstab)
    PAWS_BASE_S=$(ns_counter "$NS_S" TcpExtPAWSEstab)
}
paws_report() {
    local c s ns
    c=$(ns_counter "$NS_C" TcpExtPAWSEstab)
    s=$(ns_counter "$NS_S" TcpExtPAWSEstab)
    # Old segments on each end's wire, and how many of them were the path's own (tsorder.py:
    # copies, late originals); -1 when that end had no capture.
    local -A wire=([c]=-1 [s]=-1) own=([c]=0 [s]=0)
    for ns in c s; do
        [[ -s "$TEST_TMP/paws-$ns.pcap" ]] || continue
        wire_old_tsvals "$TEST_TMP/paws-$ns.pcap" "the $([[ $ns == c ]] && echo client || echo server)" "$TEST_TMP/paws-$ns.txt"
        wire[$ns]=$(sed -n 's/^old: //p' "$TEST_TMP/paws-$ns.txt")
        own[$ns]=$(sed -n "s/^path's own: //p" "$TEST_TMP/paws-$ns.txt")
        own[$ns]=${own[$ns]:-0}
    done
    local raised
    raised=$(resilient_stat timestampsRaised 2>/dev/null || echo "n/a (no spliced)")
    report "PAWS rejects $1: client +$((c - PAWS_BASE_C)), server +$((s - PAWS_BASE_S)); TSvals raised by spliced: $raised"
    if [[ "${PAWS_STRICT:-1}" != 0 ]] && ((c != PAWS_BASE_C || s != PAWS_BASE_S)); then
        # Excused only when both ends' captures were taken and every old segment on them was
        # the path's own (a copy the links made, an original its retransmission overtook: plain
        # forwarding shows both); the ingress duplication (impair_links) makes its copies after
        # the capture point, so with it a reject need not be on the wire. A wrong TSval of the
        # engine's, or a proxy packet let out after a join, is on the wire and is neither.
        local excused=""
        if ((wire[c] >= 0 && wire[s] >= 0 && wire[c] == own[c] && wire[s] == own[s])); then
            if ((own[c] + own[s] >= (c - PAWS_BASE_C) + (s - PAWS_BASE_S))) || [[ -n "${IMPAIR_INGRESS_COPIES:-}" ]]; then
                excused=1
            fi
        fi
        if [[ -n "$excused" ]]; then
            report "$1: every segment on the wire with an old TSval was the path's own (client ${own[c]}, server ${own[s]}: copies the links made, originals overtaken by their retransmissions)$([[ -n "${IMPAIR_INGRESS_COPIES:-}" ]] && echo ", the rest copies the ingress duplication made after the capture point")"
        else
            fail "$1: the ends dropped segments with old timestamps (PAWS): client +$((c - PAWS_BASE_C)), server +$((s - PAWS_BASE_S))"
        fi
    fi
}

# balancer_topology: after topo_create, the balancer tests' layout: backends 2 and 3 in
# namespaces of their own, each behind a link of its own from the router (backend 1 is the
# server namespace), and the service address VIP on the router's lo. Sets VIP, BACKENDS (their
# addresses), NS_B1..NS_B3 and BACKEND_NS.
balancer_topology() {
    VIP=10.77.9.1
    BACKENDS=("$SERVER_IP" 10.77.12.2 10.77.13.2)
    local i ns
    for i in 2 3; do
        ns_add "b$i"
        eval "NS_B$i=\$NS_LAST"
        ns=$NS_LAST
        ip -n "$ns" link add eth0 type veth peer name rb$i netns "$NS_R" || fail "cannot create the veth of backend $i"
        ip -n "$ns" addr add "10.77.1$i.2/24" dev eth0
        ip -n "$NS_R" addr add "10.77.1$i.1/24" dev rb$i
        ip -n "$ns" link set eth0 up
        ip -n "$NS_R" link set rb$i up
        end_link_queue "$ns" eth0
        ip -n "$ns" route add default via "10.77.1$i.1"
    done
    NS_B1=$NS_S
    BACKEND_NS=("$NS_B1" "$NS_B2" "$NS_B3")
    ip -n "$NS_R" addr add "$VIP/32" dev lo || fail "cannot put the service address on the router's lo"
}

# balancer_backends_start WWW: after balancer_topology, backend.py on port 80 in each of the three
# backends' namespaces (background backend1..3), backend I serving WWW/bI: a copy of
# WWW/shared with a file whoami holding "backendI".
balancer_backends_start() {
    local www=$1 i
    for i in 1 2 3; do
        mkdir -p "$www/b$i"
        cp -r "$www/shared/." "$www/b$i/"
        echo "backend$i" >"$www/b$i/whoami"
        bg_start "backend$i" "${BACKEND_NS[$((i - 1))]}" python3 "$NETNS_DIR/backend.py" "backend$i" \
            "${BACKENDS[$((i - 1))]}" 80 "$www/b$i"
        wait_port "${BACKEND_NS[$((i - 1))]}" 80
    done
}
