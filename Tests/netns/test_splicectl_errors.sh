#!/usr/bin/env bash
# tcpsplice test: splicectl fails clearly, and the control socket is root-only.
# - no daemon (no socket): non-zero, says the daemon is not running;
# - unknown subcommand, unknown option, missing value: non-zero, names it;
# - daemon running: `status`, `status --json`, `flows --json` work for root;
# - a non-root user (nobody) who can reach the socket file is refused;
# - the daemon killed (stale socket left behind): non-zero, "not running".
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CTL=$(need_bin splicectl)
need_bin spliced >/dev/null
command -v setpriv >/dev/null || fail "setpriv (util-linux) is needed to run splicectl as nobody"

# expect_error DESCRIPTION REGEX CMD... : CMD must fail with output matching REGEX.
expect_error() {
    local desc=$1 re=$2 out rc=0
    shift 2
    out=$("$@" 2>&1) || rc=$?
    [[ $rc -ne 0 ]] || fail "$desc: succeeded (exit 0), expected an error; output: $out"
    grep -Eiq -- "$re" <<<"$out" || fail "$desc: exit $rc but the message does not match /$re/: $out"
    log "$desc: exit $rc: $(head -n 1 <<<"$out")"
}

NOSOCK="$TEST_TMP/nothing-here/spliced.sock"
expect_error "no daemon" "not running" "$CTL" --socket "$NOSOCK" status
expect_error "no daemon (--json)" "not running" "$CTL" --socket "$NOSOCK" status --json
expect_error "no daemon (flows)" "not running" "$CTL" --socket "$NOSOCK" flows
expect_error "unknown subcommand" "frobnicate" "$CTL" frobnicate
expect_error "unknown subcommand after --socket" "frobnicate" "$CTL" --socket "$NOSOCK" frobnicate
expect_error "unknown option" "--bogus-flag" "$CTL" --socket "$NOSOCK" status --bogus-flag
expect_error "missing option value" "--socket" "$CTL" status --socket
"$CTL" --help >/dev/null 2>&1 || fail "splicectl --help failed"

# With a daemon. The test's temp dir is opened up (0755) so that nobody can
# reach the socket file: a refusal must come from the socket itself.
chmod 755 "$TEST_TMP"
ns_add r
NS_R=$NS_LAST
spliced_start --queue 0
out=$(splicectl status) || fail "splicectl status failed as root"
[[ -n "$out" ]] || fail "splicectl status printed nothing"
st=$(status_json)
printf '%s' "$st" | json_get 'd["uptimeSeconds"] >= 0 and isinstance(d["queues"], list) and "verdicts" in d and "flows" in d and "memory" in d' \
    | grep -qx True || fail "status --json lacks uptimeSeconds/queues/verdicts/flows/memory: $st"
fl=$(flows_json)
printf '%s' "$fl" | json_get 'isinstance(d, list)' | grep -qx True || fail "flows --json is not a JSON array: $fl"
log "root: status and flows answer"

as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${as_nobody[@]}" "$CTL" --help >/dev/null 2>&1 \
    || fail "nobody cannot even run $CTL (directory permissions?): cannot test the socket's own permission"
"${as_nobody[@]}" test -e "$CTL_SOCK" || fail "nobody cannot reach $CTL_SOCK: cannot test the socket's own permission"
out=""
rc=0
out=$("${as_nobody[@]}" "$CTL" --socket "$CTL_SOCK" status --json 2>&1) || rc=$?
[[ $rc -ne 0 ]] || fail "a non-root user could use the control socket: $out"
grep -Eiq 'permission|denied|not permitted|root' <<<"$out" \
    || fail "non-root refusal (exit $rc) does not say why: $out"
grep -q uptimeSeconds <<<"$out" && fail "non-root user got a status: $out"
log "nobody: refused (exit $rc): $(head -n 1 <<<"$out")"

# Daemon killed: the socket file stays, nothing listens.
rc=0
bg_kill spliced KILL || rc=$?
[[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
expect_error "daemon killed" "not running" "$CTL" --socket "$CTL_SOCK" status
log "PASS"
