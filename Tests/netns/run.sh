#!/usr/bin/env bash
# tcpsplice: run the network-namespace tests, Tests/netns/test_*.sh.
#
# Usage: Tests/netns/run.sh [-v] [PATTERN]
#   PATTERN  only tests whose name contains it (e.g. "rules", "bypass", "stacks[no-sack]")
#   -v       show every test's output, not only the failures'
#
# Each test runs in its own bash process (with a time limit, TCPSPLICE_TEST_TIMEOUT
# seconds, default 600), from any working directory. A test with a line
# "# variants: A B ..." runs once per variant, with VARIANTS=A and so on, each
# reported on its own as NAME[A] (VARIANTS in run.sh's environment replaces the
# list). Prints PASS/FAIL and the duration per run, the output of failed runs,
# each failed run's FAIL line again at the end, and a last line exactly
# "N passed, M failed" (counting runs). Exits non-zero
# if any failed (or none matched).
set -euo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERBOSE=0
PATTERN=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -v|--verbose) VERBOSE=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option '$1'" >&2; exit 2 ;;
        *) PATTERN=$1; shift ;;
    esac
done
TIMEOUT=${TCPSPLICE_TEST_TIMEOUT:-600}

# tests: "PATH|VARIANT" per run ("PATH|" for a test without variants).
tests=()
for t in "$DIR"/test_*.sh; do
    [[ -e "$t" ]] || continue
    name=$(basename "$t" .sh)
    variants=$(sed -n 's/^# variants:[[:space:]]*//p' "$t" | head -n 1)
    if [[ -z "$variants" ]]; then
        if [[ -z "$PATTERN" || "$name" == *"$PATTERN"* ]]; then tests+=("$t|"); fi
        continue
    fi
    [[ -z "${VARIANTS:-}" ]] || variants=$VARIANTS
    for v in $variants; do
        # PATTERN selects the test (every variant) or one variant by its full name.
        if [[ -z "$PATTERN" || "$name" == *"$PATTERN"* || "$name[$v]" == *"$PATTERN"* ]]; then
            tests+=("$t|$v")
        fi
    done
done

passed=0
failed=0
failed_names=()
failed_whys=()
if [[ ${#tests[@]} -eq 0 ]]; then
    echo "run.sh: no test matches '${PATTERN}' in $DIR" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

outdir=$(mktemp -d "${TMPDIR:-/tmp}/tcpsplice-run.XXXXXX")
trap 'rm -rf "$outdir"' EXIT

for entry in "${tests[@]}"; do
    t=${entry%|*}
    variant=${entry##*|}
    name=$(basename "$t" .sh)
    [[ -z "$variant" ]] || name="$name[$variant]"
    out="$outdir/$name.out"
    start=$(date +%s.%N)
    rc=0
    # timeout signals the test with TERM (its trap cleans up), KILL 30 s later.
    (
        cd "$DIR"
        if [[ -n "$variant" ]]; then export VARIANTS=$variant; fi
        timeout --kill-after=30 "$TIMEOUT" bash "$t"
    ) >"$out" 2>&1 </dev/null || rc=$?
    dur=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    if [[ $rc -eq 0 ]]; then
        passed=$((passed + 1))
        printf 'PASS  %-44s %7ss\n' "$name" "$dur"
        if ((VERBOSE)); then
            sed 's/^/    | /' "$out"
        else
            # Measurements a passing test reports (lib.sh report) are shown anyway.
            grep -F '] report: ' "$out" | sed 's/^/    | /' || true
        fi
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        why="exit $rc"
        [[ $rc -eq 124 ]] && why="timed out after ${TIMEOUT}s"
        printf 'FAIL  %-44s %7ss  (%s)\n' "$name" "$dur" "$why"
        sed 's/^/    | /' "$out"
        # Its FAIL line (lib.sh fail), or else its own last lines (before the logs lib.sh's
        # cleanup dumps), again at the end: a CI log cut in the middle still shows why.
        reason=$(grep -F '] FAIL: ' "$out" | head -n 3 || true)
        [[ -n "$reason" ]] || reason=$(sed '/^----- .* (last 80 lines) -----$/,$d' "$out" | tail -n 3)
        failed_whys+=("$name ($why):"$'\n'"$(sed 's/^/    /' <<<"$reason")")
    fi
done

echo
if [[ $failed -gt 0 ]]; then
    echo "why (each failed run's FAIL line; its whole output is above):"
    for w in "${failed_whys[@]}"; do echo "  $w"; done
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
