# shellcheck shell=bash
# tcpsplice: helpers shared by the scripts in Scripts/ (sourced, never run).
#   die MSG...             print "NAME: error: MSG" to stderr and exit 1
#   note MSG...            print "NAME: MSG" to stderr
#   resolve_backend B      set IPT IP6T IPT_RESTORE IP6T_RESTORE IPT_SAVE IP6T_SAVE
#                          for backend auto|nft|legacy (dies if a tool is missing)
#   ensure_swift_on_path   put /opt/swift/usr/bin on PATH when swift is not found
#   state_file             where install-rules.sh saves what it changed outside
#                          iptables (sysctls), per network namespace

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
