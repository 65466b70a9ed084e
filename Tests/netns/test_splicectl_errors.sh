#!/usr/bin/env bash
# tcpsplice test: splicectl fails clearly, and the control socket is root-only.
# - no daemon (no socket): non-zero, says the daemon is not running;
# - unknown subcommand, unknown option, missing value: non-zero, names it;
# - daemon running: `status`, `status --json`, `flows --json` work for root;
# - a non-root user (nobody) who can reach the socket file is refused;
# - a non-root user who can open the socket (mode 0666) is refused by the daemon's
#   uid check: exit 3 with "refused us ... root only", never SIGPIPE (141);
# - usage errors exit 64 naming the problem, before anything is sent: a bad
#   --ports list (empty, an empty element, 0, past 65535, negative), a bad
#   prefix, a socket path longer than sun_path; `--socket PATH` alone prints the
#   help naming the subcommands;
# - `rules` arguments that cannot work (an unknown operation, a rule without an action or
#   with an empty host, a match of another operation, ...) exit 64 naming the problem; with
#   a daemon, an unknown rule id is refused by it (exit 3, "no rule 99");
# - a set-policy request written by hand with an empty or bad list of ports is
#   refused by the daemon, and the policy in force stays;
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

# expect_usage DESCRIPTION REGEX CMD... : CMD must exit 64 (a usage error) with
# output matching REGEX.
expect_usage() {
    local desc=$1 re=$2 out rc=0
    shift 2
    out=$("$@" 2>&1) || rc=$?
    [[ $rc -eq 64 ]] || fail "$desc: exit $rc, expected 64 (usage error); output: $out"
    grep -Eiq -- "$re" <<<"$out" || fail "$desc: exit 64 but the message does not match /$re/: $out"
    log "$desc: exit 64: $(head -n 1 <<<"$out")"
}
# policy_usage_errors SOCKET: the bad policy arguments, against SOCKET (no daemon
# there, or a live one: either way they must not reach it).
policy_usage_errors() {
    local sock=$1
    expect_usage "--ports ''" "--ports.*empty list" "$CTL" --socket "$sock" policy --ports ''
    expect_usage "--ports ' '" "--ports.*empty list" "$CTL" --socket "$sock" policy --ports ' '
    expect_usage "--ports 80,,443" "--ports.*empty element" "$CTL" --socket "$sock" policy --ports 80,,443
    expect_usage "--ports 80," "--ports.*empty element" "$CTL" --socket "$sock" policy --ports 80,
    expect_usage "--ports 0" "--ports.*0.*out of range" "$CTL" --socket "$sock" policy --ports 0
    expect_usage "--ports 65536" "--ports.*65536.*out of range" "$CTL" --socket "$sock" policy --ports 65536
    expect_usage "--ports -5" "--ports.*-5.*out of range" "$CTL" --socket "$sock" policy --ports -5
    expect_usage "--ports=-5" "--ports.*-5.*out of range" "$CTL" --socket "$sock" policy --ports=-5
    expect_usage "--ports http" "--ports.*not a port number.*http" "$CTL" --socket "$sock" policy --ports http
    expect_usage "--ports 90:80" "--ports.*90:80.*first port must be below" "$CTL" --socket "$sock" policy --ports 90:80
    expect_usage "--ports 80:x" "--ports.*not a port range.*80:x" "$CTL" --socket "$sock" policy --ports 80:x
    expect_usage "--servers 10.0.0.0/33" "--servers.*10\.0\.0\.0/33" "$CTL" --socket "$sock" policy --ports 80 --servers 10.0.0.0/33
    expect_usage "--servers garbage" "--servers.*garbage" "$CTL" --socket "$sock" policy --servers garbage
    expect_usage "--clients 10.0.0.0/8,,10.1.0.0/16" "--clients.*empty element" "$CTL" --socket "$sock" policy --clients 10.0.0.0/8,,10.1.0.0/16
    expect_usage "--enable --disable" "exclude" "$CTL" --socket "$sock" policy --enable --disable
}
policy_usage_errors "$NOSOCK"

