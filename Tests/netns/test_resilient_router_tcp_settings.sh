#!/usr/bin/env bash
# tcpsplice test: the router's own TCP settings.
#
# The proxy's sockets are the router's, so its own TCP sysctls shape them, while the ends
# negotiate with each other. Tried 2026-12-07 on the proxy-kill transfers: with the router's
# SACK or window scaling off everything passed; with its timestamps off (a common hardening
# setting) the proxy's sockets answered the replayed handshake without the timestamps both
# ends use, and transfers stalled (some at 5% after 60 s). Now install-rules.sh turns the
# router's timestamps on (saved, restored on removal), and spliced lets a flow whose proxy
# socket answers without them go on alone, before the proxy has any of its bytes.
#
# 1. The router with timestamps, SACK and window scaling off and SYN cookies always
#    (tcp_syncookies=2: the proxy's listener keeps no request socket, as when its listen
#    queue overflows); the install turns timestamps on. XF_N transfers through splice-proxy,
#    killed a third of the way: byte-exact, no PAWS drop at either end. With cookies, the
#    engine's handshake ACK looked up by its addresses found no socket and the router reset
#    the client (uploads reset at both ends, seen 2026-12-07); it now goes through TPROXY.
# 2. The router's timestamps turned off after the install: COUNT exchanges per family whose
#    server speaks first and COUNT whose client does, every answer right, every flow in
#    bypass (proxy-without-timestamps); then MIB2 MiB up and down on one connection per
#    family, byte-exact, in bypass too.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COUNT=${COUNT:-5}
MIB2=${MIB2:-16}
XF_N=${XF_N:-6}
XF_MIB_EACH=${XF_MIB_EACH:-8}
XF_KIBPS=${XF_KIBPS:-1024}
xfers_size_defaults
BANNER_PORT=5003
ASKING_PORT=5004
BULK4_PORT=5005
BULK6_PORT=5006
PORTS="$XF_DOWN_PORT,$XF_UP_PORT,$BANNER_PORT,$ASKING_PORT,$BULK4_PORT,$BULK6_PORT"

topo_create
nsx "$NS_R" sysctl -qw net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0 \
    net.ipv4.tcp_syncookies=2 || fail "cannot change the router's TCP settings"
resilient_rules_install "$PORTS"
check "install-rules.sh turned the router's TCP timestamps on" \
    [ "$(nsx "$NS_R" sysctl -n net.ipv4.tcp_timestamps)" = 1 ]
resilient_spliced_start "$PORTS"

# 1. Transfers, SACK and window scaling still off at the router, every replayed SYN answered
#    with a SYN cookie, the proxy killed.
paws_baseline
resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP" "$SERVER_IP6"
proxy_killed_midway
xfers_wait 240
xfers_verify
paws_report "after the kill, the router's SACK and window scaling off, SYN cookies always"

# 2. Timestamps off at runtime: the flows go on without the proxy.
proxy_start
nsx "$NS_R" sysctl -qw net.ipv4.tcp_timestamps=0 || fail "cannot turn the router's timestamps off"
banner_exchanges "$COUNT" "$BANNER_PORT" "$ASKING_PORT"
flows_assert_all bypass proxy-without-timestamps $((4 * COUNT)) "$BANNER_PORT,$ASKING_PORT"
# And bulk both ways on one connection per family (MIB2 MiB up, then down).
bg_start bulk4-serve "$NS_S" python3 "$NETNS_DIR/pmtu.py" serve 4 "$BULK4_PORT" "$MIB2"
bg_start bulk6-serve "$NS_S" python3 "$NETNS_DIR/pmtu.py" serve 6 "$BULK6_PORT" "$MIB2"
wait_port "$NS_S" "$BULK4_PORT"
wait_port "$NS_S" "$BULK6_PORT"
bg_start bulk4 "$NS_C" python3 "$NETNS_DIR/pmtu.py" client "$SERVER_IP" "$BULK4_PORT" "$MIB2"
bg_start bulk6 "$NS_C" python3 "$NETNS_DIR/pmtu.py" client "$SERVER_IP6" "$BULK6_PORT" "$MIB2"
bg_wait bulk4 60 || fail "IPv4 bulk transfer with the router's timestamps off: $(tail -n 1 "$(bg_log bulk4)")"
bg_wait bulk6 60 || fail "IPv6 bulk transfer with the router's timestamps off: $(tail -n 1 "$(bg_log bulk6)")"
bg_wait bulk4-serve 10 || fail "IPv4 bulk, the server's side: $(tail -n 1 "$(bg_log bulk4-serve)")"
bg_wait bulk6-serve 10 || fail "IPv6 bulk, the server's side: $(tail -n 1 "$(bg_log bulk6-serve)")"
log "bulk with the router's timestamps off: $(tail -n 1 "$(bg_log bulk4)") (IPv4), $(tail -n 1 "$(bg_log bulk6)") (IPv6)"
check "spliced let every flow go on without the proxy ($(resilient_stat proxyWithoutTimestamps))" \
    [ "$(resilient_stat proxyWithoutTimestamps)" -eq $((4 * COUNT + 2)) ]
log "PASS"
