#!/usr/bin/env bash
# tcpsplice test: an idle connection through the resilient path, kept alive by its ends' TCP
# keepalive probes, stays up.
#
# A keepalive probe is a segment at SND.UNA - 1; the receiver answers with an ACK that repeats
# its last one. The engine drops the proxy's pure ACKs that tell an end nothing new, and so
# dropped these answers too: the prober's keepalive then ended the connection (ETIMEDOUT), and
# an end's zero-window probes went unanswered the same way. Any SSH session or database
# connection left idle past its keepalive time (2 h by default) died so.
#
# Through splice-proxy, two connections idle for IDLE (6) seconds: one whose client probes
# (from 1 s idle, every 1 s, 3 unanswered probes end it: ~4 s), one whose server probes. Both
# must still carry an echo after the silence, each prober must have heard an ACK within the
# last ~2 probe intervals (tcp_info's last_ack_recv: the answers reached it), and both flows stay
# resilient, through the proxy, without a failover.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IDLE=${IDLE:-6}
IDLE_PY="$NETNS_DIR/idle.py"

topo_create
resilient_start
proxy_start

# The server on XF_DOWN_PORT probes its clients; the one on XF_UP_PORT does not.
bg_start idle-serve-probing "$NS_S" python3 "$IDLE_PY" serve "$XF_DOWN_PORT" --keepalive
bg_start idle-serve "$NS_S" python3 "$IDLE_PY" serve "$XF_UP_PORT"
wait_port "$NS_S" "$XF_DOWN_PORT"
wait_port "$NS_S" "$XF_UP_PORT"

bg_start idle-client-probing "$NS_C" python3 "$IDLE_PY" client "$SERVER_IP" "$XF_UP_PORT" "$IDLE" --keepalive
bg_start idle-client "$NS_C" python3 "$IDLE_PY" client "$SERVER_IP" "$XF_DOWN_PORT" "$IDLE"
_both_connected() { grep -q '^CONNECTED' "$(bg_log idle-client-probing)" && grep -q '^CONNECTED' "$(bg_log idle-client)"; }
wait_for 10 "both idle connections to exchange their first message" _both_connected
resilient_assert_through_proxy 2

status=0
bg_wait idle-client-probing $((IDLE + 30)) || status=1
bg_wait idle-client $((IDLE + 30)) || status=$((status + 2))
client_ack=$(sed -n 's/^CLIENT LAST_ACK_RECV_MS //p' "$(bg_log idle-client-probing)")
server_ack=$(sed -n 's/^SERVER LAST_ACK_RECV_MS //p' "$(bg_log idle-serve-probing)" | tail -n 1)
report "after ${IDLE} s of silence: the probing client heard an ACK ${client_ack:-?} ms before, the probing server ${server_ack:-?} ms before; failovers $(resilient_stat failovers), proxy ACKs suppressed $(resilient_stat acksSuppressed)"
check "the connection whose client probes it is still up after ${IDLE} s idle: $(tail -n 1 "$(bg_log idle-client-probing)")" \
    [ $((status & 1)) -eq 0 ]
check "the connection whose server probes it is still up after ${IDLE} s idle: $(tail -n 1 "$(bg_log idle-client)") / $(grep FAILED "$(bg_log idle-serve-probing)" || true)" \
    [ $((status & 2)) -eq 0 ]
# Answered probes: an ACK came within the last two probe intervals (the last exchange was
# IDLE seconds before).
check "the client's keepalive probes were answered (last ACK ${client_ack:-none} ms before the end of the silence)" \
    test "${client_ack:-99999}" -lt 2500
check "the server's keepalive probes were answered (last ACK ${server_ack:-none} ms before the end of the silence)" \
    test "${server_ack:-99999}" -lt 2500
flows_assert_all resilient policy 2
check "no failover: the flows stayed with the proxy" [ "$(resilient_stat failovers)" -eq 0 ]
log "PASS"