# rules_usage_errors SOCKET: bad `rules` arguments, refused before anything is sent.
rules_usage_errors() {
    local sock=$1
    expect_usage "rules bogus" "unknown rules operation 'bogus'" "$CTL" --socket "$sock" rules bogus
    expect_usage "rules add without --action" "needs --action" "$CTL" --socket "$sock" rules add --host a.example
    expect_usage "rules add --action maybe" "--action 'maybe' is not one of proxy, splice, bypass" "$CTL" --socket "$sock" rules add --action maybe
    expect_usage "rules add --host ''" "host '' is empty" "$CTL" --socket "$sock" rules add --host '' --action splice
    expect_usage "rules add --ports 0" "--ports: '0' is not a number from 1 to 65535" "$CTL" --socket "$sock" rules add --ports 0 --action splice
    expect_usage "rules add --sni with --method" "cannot|never|sni" "$CTL" --socket "$sock" rules add --sni a.example --method GET --action splice
    expect_usage "rules add --after-bytes 0" "afterBytes 0 is out of range" "$CTL" --socket "$sock" rules add --after-bytes 0 --action splice
    expect_usage "rules remove x" "'x' is not a rule id" "$CTL" --socket "$sock" rules remove x
    expect_usage "rules move 1" "takes two operands" "$CTL" --socket "$sock" rules move 1
    expect_usage "rules remove 1 --host a" "belong to .rules add." "$CTL" --socket "$sock" rules remove 1 --host a.example
    expect_usage "rules default without options" "needs --action" "$CTL" --socket "$sock" rules default
    expect_usage "rules default --request-reader kernel" "--request-reader 'kernel' is not one of engine, proxy" "$CTL" --socket "$sock" rules default --request-reader kernel
    expect_usage "rules add --request-reader" "--request-reader belongs to .rules default." "$CTL" --socket "$sock" rules add --host a.example --action splice --request-reader proxy
    expect_usage "rules load of a missing file" "cannot read" "$CTL" --socket "$sock" rules load "$TEST_TMP/no-such-rules.json"
}
rules_usage_errors "$NOSOCK"

# pools_usage_errors SOCKET: bad `pools` arguments (and `rules add --pool`), refused before
# anything is sent.
pools_usage_errors() {
    local sock=$1
    expect_usage "pools bogus" "unknown pools operation 'bogus'" "$CTL" --socket "$sock" pools bogus
    expect_usage "pools add without a name" "takes one operand" "$CTL" --socket "$sock" pools add
    expect_usage "pools add 'we b'" "may hold only" "$CTL" --socket "$sock" pools add 'we b'
    expect_usage "pools add --method fastest" "--method 'fastest' is not one of" "$CTL" --socket "$sock" pools add web --method fastest
    expect_usage "pools add --backend 10.0.0.1" "backend '10.0.0.1': no port" "$CTL" --socket "$sock" pools add web --backend 10.0.0.1
    expect_usage "pools add --backend 10.0.0.1:0" "port '0' is not a port" "$CTL" --socket "$sock" pools add web --backend 10.0.0.1:0
    expect_usage "pools add --backend weight 0" "weight '0'" "$CTL" --socket "$sock" pools add web --backend 10.0.0.1:80:0
    expect_usage "pools add --backend twice" "given twice" "$CTL" --socket "$sock" pools add web --backend 10.0.0.1:80 --backend 10.0.0.1:80
    expect_usage "pools add header-hash without header" "needs --hash-header" "$CTL" --socket "$sock" pools add web --method header-hash
    expect_usage "pools add --check ping" "--check 'ping' is not tcp or http" "$CTL" --socket "$sock" pools add web --check ping
    expect_usage "pools add --check-path without --check" "need --check" "$CTL" --socket "$sock" pools add web --check-path /
    expect_usage "pools add --check tcp --check-path" "path and expectStatus are for kind http" "$CTL" --socket "$sock" pools add web --check tcp --check-path /x
    expect_usage "pools add --check-interval-ms 1" "intervalMilliseconds 1 is out of range" "$CTL" --socket "$sock" pools add web --check http --check-interval-ms 1
    expect_usage "pools drain without a member" "takes two operands" "$CTL" --socket "$sock" pools drain web
    expect_usage "pools drain with a weight" "without a weight" "$CTL" --socket "$sock" pools drain web 10.0.0.1:80:2
    expect_usage "pools reset without a member" "takes one operand .ADDRESS:PORT." "$CTL" --socket "$sock" pools reset
    expect_usage "pools reset of a pool name" "backend 'web': no port" "$CTL" --socket "$sock" pools reset web
    expect_usage "rules add --pool with --action bypass" "--pool needs --action splice or proxy" "$CTL" --socket "$sock" rules add --host a.example --action bypass --pool web
    expect_usage "rules add --per-request with --action proxy" "--per-request is only for action splice" "$CTL" --socket "$sock" rules add --action proxy --per-request
    expect_usage "rules add --fin process without --per-request" "--fin process needs --per-request" "$CTL" --socket "$sock" rules add --action splice --fin process
    expect_usage "rules add --fin bogus" "--fin 'bogus': expected propagate or process" "$CTL" --socket "$sock" rules add --action splice --per-request --fin bogus
    expect_usage "rules add --one-way with --action proxy" "--one-way is only for action splice" "$CTL" --socket "$sock" rules add --action proxy --one-way to-client
    expect_usage "rules add --one-way with --per-request" "--one-way and --per-request do not go together" "$CTL" --socket "$sock" rules add --action splice --per-request --one-way to-server
    expect_usage "rules add --one-way sideways" "--one-way 'sideways': expected to-client or to-server" "$CTL" --socket "$sock" rules add --action splice --one-way sideways
    expect_usage "rules remove --per-request" "belong to .rules add." "$CTL" --socket "$sock" rules remove 1 --per-request
}
pools_usage_errors "$NOSOCK"

