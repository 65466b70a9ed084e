#!/usr/bin/env bash
# tcpsplice test: a control plane that cannot stall the daemon.
#
# - `spliced --control-socket PATH` with PATH an existing regular file exits 2
#   with a message saying it is not a socket, and the file survives intact; a
#   stale socket (bound, nobody listening) at PATH is replaced.
# - Register and disconnect: with splice-proxy registered and heartbeating, a
#   second root client registers and closes its connection at once; the active
#   proxy falls back to splice-proxy (status.resilient.activeProxy), and a new
#   download goes through it (resilient/policy, bound to its id), byte-exact.
# - Abuse, while a paced download runs through the proxy: 20 clients each send
#   2000 status requests and never read an answer, 5 send half a request line
#   and go silent, one floods status requests (reading the answers), and one
#   registers as a proxy and never heartbeats. Meanwhile `splicectl status`
#   answers every time within 5 s (a stall, not a speed test: it answers in
#   milliseconds on an idle box), and the timer thread runs (status.control
#   .timerRuns advances at >= 5 per second, nominally 20). The silent proxy is
#   expired on time by the timers (its connection closed < 5 s after it
#   registered, --heartbeat-timeout-ms 2000) and the active proxy falls back to
#   splice-proxy; the half-line clients are closed within 10 s (deadline 5 s);
#   the non-readers are dropped (status.control.droppedUnread >= 20,
#   droppedSilent >= 5); the greedy client is served throughout; the download
#   stays resilient and arrives byte-exact.
# - The connection bound: a client opens connections (each asks status and
#   reads the answer) until 3 are refused with the one-line error "too many
#   control connections"; it is never more than the bound (64). While they are
#   held `splicectl status` fails at once with that message (no hang); once they
#   are closed it answers again and status counts the refusals; splice-proxy
#   is still registered.
# - The descriptor limit: a second spliced under `prlimit --nofile=32`; the same
#   client gets "too many open files" refusals (EMFILE, refused with a reserve
#   descriptor), two more connections left waiting in the backlog are refused
#   too, the daemon uses < 0.6 s of CPU in 2 s meanwhile (it does not spin), and
#   answers status again once they are closed.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPLICED=$(need_bin spliced)
need_bin splicectl >/dev/null
need_bin splice-proxy >/dev/null
HB_TIMEOUT_MS=2000
MAX_CLIENTS=64
ABUSE="$TEST_TMP/ctl_abuse.py"

cat >"$ABUSE" <<'PYEOF'
"""Abusive (and a few honest) control-socket clients (stdlib only)."""
import json, os, socket, sys, time

