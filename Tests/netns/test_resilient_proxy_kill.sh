#!/usr/bin/env bash
# tcpsplice test: the proxy dies in the middle of 50 transfers, and none of
# them notices (seed 000, FIG. 2D).
#
# Rules with the resilient additions in the router, spliced with --proxy-ports
# for the download and upload ports, splice-proxy registered. 50 concurrent
# transfers of 8 MiB of random data, each its own file (25 downloads, 25
# uploads), paced at 512 KiB/s, the last MiB of each held to a crawl until the test
# has done what it does in their middle (lib.sh xfers_servers_start). Before the kill: every flow is listed
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

xfers_size_defaults

topo_create
paws_baseline
resilient_start
# Every flow through the proxy, and the proxy holding both halves of each.
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP"

# The kill, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
capture_start paws
proxy_kill_now
wait_no_proxy 10
flows_assert_all bypass proxy-died "$N"
sleep 4
capture_stop paws

xfers_wait 240
xfers_verify
paws_report "over the failover"
flows_assert_all bypass proxy-died "$N"
failovers=$(resilient_stat failovers)
log "status.resilient: $(status_json | json_get resilient)"
((failovers >= N)) || fail "status shows $failovers failovers, expected at least $N"
log "PASS"
