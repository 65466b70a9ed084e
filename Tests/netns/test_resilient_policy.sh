#!/usr/bin/env bash
# tcpsplice test: which flows go through the proxy, and which stay in bypass
# and why (`splicectl flows`: mode and reason), as the policy and the proxies
# change.
#
# Rules intercept ports 5001 and 5003; spliced claims only 5001 (--proxy-ports).
# Each step starts a download (4 MiB paced to ~16 s, IPv4, or IPv6 where noted)
# and checks its flow while it runs:
#   A  5001, no proxy registered yet         bypass / no-proxy-alive
#   -- splice-proxy P1 registers
#   B  5003 (not claimed)                    bypass / no-policy
#   C  5001                                  resilient / policy, proxy P1
#   -- splicectl policy --disable (the policy shows enabled: false)
#   D  5001                                  bypass / no-policy
#   -- splicectl policy --enable
#   E  5001 (IPv6)                           resilient / policy, proxy P1
#   -- P1 killed with SIGKILL: C and E       bypass / proxy-died; A B D unchanged
#   F  5001, no proxy                        bypass / no-proxy-alive
#   -- splice-proxy P2 registers (another id)
#   G  5001                                  resilient / policy, proxy P2
#   -- C and E still bypass / proxy-died (a new proxy takes new flows only)
#   -- splicectl policy --ports 5002:5010 (a range; `policy` shows it so)
#   H  5003                                  resilient / policy, proxy P2; B unchanged
# Every download completes byte-exact.
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLAIMED=5001
UNCLAIMED=5003
RATE=$((256 << 10))   # 4 MiB in ~16 s

need_bin splicectl >/dev/null
topo_create
resilient_rules_install "$CLAIMED,$UNCLAIMED"
resilient_spliced_start "$CLAIMED"

SRC="$TEST_TMP/src"
mkdir -p "$SRC" "$TEST_TMP/got"
declare -A WANT=() PORT_OF=()
for n in A B C D E F G H; do
    make_random_file "$SRC/$n" 4
    WANT[$n]=$(sha256_of "$SRC/$n")
done
for p in "$CLAIMED" "$UNCLAIMED"; do
    bg_start "serve-$p" "$NS_S" python3 "$XFER" serve-send --port "$p" --dir "$SRC" --rate "$RATE"
    wait_port "$NS_S" "$p"
done

# fetch NAME PORT [HOST]: start a download of file NAME; sets PORT_OF[NAME] to its client port.
fetch() {
    local n=$1 port=$2 host=${3:-$SERVER_IP}
    bg_start "fetch-$n" "$NS_C" python3 "$XFER" fetch --host "$host" --port "$port" --request "$n" \
        --out "$TEST_TMP/got/$n" --timeout 60 --deadline 120
    _fetch_connected() { grep -q '^CONNECTED' "$(bg_log "fetch-$n")"; }
    wait_for 10 "download $n to connect" _fetch_connected
    PORT_OF[$n]=$(sed -n 's/^CONNECTED LOCAL=.*:\([0-9]*\)$/\1/p' "$(bg_log "fetch-$n")")
    _fetch_data() { [[ $(file_size "$TEST_TMP/got/$n") -gt 0 ]]; }
    wait_for 10 "download $n to receive data" _fetch_data
}

# expect NAME MODE REASON [PROXY_ID]: the flow of download NAME is in MODE/REASON
# (bound to PROXY_ID when given).
expect() {
    local n=$1 mode=$2 reason=$3 id=${4:-}
    flows_of_clients_assert "$mode" "$reason" "${PORT_OF[$n]}"
    if [[ -n "$id" ]]; then
        flows_json | flowcheck proxy-of "${PORT_OF[$n]}" "$id" \
            || fail "flow of download $n is not bound to proxy $id alone (above: the proxies its flows are bound to)"
    fi
    log "download $n (client port ${PORT_OF[$n]}): $mode / $reason${id:+ / proxy $id}"
}

policy_enabled() {
    splicectl policy --json | json_get first enabled policy.enabled
}

wait_no_proxy 5
fetch A "$CLAIMED"
expect A bypass no-proxy-alive

proxy_start P1
P1=$(proxy_id_of "$(bg_pid P1)")
fetch B "$UNCLAIMED"
expect B bypass no-policy
fetch C "$CLAIMED"
expect C resilient policy "$P1"

splicectl policy --disable >/dev/null || fail "splicectl policy --disable failed"
[[ "$(policy_enabled)" == False ]] || fail "the policy is not disabled: $(splicectl policy --json)"
fetch D "$CLAIMED"
expect D bypass no-policy
splicectl policy --enable >/dev/null || fail "splicectl policy --enable failed"
[[ "$(policy_enabled)" == True ]] || fail "the policy is not enabled again: $(splicectl policy --json)"
fetch E "$CLAIMED" "$SERVER_IP6"
expect E resilient policy "$P1"

for n in C E; do bg_alive "fetch-$n" || fail "download $n ended before the proxy was killed"; done
rc=0
bg_kill P1 KILL || rc=$?
[[ $rc -eq 137 ]] || fail "P1 exited with $rc after SIGKILL, expected 137"
wait_no_proxy 10
expect C bypass proxy-died
expect E bypass proxy-died
expect A bypass no-proxy-alive
expect B bypass no-policy
expect D bypass no-policy
fetch F "$CLAIMED"
expect F bypass no-proxy-alive

proxy_start P2
P2=$(proxy_id_of "$(bg_pid P2)")
[[ "$P2" != "$P1" ]] || fail "the new proxy got the dead one's id $P1"
fetch G "$CLAIMED"
expect G resilient policy "$P2"
expect C bypass proxy-died
expect E bypass proxy-died

splicectl policy --ports 5002:5010 >/dev/null || fail "splicectl policy --ports 5002:5010 failed"
shown=$(splicectl policy) || fail "splicectl policy failed"
[[ "$shown" == *"ports 5002:5010,"* ]] || fail "the policy does not show the range: $shown"
log "policy: $shown"
fetch H "$UNCLAIMED"
expect H resilient policy "$P2"
expect B bypass no-policy

for n in A B C D E F G H; do
    bg_wait "fetch-$n" 120 || fail "download $n failed (see fetch-$n.log)"
    got=$(sha256_of "$TEST_TMP/got/$n")
    [[ "$got" == "${WANT[$n]}" ]] || fail "download $n differs: sha256 $got, want ${WANT[$n]}"
done
log "all 8 downloads byte-exact"
expect G resilient policy "$P2"
log "PASS"
