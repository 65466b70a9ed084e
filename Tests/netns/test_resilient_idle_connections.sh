#!/usr/bin/env bash
# tcpsplice test: connections through the resilient path that sit idle, or whose client stops
# reading, stay up, as they would without us.
#
# 1. Keepalive. A keepalive probe is a segment at SND.UNA - 1; the receiver answers with an
#    ACK that repeats its last one. The engine drops the proxy's pure ACKs that tell an end
#    nothing new, and so dropped these answers too: the prober's keepalive then ended the
#    connection (ETIMEDOUT). Any SSH session or database connection left idle past its
#    keepalive time (2 h by default) died so. Two connections idle for IDLE (6) seconds: one
#    whose client probes (from 1 s idle, every 1 s, 3 unanswered probes end it: ~4 s), one
#    whose server probes. Both must still carry an echo after the silence, and each prober
#    must have heard an ACK within its last two probe intervals (tcp_info's last_ack_recv).
# 2. A stalled reader. A client stops reading a download for STALL (15) seconds. The proxy
#    holds what the server sent beyond what the client acknowledged, unacknowledged (the
#    clamp); the server, seeing an open window, retransmitted it and gave up after its
#    retransmission limit (tcp_retries2: ~15 minutes at the default 120 s RTO ceiling; here
#    ~15 s, the server's net.ipv4.tcp_rto_max_ms set to 1000). The engine now tells the
#    server the client's zero window and passes the answers to its probes: like a server
#    facing that client directly, it probes and waits. The download must arrive byte-exact,
#    with no retransmission timeout given up at the server (TcpExtTCPAbortOnTimeout). At the
#    same time, the other way: a server stops reading a client's upload for STALL seconds
#    (the client's RTO ceiling at 1 s): the upload must arrive byte-exact, the client give up
#    on nothing. (That way passed before the change as well: splice-proxy stops reading the
#    client's socket soon enough that its own window closes. It is kept as the check that the
#    engine's handling of a server's zero window breaks no upload.)
# All through splice-proxy; every flow stays resilient, through the proxy, with no failover.
# 3. Then a stalled reader whose proxy dies while its window is shut: a client stops reading a
#    download for KILL_STALL (8) seconds, the proxy is SIGKILLed in the middle of it (the
#    engine had told the server the client's zero window, and the proxy held bytes the client
#    had not acknowledged); the server's probes then reach the client itself, and when the
#    client reads again the download must go on to its end, byte-exact, the server giving up on
#    nothing, neither end dropping a segment as old (PAWS), the flow failed over to bypass.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IDLE=${IDLE:-6}
STALL=${STALL:-15}
STALL_MIB=16
STALL_PORT=5003
UPLOAD_PORT=5004
KILL_STALL=${KILL_STALL:-8}
KILL_PORT=5005
PORTS="$XF_DOWN_PORT,$XF_UP_PORT,$STALL_PORT,$UPLOAD_PORT,$KILL_PORT"
IDLE_PY="$NETNS_DIR/idle.py"

topo_create
# The senders give up on unacknowledged data after ~15 s instead of ~15 minutes.
for ns in "$NS_S" "$NS_C"; do
    nsx "$ns" sysctl -qw net.ipv4.tcp_rto_max_ms=1000 || fail "cannot set net.ipv4.tcp_rto_max_ms in $ns"
done
resilient_rules_install "$PORTS"
resilient_spliced_start "$PORTS"
proxy_start
aborts_before=$(ns_counter "$NS_S" TcpExtTCPAbortOnTimeout)
client_aborts_before=$(ns_counter "$NS_C" TcpExtTCPAbortOnTimeout)

# 2. The stalled reader (started first: it takes longest).
bg_start stall-serve "$NS_S" python3 "$IDLE_PY" serve-stream "$STALL_PORT" "$STALL_MIB"
wait_port "$NS_S" "$STALL_PORT"
bg_start stall-client "$NS_C" python3 "$IDLE_PY" client-stall "$SERVER_IP" "$STALL_PORT" "$STALL_MIB" "$STALL"
bg_start upload-serve "$NS_S" python3 "$IDLE_PY" serve-recv-stall "$UPLOAD_PORT" "$STALL_MIB" "$STALL"
wait_port "$NS_S" "$UPLOAD_PORT"
bg_start upload-client "$NS_C" python3 "$IDLE_PY" client-push "$SERVER_IP" "$UPLOAD_PORT" "$STALL_MIB"
_stalling() { grep -q '^STALLING' "$(bg_log stall-client)" && grep -q '^STALLING' "$(bg_log upload-serve)"; }
wait_for 20 "the stalled readers' first MiB" _stalling

