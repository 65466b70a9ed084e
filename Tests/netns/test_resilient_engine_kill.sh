#!/usr/bin/env bash
# tcpsplice test: the engine dies in the middle of 50 transfers that go through
# the proxy, and none of them notices.
#
# As test_resilient_proxy_kill, but spliced is killed with SIGKILL instead, a
# third of the way. The ends' packets then fail open (--queue-bypass) and go
# straight between them, in step; the proxy's packets, queued without bypass,
# are dropped. splice-proxy stays up: it sees its control connection close and
# drops its connections silently (its RSTs go nowhere). Every transfer completes
# with the SHA-256 it left with; splice-proxy is still running, says it lost
# spliced, and holds none of the relayed sockets any more.
#
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${XF_N:-50}
MIB=${XF_MIB_EACH:-32}
RATE=$((${XF_KIBPS:-512} << 10))   # bytes/s per transfer: 32 MiB in ~64 s

need_bin spliced >/dev/null
need_bin splicectl >/dev/null
need_bin splice-proxy >/dev/null
topo_create
resilient_rules_install
resilient_spliced_start
proxy_start
PROXY_PID=$(bg_pid splice-proxy)
PROXY_ID=$(proxy_id_of "$PROXY_PID")

xfers_prepare $((N / 2)) $((N - N / 2)) "$MIB"
xfers_servers_start "$RATE"
xfers_start "$SERVER_IP"

xfers_wait_connected 30
xfers_wait_progress 50 60
resilient_assert_through_proxy "$N" "$PROXY_ID"

# The kill, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
log "status.resilient before the kill: $(status_json | json_get 'd["resilient"]')"
SPLICED_PID=$(bg_pid spliced)
rc=0
bg_kill spliced KILL || rc=$?
[[ $rc -eq 137 ]] || fail "spliced exited with $rc after SIGKILL, expected 137"
log "spliced (pid $SPLICED_PID) killed with SIGKILL at progress $(xfers_progress_permille | tr ' ' /) per mille"
wait_for 5 "the kernel to unbind queue 0" test "$(queue_bound_count "$NS_R")" -eq 0

# splice-proxy lets go of every relayed connection, and stays up.
_proxy_let_go() {
    grep -q 'lost spliced' "$(bg_log splice-proxy)" || return 1
    local n
    n=$(nsx "$NS_R" ss -Htn state established "( sport = :$XF_DOWN_PORT or sport = :$XF_UP_PORT or dport = :$XF_DOWN_PORT or dport = :$XF_UP_PORT )" | wc -l)
    ((n == 0))
}
wait_for 10 "splice-proxy to notice and drop its relayed connections" _proxy_let_go
log "splice-proxy: $(grep 'lost spliced' "$(bg_log splice-proxy)" | tail -n 1)"
bg_alive splice-proxy || fail "splice-proxy exited when spliced died (it should stay up and reconnect later)"

xfers_wait 240
xfers_verify
bg_alive splice-proxy || fail "splice-proxy exited while the transfers finished"
log "PASS"
