#!/usr/bin/env bash
# tcpsplice: the one command that runs every test.
#
#   1. Scripts/setup.sh        (Debian packages, Swift toolchain check)
#   2. swift build             (debug, for the unit tests)
#   3. swift build -c release  (the binaries users deploy; the netns tests run them: the
#                               crowds and floods load the engine as production does)
#   4. swift test              (unit tests)
#   5. Tests/netns/run.sh      (network-namespace tests, as root)
#
# Every stage runs even when an earlier one failed (except that the netns
# tests get no binaries when the build failed, so the daemon tests fail
# instead of testing stale ones). Prints a summary; the last line is
# "total: N passed, M failed" counting the stages 1-4 and each netns test run (a test with variants: one run each).
# Exits non-zero if anything failed. Needs root; reads no stdin.
#
# Usage: Scripts/test.sh [--no-setup] [NETNS_PATTERN]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

RUN_SETUP=1
PATTERN=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-setup) RUN_SETUP=0; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) PATTERN=$1; shift ;;
    esac
done

cd "$ROOT"
ensure_swift_on_path
exec </dev/null

declare -a SUMMARY=()
passed=0
failed=0
T0=$SECONDS

# stage NAME CMD... : run a stage, record PASS/FAIL and its duration.
stage() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo
    echo "===== $name: $* ====="
    "$@" || rc=$?
    local dur=$((SECONDS - start))
    if [[ $rc -eq 0 ]]; then
        SUMMARY+=("$(printf '%-12s PASS  %5ss' "$name" "$dur")")
        passed=$((passed + 1))
    else
        SUMMARY+=("$(printf '%-12s FAIL  %5ss  (exit %s)' "$name" "$dur" "$rc")")
        failed=$((failed + 1))
    fi
    return "$rc"
}

skip_stage() {
    SUMMARY+=("$(printf '%-12s FAIL  %5s   (not run: %s)' "$1" "-" "$2")")
    failed=$((failed + 1))
}

if ((RUN_SETUP)); then
    stage setup "$SCRIPT_DIR/setup.sh" || true
fi

build_ok=0
if stage build swift build; then
    build_ok=1
fi
release_ok=0
if stage build-release swift build -c release; then
    release_ok=1
fi

if ((build_ok)); then
    stage unit-tests swift test || true
else
    skip_stage unit-tests "the build failed"
fi

# The netns tests: run.sh prints per-test lines and "N passed, M failed".
echo
echo "===== netns tests: Tests/netns/run.sh ${PATTERN} ====="
netns_out=$(mktemp "${TMPDIR:-/tmp}/tcpsplice-netns.XXXXXX")
trap 'rm -f "$netns_out"' EXIT
bin_dir="$ROOT/.build/release"
if ((!release_ok)); then
    # No stale binaries: the daemon tests must fail, not test an old build.
    bin_dir="$ROOT/.build/no-binaries-because-the-build-failed"
fi
start=$SECONDS
rc=0
TCPSPLICE_BIN=$bin_dir "$ROOT/Tests/netns/run.sh" ${PATTERN:+"$PATTERN"} 2>&1 | tee "$netns_out" || rc=$?
dur=$((SECONDS - start))
counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$netns_out" | tail -n 1 || true)
if [[ -n "$counts" ]]; then
    np=${counts%% passed*}
    nf=${counts#*, }
    nf=${nf%% failed}
    passed=$((passed + np))
    failed=$((failed + nf))
    SUMMARY+=("$(printf '%-12s %s  %5ss  (%s)' "netns" "$([[ $rc -eq 0 ]] && echo PASS || echo FAIL)" "$dur" "$counts")")
else
    failed=$((failed + 1))
    SUMMARY+=("$(printf '%-12s FAIL  %5ss  (run.sh exit %s, no result line)' "netns" "$dur" "$rc")")
fi
if [[ $rc -ne 0 && -n "$counts" && ${nf:-0} -eq 0 ]]; then
    failed=$((failed + 1))
fi

echo
echo "===== tcpsplice test summary ($((SECONDS - T0))s) ====="
printf '%s\n' "${SUMMARY[@]}"
echo "total: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