LONGSOCK="$TEST_TMP/$(printf 's%.0s' {1..200}).sock"
expect_usage "--socket of ${#LONGSOCK} bytes, before the subcommand" "--socket.*at most 107 bytes" "$CTL" --socket "$LONGSOCK" status
expect_usage "--socket of ${#LONGSOCK} bytes, after the subcommand" "--socket.*at most 107 bytes" "$CTL" flows --socket "$LONGSOCK"

# No subcommand: the help, naming the subcommands (not "Unknown option '--socket'").
for args in "--socket $NOSOCK" "--socket=$NOSOCK" "--json"; do
    rc=0
    # shellcheck disable=SC2086 # split on purpose
    out=$("$CTL" $args 2>&1) || rc=$?
    grep -qi "unknown option" <<<"$out" && fail "splicectl $args: $out"
    for sub in status flows policy; do
        grep -Eq "^ +$sub " <<<"$out" || fail "splicectl $args (exit $rc) does not list the subcommand '$sub': $out"
    done
    grep -q -- "--socket" <<<"$out" || fail "splicectl $args: the help does not list --socket: $out"
    log "splicectl $args: exit $rc, the help with its subcommands"
done

# With a daemon. The test's temp dir is opened up (0755) so that nobody can
# reach the socket file: a refusal must come from the socket itself.
chmod 755 "$TEST_TMP"
ns_add r
NS_R=$NS_LAST
spliced_start --queue 0
out=$(splicectl status) || fail "splicectl status failed as root"
[[ -n "$out" ]] || fail "splicectl status printed nothing"
st=$(status_json)
printf '%s' "$st" | json_get pick uptimeSeconds queues verdicts flows memory >/dev/null && printf '%s' "$st" | json_get is-list queues \
    | grep -qx True || fail "status --json lacks uptimeSeconds/queues/verdicts/flows/memory: $st"
fl=$(flows_json)
printf '%s' "$fl" | json_get is-list . | grep -qx True || fail "flows --json is not a JSON array: $fl"
log "root: status and flows answer"
rules_usage_errors "$CTL_SOCK"
pools_usage_errors "$CTL_SOCK"
# Refused by spliced (the CLI cannot know): a pool that does not exist, a member not in it, a
# pool in use.
expect_error "pools remove of no pool" "no pool|not a pool" "$CTL" --socket "$CTL_SOCK" pools remove nosuch
expect_error "rules add --pool of no pool" "'nosuch' is not a pool" "$CTL" --socket "$CTL_SOCK" rules add --host a.example --action splice --pool nosuch
"$CTL" --socket "$CTL_SOCK" pools add errpool --backend 10.0.0.1:80 >/dev/null || fail "pools add errpool failed"
expect_error "pools drain of no member" "10\.0\.0\.2:80" "$CTL" --socket "$CTL_SOCK" pools drain errpool 10.0.0.2:80
"$CTL" --socket "$CTL_SOCK" rules add --host a.example --action splice --pool errpool >/dev/null || fail "rules add --pool errpool failed"
expect_error "pools remove of a pool in use" "used by rule" "$CTL" --socket "$CTL_SOCK" pools remove errpool
expect_error "rules remove 99 (no such rule)" "no rule 99" splicectl rules remove 99
rc=0; splicectl rules remove 99 >/dev/null 2>&1 || rc=$?
[[ $rc -eq 3 ]] || fail "splicectl rules remove 99: exit $rc, expected 3 (the daemon refused it)"

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

