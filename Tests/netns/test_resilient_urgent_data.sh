#!/usr/bin/env bash
# tcpsplice test: urgent data (the URG flag and pointer: Telnet's Synch, FTP's ABOR, rlogin)
# through the resilient path.
#
# Tried 2026-12-07 (urgent.py: 1 MiB up with an urgent byte in every 256 KiB, both ends
# reading with SO_OOBINLINE): through plain forwarding the stream arrived whole; through
# splice-proxy the server got the first 1 MiB and the connection hung. Two causes: splice(2)
# stops before an urgent byte and says EAGAIN while the socket stays readable (the proxy spun
# on it, the byte never moved); and a proxy that reads without SO_OOBINLINE (HAProxy) takes the
# byte out of the stream, so that it relays one byte less than the end sent and every number
# the engine maps afterwards is off by one. Now the engine gives the ends' segments to the
# proxy's sockets without the urgent mark (the byte in line, an ordinary byte of the stream),
# and splice-proxy keeps urgent bytes in line and moves one that splice stops at itself.
#
# 1. The premise: the exchange through plain forwarding, both families.
# 2. Through splice-proxy, both families: 4 MiB up, then the proxy killed, then 4 MiB down
#    over the ends' own connection: every byte right (the urgent bytes counted in the
#    engine), the flows resilient, then in bypass.
# 3. The same through HAProxy (no kill): the stream right both ways.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB_URG=${MIB_URG:-4}
PORT=5005
OPEN_PORT=5009   # not claimed

topo_create
resilient_rules_install "$PORT"
resilient_spliced_start "$PORT" --proxy-pidfile "$TEST_TMP/haproxy.pid"
bg_start urgent-serve "$NS_S" python3 "$NETNS_DIR/urgent.py" serve "$PORT" "$MIB_URG"
bg_start urgent-serve-open "$NS_S" python3 "$NETNS_DIR/urgent.py" serve "$OPEN_PORT" "$MIB_URG"
wait_port "$NS_S" "$PORT"
wait_port "$NS_S" "$OPEN_PORT"

# exchange NAME HOST PORT [GO_FILE]: one urgent.py client in the background (NAME).
exchange() {
    bg_start "$1" "$NS_C" python3 "$NETNS_DIR/urgent.py" client "$2" "$3" "$MIB_URG" ${4:+"$4"}
}
# exchange_done NAME WHAT: the client NAME ended well.
exchange_done() {
    bg_wait "$1" 60 || fail "$2: $(tr '\n' ' ' <"$(bg_log "$1")")"
    log "$2: $(tr '\n' ' ' <"$(bg_log "$1")")"
}

# 1. Plain forwarding.
exchange open4 "$SERVER_IP" "$OPEN_PORT"
exchange open6 "$SERVER_IP6" "$OPEN_PORT"
exchange_done open4 "IPv4, plain forwarding"
exchange_done open6 "IPv6, plain forwarding"

# 2. splice-proxy, killed between the upload and the download.
proxy_start
PROXY_PID=$(bg_pid splice-proxy)
exchange sp4 "$SERVER_IP" "$PORT" "$TEST_TMP/go"
exchange sp6 "$SERVER_IP6" "$PORT" "$TEST_TMP/go"
uploaded() { grep -q "^UPLOAD" "$(bg_log sp4)" && grep -q "^UPLOAD" "$(bg_log sp6)"; }
wait_for 60 "both uploads through splice-proxy to be answered" uploaded
flows_assert_all resilient policy 2 "$PORT"
urgent=$(resilient_stat urgentToProxy)
check "spliced took the urgent mark off the client's segments ($urgent)" [ "$urgent" -ge 2 ]
proxy_kill_now
wait_no_proxy 10
flows_assert_all bypass proxy-died 2 "$PORT"
touch "$TEST_TMP/go"
exchange_done sp4 "IPv4 through splice-proxy, killed before the download"
exchange_done sp6 "IPv6 through splice-proxy, killed before the download"

# 3. HAProxy.
haproxy_start
wait_proxy_registered "$HAPROXY_PID" 10
exchange ha4 "$SERVER_IP" "$PORT"
exchange ha6 "$SERVER_IP6" "$PORT"
exchange_done ha4 "IPv4 through HAProxy"
exchange_done ha6 "IPv6 through HAProxy"
check "the HAProxy exchanges were resilient flows ($(resilient_stat flows))" [ "$(resilient_stat flows)" -eq 4 ]
log "urgent marks taken off toward the proxies: $(resilient_stat urgentToProxy)"
log "PASS"
