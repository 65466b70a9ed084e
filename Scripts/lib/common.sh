# shellcheck shell=bash
# tcpsplice: helpers shared by the scripts in Scripts/ (sourced, never run).
#   die MSG...             print "NAME: error: MSG" to stderr and exit 1
#   note MSG...            print "NAME: MSG" to stderr
#   resolve_backend B      set IPT IP6T IPT_RESTORE IP6T_RESTORE IPT_SAVE IP6T_SAVE
#                          for backend auto|nft|legacy (dies if a tool is missing)
#   ensure_swift_on_path   put /opt/swift/usr/bin on PATH when swift is not found
#   state_file             where install-rules.sh saves what it changed outside
#                          iptables (sysctls), per network namespace
#   probe_new_connections  (benchmarks) time new connections while wrk runs

TCPSPLICE_SCRIPT_NAME=${TCPSPLICE_SCRIPT_NAME:-$(basename "$0")}

die() {
    printf '%s: error: %s\n' "$TCPSPLICE_SCRIPT_NAME" "$*" >&2
    exit 1
}

note() {
    printf '%s: %s\n' "$TCPSPLICE_SCRIPT_NAME" "$*" >&2
}

# resolve_backend auto|nft|legacy
resolve_backend() {
    local suffix
    case "$1" in
        auto) suffix="" ;;
        nft) suffix="-nft" ;;
        legacy) suffix="-legacy" ;;
        *) die "unknown backend '$1' (expected auto, nft or legacy)" ;;
    esac
    IPT="iptables$suffix"
    IP6T="ip6tables$suffix"
    if [[ -z "$suffix" ]]; then
        IPT_RESTORE="iptables-restore"
        IP6T_RESTORE="ip6tables-restore"
        IPT_SAVE="iptables-save"
        IP6T_SAVE="ip6tables-save"
    else
        IPT_RESTORE="iptables$suffix-restore"
        IP6T_RESTORE="ip6tables$suffix-restore"
        IPT_SAVE="iptables$suffix-save"
        IP6T_SAVE="ip6tables$suffix-save"
    fi
    # Exported for callers that source this file.
    export IPT IP6T IPT_RESTORE IP6T_RESTORE IPT_SAVE IP6T_SAVE
}

# require_tools TOOL... : die naming the first tool that is not on PATH.
require_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || die "'$t' not found on PATH (run Scripts/setup.sh)"
    done
}

ensure_swift_on_path() {
    if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
        PATH="/opt/swift/usr/bin:$PATH"
        export PATH
    fi
}

# state_file: the file of saved sysctl values for this network namespace (the
# namespace's inode number keeps namespaces sharing /run apart).
state_file() {
    local ns
    ns=$(stat -L -c %i /proc/self/ns/net 2>/dev/null || echo host)
    echo "${TCPSPLICE_STATE_DIR:-/run/tcpsplice}/rules-netns-$ns.saved"
}

# ensure_release_bins BIN ROOT: spliced, splicectl and splice-proxy in BIN, built into it
# (a release directory) when missing. The benchmarks' binaries.
ensure_release_bins() {
    local bin=$1 root=$2
    _have_bins() { [[ -x "$bin/spliced" && -x "$bin/splicectl" && -x "$bin/splice-proxy" ]]; }
    _have_bins && return 0
    [[ "$(basename "$bin")" == release ]] \
        || die "no spliced/splicectl/splice-proxy in $bin, and it is not a release directory to build into"
    note "no release binaries in $bin: building them"
    (cd "$root" && swift build -c release --scratch-path "$(dirname "$bin")") || die "release build failed"
    _have_bins || die "the build left no spliced/splicectl/splice-proxy in $bin"
}

# probe_new_connections OUT URL SECONDS: while a load generator runs for SECONDS
# (started just before), from a quarter of that time on, PROBES (15) curls in the
# client namespace ($NS_C, Tests/netns/lib.sh) one after the other, each on a new
# connection, timed from its connect() to the answer's last byte: what one more
# client sees under the load. wrk's own latency starts at its request's first
# byte written, after its connect, so a path that makes handshakes wait (a queue
# reader busy with the established flows' packets) looks faster in it than it
# is. The curls' lines go to OUT.txt; their count, those answered 200, and the
# medians of connect and whole time (ms) and the longest to OUT.json.
PROBES=15
probe_new_connections() {
    local out=$1 url=$2 seconds=$3 i
    sleep "$(awk -v d="$seconds" 'BEGIN { print d / 4 }')"
    for ((i = 0; i < PROBES; i++)); do
        nsx "$NS_C" curl -s -o /dev/null --max-time 10 -H 'Connection: close' \
            -w '%{http_code} %{time_connect} %{time_total}\n' "$url" || echo "000 0 0"
        sleep 0.1
    done >"$out.txt"
    python3 - "$out.txt" "$out.json" <<'PYEOF'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
ok = [(float(c) * 1000, float(t) * 1000) for code, c, t in rows if code == "200"]
r = {"n": len(rows), "ok": len(ok)}
if ok:
    r["connect_ms_p50"] = round(statistics.median(c for c, _ in ok), 2)
    r["total_ms_p50"] = round(statistics.median(t for _, t in ok), 2)
    r["total_ms_max"] = round(max(t for _, t in ok), 2)
json.dump(r, open(sys.argv[2], "w"))
PYEOF
}
