#!/usr/bin/env bash
# tcpsplice test: a client port used again right after the proxy died goes
# through the next proxy like any other.
#
# K downloads from fixed client ports run through splice-proxy; a sixth of the
# way it is killed with SIGKILL, and they complete byte-exact in bypass. Its
# sockets are orphaned in the router: those whose FIN the engine drops would
# retransmit it for about a minute, and TPROXY delivers a new SYN of the same
# tuple to such an established socket before the listener. A second
# splice-proxy registers, and the client downloads again from the same ports at
# once: every download completes byte-exact and its flow is resilient/policy
# through the second proxy (the engine reset the old sockets when they
# retransmitted: status.resilient.staleSocketsReset > 0). Without that, the
# replayed handshake went to the old socket, and the download hung at 0 bytes
# (or, since the replay patience, went on alone after 3 s: proxy-no-answer).
#
# Tunable: K (downloads), MIB (each), KIBPS (rate of each).
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K=${K:-6}
MIB=${MIB:-3}
RATE=$((${KIBPS:-384} << 10))
PORT0=42100
ports=()
for ((i = 1; i <= K; i++)); do ports+=($((PORT0 + i))); done

topo_create
resilient_start
DATA="$TEST_TMP/data"
make_random_file "$DATA" "$MIB"
WANT=$(sha256_of "$DATA")
bg_start serve "$NS_S" python3 "$XFER" serve-send --port "$XF_DOWN_PORT" --file "$DATA" --rate "$RATE"
wait_port "$NS_S" "$XF_DOWN_PORT"

# downloads ROUND: K fetches from the fixed ports, in the background.
downloads() {
    local i
    for ((i = 1; i <= K; i++)); do
        bg_start "$1-$i" "$NS_C" python3 "$XFER" fetch --host "$SERVER_IP" --port "$XF_DOWN_PORT" \
            --source-port "${ports[i - 1]}" --out "$TEST_TMP/$1-$i" --connect-retry 10
    done
}
# all_moved ROUND BYTES: every download of ROUND has at least BYTES.
all_moved() {
    local i
    for ((i = 1; i <= K; i++)); do (($(file_size "$TEST_TMP/$1-$i") >= $2)) || return 1; done
}
# downloads_verify ROUND: every download of ROUND ended with status 0 and the source's SHA-256.
downloads_verify() {
    local i rc got bad=()
    for ((i = 1; i <= K; i++)); do
        rc=0
        bg_wait "$1-$i" 60 || rc=$?
        got=$(sha256_of "$TEST_TMP/$1-$i")
        [[ $rc -eq 0 && "$got" == "$WANT" ]] \
            || bad+=("$1-$i(port ${ports[i - 1]}: exit $rc, $(file_size "$TEST_TMP/$1-$i") bytes, sha256 ${got:0:12})")
    done
    [[ ${#bad[@]} -eq 0 ]] || fail "${#bad[@]} of $K downloads of round $1 failed: ${bad[*]}"
    log "round $1: all $K downloads byte-exact"
}

# 1. Through the first proxy; killed a sixth of the way.
proxy_start proxy-1
id1=$(proxy_id_of "$(bg_pid proxy-1)")
downloads first
SIXTH=$(( (MIB << 20) / 6 ))
wait_for 30 "every first-round download to move $SIXTH bytes" all_moved first "$SIXTH"
flows_of_clients_assert resilient policy --proxy "$id1" "${ports[@]}"
rc=0
bg_kill proxy-1 KILL || rc=$?
[[ $rc -eq 137 ]] || fail "splice-proxy exited with $rc after SIGKILL, expected 137"
wait_no_proxy 10
downloads_verify first
flows_of_clients_assert bypass proxy-died "${ports[@]}"
report "the router's sockets of those ports after the first round: $(nsx "$NS_R" ss -Htan "( sport = :$XF_DOWN_PORT )" \
    | awk '{ n[$1]++ } END { for (s in n) printf "%s %d ", s, n[s] }')(stale proxy sockets reset so far: $(resilient_stat staleSocketsReset))"

# 2. The same ports again, through the second proxy.
proxy_start proxy-2
id2=$(proxy_id_of "$(bg_pid proxy-2)")
downloads second
downloads_verify second
flows_of_clients_assert resilient policy --proxy "$id2" "${ports[@]}"
stale=$(resilient_stat staleSocketsReset)
abandoned=$(resilient_stat replaysAbandoned)
report "stale proxy sockets reset: $stale; replays given up: $abandoned"
((stale > 0)) || fail "no stale proxy socket was reset (status.resilient.staleSocketsReset = 0)"
log "PASS"
