#!/usr/bin/env bash
# tcpsplice test: the rules fail open. In the client/router/server topology,
# with the rules installed in the router and NO engine bound to the queues,
# 16 MiB transfers (download and upload, IPv4 and IPv6) still complete
# byte-exact: --queue-bypass lets the kernel forward. The rule counters prove
# the packets did go through the NFQUEUE rules. Done on the nft backend with a
# single queue, then on the legacy backend with a --queue-balance range.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create

DATA="$TEST_TMP/data16"
make_random_file "$DATA" 16
WANT=$(sha256_of "$DATA")

bg_start serve-send "$NS_S" python3 "$XFER" serve-send --port 5001 --file "$DATA"
bg_start serve-recv "$NS_S" python3 "$XFER" serve-recv --port 5002 --out-dir "$TEST_TMP/recv"
wait_port "$NS_S" 5001
wait_port "$NS_S" 5002

# queue_bytes SAVE_TOOL DIRECTION(dport|sport): bytes counted by our NFQUEUE
# rules for that direction in the router (behind source NAT the servers' packets
# are queued in FORWARD: TOPO_SNAT=1).
queue_bytes() {
    nsx "$NS_R" "$1" -c -t mangle | awk -v dir="$2" '
        /-A TCPSPLICE_(PRE|FWDQ) / && /NFQUEUE/ && ($0 ~ "--" dir "s? ") {
            gsub(/[\[\]]/, "", $1); split($1, c, ":"); n += c[2]
        }
        END { printf "%d\n", n }'
}

uploads=0
# transfer FAMILY_LABEL SERVER_ADDR: one download and one upload, checked.
transfer() {
    local label=$1 addr=$2 out
    out="$TEST_TMP/down-$label"
    nsx "$NS_C" timeout 120 python3 "$XFER" fetch --host "$addr" --port 5001 --out "$out" --timeout 20 \
        >"$TEST_TMP/fetch-$label.log" 2>&1 || { cat "$TEST_TMP/fetch-$label.log" >&2; fail "$label: download failed"; }
    [[ $(sha256_of "$out") == "$WANT" ]] || fail "$label: downloaded data differs (sha256 $(sha256_of "$out"), want $WANT)"
    nsx "$NS_C" timeout 120 python3 "$XFER" push --host "$addr" --port 5002 --file "$DATA" --timeout 20 \
        >"$TEST_TMP/push-$label.log" 2>&1 || { cat "$TEST_TMP/push-$label.log" >&2; fail "$label: upload failed"; }
    uploads=$((uploads + 1))
    wait_for 10 "the server to store upload $uploads" test -e "$TEST_TMP/recv/$uploads.sha256"
    local got
    got=$(cut -d' ' -f1 "$TEST_TMP/recv/$uploads.sha256")
    [[ "$got" == "$WANT" ]] || fail "$label: uploaded data differs at the server (sha256 $got, want $WANT)"
    rm -f "$out" "$TEST_TMP/recv/$uploads"
    log "$label: 16 MiB down and up, sha256 match"
}

# --- nft backend, one queue ------------------------------------------------------
rules_install "$NS_R" --backend nft --ports 5001,5002 --queues 0
[[ $(queue_bound_count "$NS_R") -eq 0 ]] || fail "some program is bound to a queue in the router"
transfer ipv4-nft "$SERVER_IP"
transfer ipv6-nft "$SERVER_IP6"
for spec in "iptables-nft-save dport" "iptables-nft-save sport" "ip6tables-nft-save dport" "ip6tables-nft-save sport"; do
    # shellcheck disable=SC2086
    n=$(queue_bytes $spec)
    # each direction carried at least one 16 MiB transfer per family
    ((n >= 16 << 20)) || fail "$spec: the NFQUEUE rule counted only $n bytes: traffic did not go through it"
    log "$spec: $n bytes went through the NFQUEUE rule (bypassed, no engine)"
done
rules_remove "$NS_R" --backend nft

# --- legacy backend, a balance range -----------------------------------------------
rules_install "$NS_R" --backend legacy --ports 5001,5002 --queues 0:1
transfer ipv4-legacy "$SERVER_IP"
for spec in "iptables-legacy-save dport" "iptables-legacy-save sport"; do
    # shellcheck disable=SC2086
    n=$(queue_bytes $spec)
    # each direction carried at least one 16 MiB transfer per family
    ((n >= 16 << 20)) || fail "$spec: the NFQUEUE rule counted only $n bytes: traffic did not go through it"
    log "$spec: $n bytes went through the NFQUEUE rule (bypassed, no engine)"
done
rules_remove "$NS_R" --backend legacy
log "PASS"
