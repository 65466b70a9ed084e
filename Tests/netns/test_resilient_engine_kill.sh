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
# Then spliced is started again while the transfers run: it picks their flows up
# mid-stream in bypass (reason picked-up-mid-stream), splice-proxy registers
# with it again (same pid), and new transfers (2 of 4 MiB) go through it in
# resilient mode and complete byte-exact.
#
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

xfers_size_defaults

topo_create
paws_baseline
resilient_start
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP"

# The kill, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
log "status.resilient before the kill: $(status_json | json_get resilient)"
SPLICED_PID=$(bg_pid spliced)
capture_start paws
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
capture_stop paws

# spliced comes back while the transfers run.
xfers_assert_running
SPLICED_BG=spliced-again spliced_start "${RESILIENT_SPLICED_QUEUES[@]}" --proxy-ports "$XF_DOWN_PORT,$XF_UP_PORT"
wait_proxy_registered "$PROXY_PID" 20
PROXY_ID2=$(proxy_id_of "$PROXY_PID")
log "splice-proxy (pid $PROXY_PID) registered again, id $PROXY_ID2"
mapfile -t OLD_PORTS < <(xfers_client_ports)
# One listing a try (one per port took ~13 s a pass here, under the transfers' load).
_picked_up_all() { flows_json | flowcheck listed "${OLD_PORTS[@]}"; }
wait_for 15 "the restarted spliced to see a packet of every transfer" _picked_up_all
flows_of_clients_assert bypass picked-up-mid-stream "${OLD_PORTS[@]}"
log "the restarted spliced lists the $N running transfers in bypass, picked up mid-stream"

xfers_wait 240
xfers_verify
paws_report "over the failover"
bg_alive splice-proxy || fail "splice-proxy exited while the transfers finished"

# New flows go through the proxy again.
xfers_prepare 1 1 4 new-
xfers_start "$SERVER_IP"
xfers_wait_connected 30
xfers_wait_progress 50 60
mapfile -t NEW_PORTS < <(xfers_client_ports)
flows_of_clients_assert resilient policy "${NEW_PORTS[@]}"
xfers_wait 240
xfers_verify
log "new transfers went through splice-proxy (id $PROXY_ID2) under the restarted spliced"
log "PASS"