def conn(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s

def req(cmd, **kw):
    d = {"command": cmd}
    d.update(kw)
    return (json.dumps(d) + "\n").encode()

def read_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        b = s.recv(65536)
        if not b:
            break
        buf += b
    return buf.split(b"\n")[0]

def out(*a):
    print(*a, flush=True)

def wait_eof(s, limit):
    """Seconds until the daemon closes s (what it sends is read and discarded), or None."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            if not s.recv(65536):
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - t0
    return None

def nonreaders(path, n, reqs):
    """n clients that send reqs status requests each and never read an answer."""
    socks = []
    for _ in range(n):
        s = conn(path)
        s.setblocking(False)
        try:
            s.send(req("status") * reqs)
        except BlockingIOError:
            pass
        socks.append(s)
    out("NONREADERS READY %d" % n)
    while True:
        time.sleep(3600)

def partial(path, n):
    """n clients that begin a request and go silent; when does the daemon close each?"""
    socks = []
    for _ in range(n):
        s = conn(path)
        s.sendall(b'{"command":"sta')
        socks.append(s)
    out("PARTIAL READY %d" % n)
    t0 = time.monotonic()
    for i, s in enumerate(socks):
        w = wait_eof(s, max(60 - (time.monotonic() - t0), 0.1))
        out("PARTIAL %d %s" % (i, "CLOSED %.1f" % (time.monotonic() - t0) if w is not None else "OPEN"))

def greedy(path, seconds):
    """One client that floods status requests (batches of 64), reading the answers."""
    s = conn(path, 10)
    t0, answers, buf = time.monotonic(), 0, b""
    try:
        while time.monotonic() - t0 < seconds:
            s.sendall(req("status") * 64)
            want = answers + 64
            while answers < want:
                b = s.recv(1 << 20)
                if not b:
                    raise OSError("closed by the daemon")
                buf += b
                answers += buf.count(b"\n")
                buf = buf[buf.rfind(b"\n") + 1:]
        out("GREEDY answers=%d" % answers)
    except OSError as e:
        out("GREEDY answers=%d error=%s" % (answers, e))

def silent_proxy(path):
    """Registers as a proxy and never heartbeats: the timers must expire it."""
    s = conn(path)
    s.sendall(req("register", proxy={"name": "silent-proxy", "pid": os.getpid(), "listenPort": 9}))
    r = json.loads(read_line(s))
    out("SILENT REGISTERED id=%s" % r.get("proxyID"))
    w = wait_eof(s, 60)
    out("SILENT CLOSED %s" % ("%.2f" % w if w is not None else "never"))

def register_quit(path):
    """A root client that registers as a proxy and goes away at once."""
    s = conn(path)
    s.sendall(req("register", proxy={"name": "register-and-quit", "pid": os.getpid(), "listenPort": 9}))
    r = json.loads(read_line(s))
    out("REGISTERED id=%s" % r.get("proxyID"))
    s.close()

def holder(path, refusals_wanted, maximum, release):
    """Opens connections one by one (each asks status and reads the answer) until the
    daemon refuses refusals_wanted of them; then leaves two more connections waiting
    (a request sent, nothing read); holds them all until the file release exists."""
    held, refused, msgs = [], 0, set()
    for _ in range(maximum):
        try:
            s = conn(path)
            try:
                s.sendall(req("status"))
            except OSError:
                pass
            line = read_line(s)
        except socket.timeout:
            out("HOLDER TIMEOUT after %d held, %d refused" % (len(held), refused))
            break
        except OSError as e:
            out("HOLDER ERROR %s after %d held" % (e, len(held)))
            break
        d = json.loads(line) if line else {"ok": False, "error": "(closed without a word)"}
        if d.get("ok"):
            held.append(s)
            continue
        refused += 1
        msgs.add(d.get("error"))
        s.close()
        if refused >= refusals_wanted:
            break
    out("HOLDER HELD %d REFUSED %d" % (len(held), refused))
    for m in sorted(msgs):
        out("HOLDER MESSAGE %s" % m)
    extra = []
    for _ in range(2):
        try:
            s = conn(path)
            s.sendall(req("status"))
            extra.append(s)
        except OSError:
            pass
    out("HOLDER WAITING")
    while not os.path.exists(release):
        time.sleep(0.1)
    for s in held + extra:
        s.close()
    out("HOLDER RELEASED")

cmd, path, a = sys.argv[1], sys.argv[2], sys.argv[3:]
if cmd == "nonreaders": nonreaders(path, int(a[0]), int(a[1]))
elif cmd == "partial": partial(path, int(a[0]))
elif cmd == "greedy": greedy(path, float(a[0]))
elif cmd == "silent-proxy": silent_proxy(path)
elif cmd == "register-quit": register_quit(path)
elif cmd == "holder": holder(path, int(a[0]), int(a[1]), a[2])
else: sys.exit("unknown command " + cmd)
PYEOF

topo_create

# --- the control socket's path ---------------------------------------------------------
NOTSOCK="$TEST_TMP/not-a-socket"
echo "precious data" >"$NOTSOCK"
rc=0
out=$(nsx "$NS_R" timeout 5 "$SPLICED" --queue 11 --control-socket "$NOTSOCK" 2>&1) || rc=$?
[[ $rc -eq 2 ]] || fail "spliced --control-socket <a regular file> exited $rc, expected 2: $out"
grep -q "not a socket" <<<"$out" || fail "spliced's message does not say the path is not a socket: $out"
[[ -f "$NOTSOCK" && "$(cat "$NOTSOCK")" == "precious data" ]] || fail "spliced removed or changed the regular file $NOTSOCK"
log "a regular file as the control socket: exit 2, file intact: $(grep -o 'not-a-socket.*' <<<"$out" | head -n 1)"

# A stale socket (bound, nobody listening) where spliced's socket goes: replaced.
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$TEST_TMP/spliced.sock"
[[ -S "$TEST_TMP/spliced.sock" ]] || fail "could not leave a stale socket at $TEST_TMP/spliced.sock"
resilient_start --heartbeat-timeout-ms "$HB_TIMEOUT_MS"
log "a stale socket at the control socket's path was replaced"

proxy_start splice-proxy --heartbeat 0.25
PROXY_ID=$(proxy_id_of "$(bg_pid splice-proxy)")

active_proxy() {
    status_json | json_get 'resilient.activeProxy?None'
}
ctl() {  # ctl FIELD: status.control.FIELD
    status_json | json_get "control.$1"
}
listed_proxy() {  # listed_proxy NAME: true while status lists a proxy named NAME
    status_json | flowcheck proxy-listed --name "$1"
}
not_listed_proxy() { ! listed_proxy "$1"; }

# --- register and disconnect ------------------------------------------------------------
SRC="$TEST_TMP/src"
mkdir -p "$SRC" "$TEST_TMP/got"
make_random_file "$SRC/one" 2
make_random_file "$SRC/two" 4
bg_start serve "$NS_S" python3 "$XFER" serve-send --port "$XF_DOWN_PORT" --dir "$SRC" --rate $((256 << 10)) --timeout 120
wait_port "$NS_S" "$XF_DOWN_PORT"

# fetch NAME: start a paced download of file NAME; CPORT is its client port once it moves.
fetch() {
    local n=$1
    bg_start "fetch-$n" "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port "$XF_DOWN_PORT" --request "$n" \
        --out "$TEST_TMP/got/$n" --timeout 60 --deadline 120
    _connected() { grep -q '^CONNECTED' "$(bg_log "fetch-$n")"; }
    wait_for 10 "download $n to connect" _connected
    CPORT=$(sed -n 's/^CONNECTED LOCAL=.*:\([0-9]*\)$/\1/p' "$(bg_log "fetch-$n")")
    _moving() { [[ $(file_size "$TEST_TMP/got/$n") -gt 0 ]]; }
    wait_for 10 "download $n to receive data" _moving
}
fetch_verify() {
    bg_wait "fetch-$1" 120 || fail "download $1 failed (see fetch-$1.log)"
    [[ "$(sha256_of "$TEST_TMP/got/$1")" == "$(sha256_of "$SRC/$1")" ]] || fail "download $1 differs from its source"
}

out=$(nsx "$NS_R" python3 "$ABUSE" register-quit "$CTL_SOCK") || fail "the register-and-quit client failed: $out"
log "a second root client: $out, then closed its connection"
wait_for 5 "spliced to forget the client that registered and left" not_listed_proxy register-and-quit
listed_proxy splice-proxy || fail "splice-proxy is no longer listed: $(proxies_json)"
[[ "$(active_proxy)" == "$PROXY_ID" ]] \
    || fail "active proxy is '$(active_proxy)' after the other client left, expected splice-proxy's id $PROXY_ID"
fetch one
flows_of_clients_assert resilient policy --proxy "$PROXY_ID" "$CPORT"
fetch_verify one
log "after a register-and-disconnect, new flows still go through splice-proxy (id $PROXY_ID), byte-exact"

# --- abuse --------------------------------------------------------------------------------
fetch two
flows_of_clients_assert resilient policy --proxy "$PROXY_ID" "$CPORT"
TWO_PORT=$CPORT
bg_start nonreaders "$NS_R" python3 "$ABUSE" nonreaders "$CTL_SOCK" 20 2000
bg_start partial "$NS_R" python3 "$ABUSE" partial "$CTL_SOCK" 5
bg_start greedy "$NS_R" python3 "$ABUSE" greedy "$CTL_SOCK" 12
bg_start silent-proxy "$NS_R" python3 "$ABUSE" silent-proxy "$CTL_SOCK"
_ready() { grep -q "$2" "$(bg_log "$1")"; }
wait_for 10 "the non-readers to connect" _ready nonreaders READY
wait_for 10 "the half-line clients to connect" _ready partial READY
wait_for 10 "the silent proxy to register" _ready silent-proxy REGISTERED
log "abusers running: 20 non-readers (2000 requests each), 5 half-line clients, a greedy client, a silent proxy"

# splicectl status answers every time, and the timer thread runs.
t_first=""
runs_first=""
worst=0
for i in $(seq 1 10); do
    t0=$(date +%s%N)
    rc=0
    js=$(nsx "$NS_R" timeout 5 "$TCPSPLICE_BIN/splicectl" --socket "$CTL_SOCK" status --json 2>"$TEST_TMP/probe.err") || rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    [[ $rc -eq 0 ]] || fail "splicectl status under abuse, probe $i: exit $rc after ${ms} ms (124: no answer in 5 s): $(cat "$TEST_TMP/probe.err")"
    ((ms > worst)) && worst=$ms
    runs=$(json_get control.timerRuns <<<"$js")
    if [[ -z "$t_first" ]]; then t_first=$t0; runs_first=$runs; fi
    t_last=$t0
    runs_last=$runs
    sleep 1
done
rate=$(awk -v r=$((runs_last - runs_first)) -v ns=$((t_last - t_first)) 'BEGIN { printf "%.1f", r / (ns / 1e9) }')
log "splicectl status answered 10 times under abuse, slowest in ${worst} ms; timer runs: $((runs_last - runs_first)) in $(((t_last - t_first) / 1000000)) ms ($rate/s)"
awk -v r="$rate" 'BEGIN { exit !(r >= 5) }' || fail "the timer thread ran $rate times a second under abuse, expected >= 5 (nominally 20)"

# The silent proxy was expired by the timers, on time, and the active proxy fell back.
wait_for 10 "the silent proxy's connection to be closed" _ready silent-proxy CLOSED
closed=$(sed -n 's/^SILENT CLOSED //p' "$(bg_log silent-proxy)")
awk -v c="$closed" 'BEGIN { exit !(c != "never" && c + 0 < 5) }' \
    || fail "the silent proxy was closed $closed s after it registered, expected < 5 s (heartbeat timeout $((HB_TIMEOUT_MS / 1000)) s)"
not_listed_proxy silent-proxy || fail "spliced still lists the silent proxy: $(proxies_json)"
[[ "$(active_proxy)" == "$PROXY_ID" ]] \
    || fail "active proxy is '$(active_proxy)' after the silent proxy expired, expected splice-proxy's id $PROXY_ID"
log "the silent proxy expired ${closed} s after registering; splice-proxy (id $PROXY_ID) takes new flows again"

# The half-line clients were closed at their deadline; the non-readers dropped.
_partial_done() { [[ $(grep -c '^PARTIAL [0-9]* ' "$(bg_log partial)") -eq 5 ]]; }
wait_for 30 "the half-line clients to be closed" _partial_done
grep -q '^PARTIAL [0-9]* OPEN' "$(bg_log partial)" && fail "a half-line client was never closed: $(cat "$(bg_log partial)")"
late=$(awk '$1 == "PARTIAL" && $3 == "CLOSED" && $4 + 0 >= 10' "$(bg_log partial)")
[[ -z "$late" ]] || fail "half-line clients closed late (deadline 5 s): $late"
_unread_dropped() { (($(ctl droppedUnread) >= 20)); }
wait_for 60 "the 20 non-readers to be dropped (status.control.droppedUnread)" _unread_dropped
(($(ctl droppedSilent) >= 5)) || fail "status.control.droppedSilent is $(ctl droppedSilent), expected >= 5"
log "half-line clients closed at $(awk '$3 == "CLOSED" { printf "%s ", $4 }' "$(bg_log partial)")s; status.control: $(status_json | json_get control)"
bg_wait greedy 60 || fail "the greedy client failed"
grep -q '^GREEDY answers=[1-9][0-9]*$' "$(bg_log greedy)" || fail "the greedy client was not served throughout: $(cat "$(bg_log greedy)")"
log "greedy client: $(cat "$(bg_log greedy)")"
bg_kill nonreaders KILL || true
bg_kill partial KILL || true
fetch_verify two
flows_of_clients_assert resilient policy --proxy "$PROXY_ID" "$TWO_PORT"
log "the download during the abuse stayed resilient through splice-proxy and arrived byte-exact"

# --- the connection bound ---------------------------------------------------------------
_few_clients() { (($(ctl clients) <= 2)); }
wait_for 10 "the abusers' connections to be gone" _few_clients
refused_before=$(ctl refusedTooMany)
bg_start holder "$NS_R" python3 "$ABUSE" holder "$CTL_SOCK" 3 200 "$TEST_TMP/release"
wait_for 30 "the holder to reach the bound" _ready holder 'WAITING\|TIMEOUT\|ERROR'
log "holder: $(tr '\n' ';' <"$(bg_log holder)")"
grep -q '^HOLDER WAITING' "$(bg_log holder)" || fail "the holder did not get its refusals: $(cat "$(bg_log holder)")"
held=$(sed -n 's/^HOLDER HELD \([0-9]*\) REFUSED \([0-9]*\)$/\1/p' "$(bg_log holder)")
refused=$(sed -n 's/^HOLDER HELD \([0-9]*\) REFUSED \([0-9]*\)$/\2/p' "$(bg_log holder)")
[[ "$refused" == 3 ]] || fail "the holder was refused '$refused' times, expected 3"
((held >= 1 && held < MAX_CLIENTS)) || fail "the holder held $held connections beside splice-proxy's, expected fewer than $MAX_CLIENTS"
grep -q '^HOLDER MESSAGE too many control connections' "$(bg_log holder)" \
    || fail "the refusal does not say there are too many control connections: $(grep MESSAGE "$(bg_log holder)")"
rc=0
t0=$(date +%s%N)
nsx "$NS_R" timeout 5 "$TCPSPLICE_BIN/splicectl" --socket "$CTL_SOCK" status >/dev/null 2>"$TEST_TMP/full.err" || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "splicectl status at the bound: exit $rc after ${ms} ms, expected a refusal"
grep -q "too many control connections" "$TEST_TMP/full.err" || fail "splicectl at the bound does not say why: $(cat "$TEST_TMP/full.err")"
log "at the bound ($held held + splice-proxy): splicectl refused in ${ms} ms: $(cat "$TEST_TMP/full.err")"
touch "$TEST_TMP/release"
bg_wait holder 10 || fail "the holder failed"
_answers() { splicectl status >/dev/null 2>&1; }
wait_for 5 "splicectl status to answer once the holder let go" _answers
refused_now=$(ctl refusedTooMany)
((refused_now - refused_before >= 4)) || fail "status.control.refusedTooMany went from $refused_before to $refused_now, expected +4 at least"
listed_proxy splice-proxy || fail "splice-proxy lost its registration at the bound: $(proxies_json)"
[[ "$(active_proxy)" == "$PROXY_ID" ]] || fail "active proxy is '$(active_proxy)', expected $PROXY_ID"
log "past the bound: refused with one line, status answers again, $((refused_now - refused_before)) refusals counted, splice-proxy still registered"

# --- the descriptor limit ---------------------------------------------------------------------
LOW_SOCK="$TEST_TMP/lowfd.sock"
bg_start spliced-lowfd "$NS_R" prlimit --nofile=32 "$SPLICED" --queue 12 --fin-log-group none --syn-log-group none --control-socket "$LOW_SOCK"
_low_up() { CTL_SOCK=$LOW_SOCK splicectl status >/dev/null 2>&1; }
wait_for 20 "the second spliced (prlimit --nofile=32) to answer" _low_up
LOW_PID=$(bg_pid spliced-lowfd)
[[ "$(cat "/proc/$LOW_PID/comm")" == spliced ]] || fail "pid $LOW_PID is $(cat "/proc/$LOW_PID/comm"), not spliced"
bg_start holder-lowfd "$NS_R" python3 "$ABUSE" holder "$LOW_SOCK" 3 200 "$TEST_TMP/release-lowfd"
wait_for 30 "the holder to reach the descriptor limit" _ready holder-lowfd 'WAITING\|TIMEOUT\|ERROR'
log "holder at the descriptor limit: $(tr '\n' ';' <"$(bg_log holder-lowfd)")"
grep -q '^HOLDER WAITING' "$(bg_log holder-lowfd)" || fail "the holder did not get its refusals: $(cat "$(bg_log holder-lowfd)")"
grep -q '^HOLDER MESSAGE too many open files' "$(bg_log holder-lowfd)" \
    || fail "the refusal at the descriptor limit does not say so: $(grep MESSAGE "$(bg_log holder-lowfd)")"
cpu() { awk '{ print $14 + $15 }' "/proc/$LOW_PID/stat"; }
c0=$(cpu)
sleep 2
c1=$(cpu)
ticks=$((c1 - c0))
log "the second spliced used $ticks ticks of CPU in 2 s at its descriptor limit ($(getconf CLK_TCK) a second)"
((ticks * 100 < 60 * $(getconf CLK_TCK))) || fail "the second spliced spins at its descriptor limit: $ticks ticks in 2 s"
rc=0
CTL_SOCK=$LOW_SOCK splicectl status >/dev/null 2>"$TEST_TMP/low.err" || rc=$?
[[ $rc -ne 0 ]] || fail "splicectl status at the descriptor limit succeeded; expected a refusal"
grep -q "too many open files" "$TEST_TMP/low.err" || fail "splicectl at the descriptor limit does not say why: $(cat "$TEST_TMP/low.err")"
touch "$TEST_TMP/release-lowfd"
bg_wait holder-lowfd 10 || fail "the holder failed"
wait_for 5 "the second spliced to answer once the holder let go" _low_up
nodesc=$(CTL_SOCK=$LOW_SOCK status_json | json_get control.refusedNoDescriptor)
((nodesc >= 5)) || fail "status.control.refusedNoDescriptor is $nodesc, expected >= 5 (3 + 2 waiting)"
log "at the descriptor limit: refused with one line ($nodesc counted), no spin, answers again after"
bg_kill spliced-lowfd TERM 10 || fail "the second spliced did not exit cleanly"

splicectl status >/dev/null || fail "splicectl status failed at the end"
log "PASS"
