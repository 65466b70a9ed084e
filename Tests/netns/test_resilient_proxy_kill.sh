#!/usr/bin/env bash
# tcpsplice test: the proxy dies in the middle of 50 transfers, and none of
# them notices (seed 000, FIG. 2D).
#
# Rules with the resilient additions in the router, spliced with --proxy-ports
# for the download and upload ports, splice-proxy registered. 50 concurrent
# transfers of 32 MiB of random data, each its own file (25 downloads, 25
# uploads), paced so that they last ~64 s. Before the kill: every flow is listed
# `resilient` with reason `policy`, and the proxy holds both sockets of each
# (down sockets with the server's address, up sockets bound to the clients').
# Once every transfer has moved a third of its bytes (or the fastest 70%: lib.sh
# xfers_wait_progress), splice-proxy is killed
# with SIGKILL. Every transfer completes with the SHA-256 it left with; every
# flow is then `bypass` with reason `proxy-died`; status counts >= 50 failovers.
#
# Tunable (for a quick run): XF_N (transfers, half each way), XF_MIB_EACH, XF_KIBPS.
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

# Every flow through the proxy, and the proxy holding both halves of each.
xfers_wait_connected 30
xfers_wait_progress 50 60
resilient_assert_through_proxy "$N" "$PROXY_ID"

# The kill, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
rc=0
bg_kill splice-proxy KILL || rc=$?
[[ $rc -eq 137 ]] || fail "splice-proxy exited with $rc after SIGKILL, expected 137"
log "splice-proxy (pid $PROXY_PID) killed with SIGKILL at progress $(xfers_progress_permille | tr ' ' /) per mille"
wait_no_proxy 10
flows_assert_all bypass proxy-died "$N"

xfers_wait 240
xfers_verify
flows_assert_all bypass proxy-died "$N"
failovers=$(resilient_stat failovers)
log "status.resilient: $(status_json | json_get 'd["resilient"]')"
((failovers >= N)) || fail "status shows $failovers failovers, expected at least $N"
log "PASS"
