#!/usr/bin/env bash
# tcpsplice test: connections a proxy cannot terminate as they are, on ports a policy claims.
#
# TCP-MD5 (RFC 2385; BGP sessions between routers are signed so): every segment carries a
# signature over its header and payload with a key only the two ends hold. Tried 2026-12-07
# with the policy on port 179: the flow went resilient, the replayed handshake gave the
# proxy an unsigned socket, the client's kernel dropped every segment of it, and the session
# hung (no byte moved). Now spliced leaves a signed flow alone (bypass, reason tcp-signature).
# MPTCP (RFC 8684) is proxied as the ends' stacks allow: the proxy's sockets are plain TCP,
# so both ends fall back to TCP (the protocol's own answer to a middlebox) and the
# connection is then an ordinary resilient one.
#
# 1. The premise: MPTCP through the router where no policy claims the port stays MPTCP.
# 2. XF_N MPTCP transfers (client and server sockets IPPROTO_MPTCP) through splice-proxy,
#    killed a third of the way: byte-exact, every client fell back to TCP, no PAWS drop.
# 3. One TCP-MD5 session per family on port 179, MIB MiB up then down: byte-exact, both
#    flows bypass/tcp-signature and counted, not one packet of them given to the proxy.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB_SIGNED=${MIB_SIGNED:-4}
XF_N=${XF_N:-4}
XF_MIB_EACH=${XF_MIB_EACH:-8}
XF_KIBPS=${XF_KIBPS:-1024}
xfers_size_defaults
BGP_PORT=179
OPEN_PORT=5009   # not claimed
PORTS="$XF_DOWN_PORT,$XF_UP_PORT,$BGP_PORT"

topo_create
for ns in "$NS_C" "$NS_S"; do
    nsx "$ns" sysctl -qw net.mptcp.enabled=1 || fail "cannot enable MPTCP in $ns (kernel without CONFIG_MPTCP?)"
done
resilient_rules_install "$PORTS"
resilient_spliced_start "$PORTS"

# 1. MPTCP end to end where tcpsplice does not step in.
head -c $((1 << 20)) /dev/urandom >"$TEST_TMP/open.bin"
want=$(sha256_of "$TEST_TMP/open.bin")
bg_start open-serve "$NS_S" python3 "$XFER" serve-send --mptcp --port "$OPEN_PORT" --file "$TEST_TMP/open.bin" --count 1
wait_port "$NS_S" "$OPEN_PORT"
out=$(nsx "$NS_C" python3 "$XFER" fetch --mptcp --host "$SERVER_IP" --port "$OPEN_PORT" \
    --out "$TEST_TMP/open.got" --timeout 20 --deadline 30 2>&1) || fail "MPTCP fetch on an unclaimed port: $out"
check "an MPTCP download on a port no policy claims arrived whole" [ "$(sha256_of "$TEST_TMP/open.got")" = "$want" ]
check "and stayed MPTCP end to end (the stacks' premise)" grep -qx "MPTCP=yes" <<<"$out"
log "an MPTCP download on port $OPEN_PORT (not claimed): byte-exact, MPTCP end to end"

# 2. MPTCP clients and servers through the proxy, and its death.
paws_baseline
XF_MPTCP=1 resilient_xfers_start "$N" "$MIB" "$RATE" "$SERVER_IP" "$SERVER_IP6"
proxy_killed_midway
xfers_wait 240
xfers_verify
paws_report "after the kill, MPTCP ends"
fell_back=0
for name in "${XF_NAMES[@]}"; do
    grep -qx "MPTCP=no" "$(bg_log "xf-$name")" && fell_back=$((fell_back + 1))
done
check "every MPTCP client fell back to TCP through the proxy ($fell_back of $N)" [ "$fell_back" -eq "$N" ]
log "all $N MPTCP clients fell back to TCP through the proxy"

# 3. Signed sessions on a claimed port.
proxy_start
to_proxy_before=$(status_json | json_get verdicts.toProxy)
for fam in 4 6; do
    ip=$SERVER_IP peer=$CLIENT_IP
    [[ $fam == 6 ]] && ip=$SERVER_IP6 peer=$CLIENT_IP6
    bg_start "md5-serve$fam" "$NS_S" python3 "$NETNS_DIR/signed.py" serve "$fam" "$BGP_PORT" "$MIB_SIGNED" bgp-secret "$peer"
    wait_port "$NS_S" "$BGP_PORT"
    out=$(nsx "$NS_C" timeout 60 python3 "$NETNS_DIR/signed.py" client "$ip" "$BGP_PORT" "$MIB_SIGNED" bgp-secret 2>&1) \
        || fail "IPv$fam TCP-MD5 session on a claimed port: $out"
    bg_wait "md5-serve$fam" 10 || fail "IPv$fam TCP-MD5 session, the server's side: $(tail -n 1 "$(bg_log "md5-serve$fam")")"
    log "IPv$fam TCP-MD5 session: $out, $(tail -n 1 "$(bg_log "md5-serve$fam")")"
done
flows_assert_all bypass tcp-signature 2 "$BGP_PORT"
check "spliced counted both signed flows ($(status_json | json_get flows.signed))" \
    [ "$(status_json | json_get flows.signed)" -eq 2 ]
check "not one packet of them went to the proxy" [ "$(status_json | json_get verdicts.toProxy)" -eq "$to_proxy_before" ]
log "both signed flows counted, none of their packets given to the proxy"
log "PASS"
