#!/usr/bin/env bash
# tcpsplice test: HAProxy, an unmodified proxy of another make, is the
# application proxy; it dies in the middle of 50 transfers, and none of them
# notices (seed 000, FIG. 2D, with the proxy watched through its pidfile).
#
# HAProxy (Debian's package) in the router with the configuration of
# Docs/resilient.md (bind transparent, source usesrc client, server 0.0.0.0),
# daemonized with a pidfile that spliced watches (--proxy-pidfile). 50 concurrent
# transfers of 8 MiB of random data (25 downloads, 25 uploads), paced and held
# (lib.sh xfers_servers_start).
# Before the kill: every flow `resilient`/`policy`, bound to the HAProxy entry,
# and haproxy holds both sockets of each. A third of the way, haproxy's pid is
# killed with SIGKILL. Every transfer completes with the SHA-256 it left with;
# every flow is then `bypass`/`proxy-died`; status counts >= 50 failovers.
#
# Tunable (for a quick run): XF_N, XF_MIB_EACH, XF_KIBPS.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

xfers_size_defaults

topo_create
paws_baseline
# spliced first: it re-reads the pidfile until haproxy writes it.
resilient_start --proxy-pidfile "$TEST_TMP/haproxy.pid"
haproxy_start
[[ "$HAPROXY_PIDFILE" == "$TEST_TMP/haproxy.pid" ]] || fail "haproxy's pidfile is $HAPROXY_PIDFILE, not the one given to spliced"
wait_proxy_registered "$HAPROXY_PID" 10
PROXY_ID=$(proxy_id_of "$HAPROXY_PID")
log "spliced lists haproxy: $(proxies_json)"

xfers_prepare $((N / 2)) $((N - N / 2)) "$MIB"
xfers_servers_start "$RATE" hold
xfers_start "$SERVER_IP"

xfers_wait_connected 30
xfers_wait_progress 50 60
resilient_assert_through_proxy "$N" "$PROXY_ID"
owners=$(nsx "$NS_R" ss -Htnp state established "( sport = :$XF_DOWN_PORT or sport = :$XF_UP_PORT )" | grep -c "pid=$HAPROXY_PID," || true)
((owners >= N)) || fail "only $owners of the client-side sockets in the router belong to haproxy (pid $HAPROXY_PID)"

# The kill, a third of the way.
xfers_wait_progress 333 120
xfers_assert_running
haproxy_alive || fail "haproxy (pid $HAPROXY_PID) is not running before the kill"
capture_start paws
kill -KILL "$HAPROXY_PID"
wait_for 10 "haproxy (pid $HAPROXY_PID) to die" eval '! haproxy_alive'
log "haproxy (pid $HAPROXY_PID) killed with SIGKILL at progress $(xfers_progress_permille | tr ' ' /) per mille"
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