# The server on XF_DOWN_PORT probes its clients; the one on XF_UP_PORT does not.
bg_start idle-serve-probing "$NS_S" python3 "$IDLE_PY" serve "$XF_DOWN_PORT" --keepalive
bg_start idle-serve "$NS_S" python3 "$IDLE_PY" serve "$XF_UP_PORT"
wait_port "$NS_S" "$XF_DOWN_PORT"
wait_port "$NS_S" "$XF_UP_PORT"

bg_start idle-client-probing "$NS_C" python3 "$IDLE_PY" client "$SERVER_IP" "$XF_UP_PORT" "$IDLE" --keepalive
bg_start idle-client "$NS_C" python3 "$IDLE_PY" client "$SERVER_IP" "$XF_DOWN_PORT" "$IDLE"
_both_connected() { grep -q '^CONNECTED' "$(bg_log idle-client-probing)" && grep -q '^CONNECTED' "$(bg_log idle-client)"; }
wait_for 10 "both idle connections to exchange their first message" _both_connected
flows_assert_all resilient policy 4 "$PORTS"

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

bg_wait stall-client $((STALL + 60)) || true
bg_wait upload-client $((STALL + 60)) || true
aborts=$(($(ns_counter "$NS_S" TcpExtTCPAbortOnTimeout) - aborts_before))
client_aborts=$(($(ns_counter "$NS_C" TcpExtTCPAbortOnTimeout) - client_aborts_before))
report "the client that stopped reading for ${STALL} s: $(tail -n 1 "$(bg_log stall-client)"); the server gave up on $aborts connections (TcpExtTCPAbortOnTimeout); its namespace retransmitted $(ns_counter "$NS_S" TcpRetransSegs) segments in all, every connection of the test counted"
check "the download whose client stopped reading for ${STALL} s arrived byte-exact: $(tail -n 1 "$(bg_log stall-client)")" \
    grep -q '^OK' "$(bg_log stall-client)"
check "the server gave up on no connection after its retransmissions (TcpExtTCPAbortOnTimeout +$aborts)" test "$aborts" -eq 0
report "the server that stopped reading an upload for ${STALL} s: $(tail -n 1 "$(bg_log upload-serve)"); the client: $(tail -n 1 "$(bg_log upload-client)"), gave up on $client_aborts connections"
check "the upload whose server stopped reading for ${STALL} s arrived byte-exact: $(tail -n 1 "$(bg_log upload-serve)")" \
    grep -q '^OK' "$(bg_log upload-serve)"
check "the uploading client was told so: $(tail -n 1 "$(bg_log upload-client)")" grep -q '^OK' "$(bg_log upload-client)"
check "the client gave up on no connection after its retransmissions (TcpExtTCPAbortOnTimeout +$client_aborts)" test "$client_aborts" -eq 0
flows_assert_all resilient policy 4 "$PORTS"
check "no failover: the flows stayed with the proxy" [ "$(resilient_stat failovers)" -eq 0 ]

# 3. The stalled reader whose proxy dies during the stall.
aborts_before=$(ns_counter "$NS_S" TcpExtTCPAbortOnTimeout)
bg_start kill-serve "$NS_S" python3 "$IDLE_PY" serve-stream "$KILL_PORT" "$STALL_MIB"
wait_port "$NS_S" "$KILL_PORT"
paws_baseline
capture_start paws
bg_start kill-client "$NS_C" python3 "$IDLE_PY" client-stall "$SERVER_IP" "$KILL_PORT" "$STALL_MIB" "$KILL_STALL"
_kill_stalling() { grep -q '^STALLING' "$(bg_log kill-client)"; }
wait_for 20 "the third stalled reader's first MiB" _kill_stalling
# The client's window shuts while it does not read (its receive buffer is 64 KiB: idle.py).
_window_shut() { nsx "$NS_C" ss -tn "dport = :$KILL_PORT" | awk 'NR > 1 && $2 > 32768 { f = 1 } END { exit !f }'; }
wait_for 5 "the stalled client's receive queue to fill" _window_shut
sleep 1
proxy_kill_now
bg_wait kill-client $((KILL_STALL + 60)) || true
capture_stop paws
aborts=$(($(ns_counter "$NS_S" TcpExtTCPAbortOnTimeout) - aborts_before))
report "the client that stopped reading for ${KILL_STALL} s while its proxy was killed: $(tail -n 1 "$(bg_log kill-client)"); the server gave up on $aborts connections; failovers $(resilient_stat failovers)"
check "the download whose proxy died while its client did not read arrived byte-exact: $(tail -n 1 "$(bg_log kill-client)")" \
    grep -q '^OK' "$(bg_log kill-client)"
check "the server gave up on no connection (TcpExtTCPAbortOnTimeout +$aborts)" test "$aborts" -eq 0
check "the flow failed over when the proxy died" [ "$(resilient_stat failovers)" -ge 1 ]
paws_report "over the proxy's death during the stall"
log "PASS"