# The socket opened to everyone: the daemon's own uid check refuses nobody (one
# line, then it closes, at times before splicectl has written its request).
# Several times, since which of the two comes first varies.
chmod 666 "$CTL_SOCK"
for i in 1 2 3 4 5 6 7 8 9 10; do
    rc=0
    out=$("${as_nobody[@]}" "$CTL" --socket "$CTL_SOCK" status 2>&1) || rc=$?
    [[ $rc -ne 141 ]] || fail "nobody, socket 0666, run $i: splicectl died of SIGPIPE (exit 141): $out"
    [[ $rc -eq 3 ]] || fail "nobody, socket 0666, run $i: exit $rc, expected 3: $out"
    grep -Eq "control socket .*refused us: spliced accepts root only" <<<"$out" \
        || fail "nobody, socket 0666, run $i: the message does not say the daemon refused us: $out"
done
chmod 600 "$CTL_SOCK"
log "nobody, socket 0666: refused by the uid check, exit 3: $(head -n 1 <<<"$out")"

# Bad policies never reach the daemon, and the daemon refuses them when sent by hand.
# Started without --proxy-ports, the daemon's policy has no ports: enabling it
# alone would claim every port.
expect_usage "policy --enable, no ports in force" "no ports.*--ports" splicectl policy --enable
[[ "$(splicectl policy --json | json_get enabled)" == False ]] || fail "policy --enable without ports enabled it: $(splicectl policy --json)"
splicectl policy --enable --ports 5001 >/dev/null || fail "splicectl policy --enable --ports 5001 failed"
policy_now() {
    local p
    p=$(splicectl policy --json)
    echo "$(json_get enabled <<<"$p") $(json_get sorted ports <<<"$p")"
}
want=$(policy_now)
[[ "$want" == "True [5001]" ]] || fail "policy after --enable --ports 5001: $want"
policy_usage_errors "$CTL_SOCK"
[[ "$(policy_now)" == "$want" ]] || fail "a refused splicectl policy changed the policy: $(policy_now), was $want"
# set_policy_raw JSON-POLICY: a set-policy request written by hand; prints the answer.
set_policy_raw() {
    python3 - "$CTL_SOCK" "$1" <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b'{"command":"set-policy","policy":' + sys.argv[2].encode() + b'}\n')
buf = b""
while not buf.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip())
PYEOF
}
# "POLICY|REGEX": REGEX must match the refusal.
for case in '{"enabled":true,"ports":[],"servers":[],"clients":[]}|at least one port|empty list' \
            '{"enabled":true,"ports":[80,0],"servers":[],"clients":[]}|port 0' \
            '{"enabled":true,"ports":[70000],"servers":[],"clients":[]}|70000|UInt16' \
            '{"enabled":true,"ports":["443:80"],"servers":[],"clients":[]}|443:80.*below' \
            '{"enabled":true,"ports":[80],"servers":["10.0.0.0/33"],"clients":[]}|10\.0\.0\.0/33' \
            '{"enabled":true,"ports":[80],"servers":[],"clients":[""]}|empty|prefix'; do
    bad=${case%%|*} re=${case#*|}
    ans=$(set_policy_raw "$bad")
    [[ "$(json_get ok <<<"$ans")" == False ]] || fail "spliced accepted set-policy $bad: $ans"
    grep -Eiq -- "$re" <<<"$ans" || fail "spliced refused set-policy $bad without naming the problem (/$re/): $ans"
    [[ "$(policy_now)" == "$want" ]] || fail "the refused set-policy $bad changed the policy: $(policy_now)"
    log "set-policy $bad refused: $(json_get error <<<"$ans")"
done

# Daemon killed: the socket file stays, nothing listens.
rc=0
bg_kill spliced KILL || rc=$?
[[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
expect_error "daemon killed" "not running" "$CTL" --socket "$CTL_SOCK" status
log "PASS"
