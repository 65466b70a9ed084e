#!/usr/bin/env bash
# tcpsplice test: a large HTTP download spliced after its request leaves the queue and
# arrives byte-exact; rules by Host and path decide which connections are spliced (seed 003).
#
# Resilient rules for port 80 in the router, spliced claiming it, splice-proxy registered,
# nginx (Debian's) in the server, curl in the client. Rules, set with splicectl while nothing
# runs: Host files.example and a path under /big/ -> splice; everything else -> proxy (the
# default). Then:
#   - transfers paced by their sender (no loss: at full speed the veth queues here overflow,
#     spliced or not), two downloads and two uploads spliced by the proxy (request reader
#     `proxy`) by a rule on their ports: all byte-exact and drained, and neither end resends
#     anything for lost (fast and slow-start retransmissions and retransmission timeouts
#     flat at both ends: a drained splice loses nothing; the tail loss probes that the
#     resilient phase's ACK clamp can cause before the splice are reported).
#   - curl downloads /big/file (SPLICE_MIB, default 1024 MiB) with Host files.example, twice:
#     the proxy reading the request and stepping out, then the engine reading it (the default:
#     the proxy never engaged). Each time its SHA-256 equals the file's; `splicectl flows`
#     lists the flow spliced, by that rule, drained; of the packets the router forwarded for
#     it, the engine saw well under 1% (after the splice only its FIN and the one that set the
#     conntrack mark); no PAWS drop, unless both ends' captures (headers only: tens of
#     thousands of packets, the senders' offloads sending 64 KB at a time) show every old TSval as the path's own (at
#     full speed the veth queues overflow, the server resends, and an original that two CPUs'
#     backlogs delayed behind its retransmission is dropped by PAWS; CI saw one drop at the
#     client with the engine reading on 2026-12-08, with no capture to tell what it was).
#   - curl fetches /small with Host files.example (path does not match) and /big/file's
#     first MiB with Host other.example (host does not match): both proxied (decision proxy,
#     rule default), both byte-exact.
#   - a rule added in front while a paced download runs (Host other.example -> splice) does
#     not change the running proxied connection; a new connection with that Host is spliced.
#
# Tunable: SPLICE_MIB (the large file's size).
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB=${SPLICE_MIB:-1024}
PORT=80

topo_create
need_bin splicectl >/dev/null
resilient_rules_install "$PORT,$XF_DOWN_PORT,$XF_UP_PORT"
resilient_spliced_start "$PORT,$XF_DOWN_PORT,$XF_UP_PORT"
proxy_start

CROWD_DIR="$TEST_TMP/www"
mkdir -p "$CROWD_DIR/big"
make_random_file "$CROWD_DIR/big/file" "$MIB"
head -c 300000 /dev/urandom >"$CROWD_DIR/small"
want_big=$(sha256_of "$CROWD_DIR/big/file")
want_small=$(sha256_of "$CROWD_DIR/small")
want_first=$(head -c 1048576 "$CROWD_DIR/big/file" | sha256sum | cut -d' ' -f1)
nginx_start "$NS_S" "$PORT"

splicectl rules add --host files.example --path-prefix /big/ --action splice --name big-files >/dev/null \
    || fail "splicectl rules add failed"
rules=$(splicectl rules)
log "rules in force:"$'\n'"$rules"
big_rule=$(splicectl rules --json | json_get 'rules.0.id')

# curl_get NAME HOST PATH [CURL ARGS...]: GET http://server/PATH with Host HOST into
# $TEST_TMP/NAME.body; prints the client port it used.
curl_get() {
    local name=$1 host=$2 path=$3
    shift 3
    nsx "$NS_C" curl -sS --max-time 300 -o "$TEST_TMP/$name.body" -w '%{local_port}\n' \
        -H "Host: $host" "$@" "http://$SERVER_IP:$PORT$path" || fail "curl $name ($host$path) failed"
}

# First, before a full-speed download has loaded the links (its last resends could land in
# the count): without loss, a drained splice resends nothing. Transfers paced by their sender
# (xfer.py at 4 MiB/s: no burst overflows a queue), two downloads and two uploads of 8 MiB on
# the transfer ports, spliced by the proxy after their first bytes: both ends' TcpRetransSegs
# stay flat, and every splice is drained.
splicectl rules default --request-reader proxy >/dev/null || fail "splicectl rules default --request-reader proxy failed"
splicectl rules add --ports "$XF_DOWN_PORT,$XF_UP_PORT" --proto other --action splice --name paced >/dev/null \
    || fail "splicectl rules add --ports failed"
xfers_prepare 2 2 8 p
xfers_servers_start $((4 << 20))
# recoveries: the times an end took a segment for lost and sent it again (fast and slow-start
# retransmissions, retransmission timeouts). Tail loss probes are reported apart: a probe goes
# when an ACK is late, which the resilient phase's clamp can make it before the splice
# (Docs/resilient.md), and sends new data or the last segment again.
recoveries() { echo $(($(ns_counter "$1" TcpExtTCPFastRetrans) + $(ns_counter "$1" TcpExtTCPSlowStartRetrans) + $(ns_counter "$1" TcpExtTCPTimeouts))); }
probes() { ns_counter "$1" TcpExtTCPLossProbes; }
resent() { ns_counter "$1" TcpRetransSegs; }
# Segments an end sent again that its peer reported received twice (D-SACK): sent for
# nothing (reordered, not lost). Reported beside the recoveries, which must stay 0 all the
# same: a splice that reorders is a fault too.
twice() { ns_counter "$1" TcpExtTCPDSACKRecvSegs; }
rec_c0=$(recoveries "$NS_C") rec_s0=$(recoveries "$NS_S") tlp_c0=$(probes "$NS_C") tlp_s0=$(probes "$NS_S")
resent_c0=$(resent "$NS_C") resent_s0=$(resent "$NS_S") twice_c0=$(twice "$NS_C") twice_s0=$(twice "$NS_S")
drained0=$(status_json | json_get splices.drained)
xfers_start "$SERVER_IP"
xfers_wait 120
xfers_verify
rec_c=$(($(recoveries "$NS_C") - rec_c0)) rec_s=$(($(recoveries "$NS_S") - rec_s0))
tlp_c=$(($(probes "$NS_C") - tlp_c0)) tlp_s=$(($(probes "$NS_S") - tlp_s0))
resent_c=$(($(resent "$NS_C") - resent_c0)) resent_s=$(($(resent "$NS_S") - resent_s0))
twice_c=$(($(twice "$NS_C") - twice_c0)) twice_s=$(($(twice "$NS_S") - twice_s0))
drained=$(($(status_json | json_get splices.drained) - drained0))
report "paced spliced transfers (2 down, 2 up): $drained drained splices; loss recoveries (fast, slow-start, timeout): client +$rec_c, server +$rec_s; tail loss probes: client +$tlp_c, server +$tlp_s; segments resent in all: client +$resent_c, server +$resent_s, reported received twice: client +$twice_c, server +$twice_s"
((drained == 4)) || fail "$drained of the 4 paced transfers were spliced drained"
((rec_c == 0 && rec_s == 0)) \
    || fail "a drained splice made the ends take segments for lost (client +$rec_c, server +$rec_s; segments reported received twice: client +$twice_c, server +$twice_s)"

# The large download, alone, read by the proxy then by the engine: the router's forwarded
# packets against the engine's count.
rx() { nsx "$NS_R" cat "/sys/class/net/$1/statistics/rx_packets"; }
big_download() {
    local reader=$1 retrans_c0 retrans_s0 fwd0 t0 t1 fwd got port flow seen after k v retrans_c retrans_s
    splicectl rules default --request-reader "$reader" >/dev/null || fail "splicectl rules default --request-reader $reader failed"
    rm -f "$TEST_TMP/big.body"
    retrans_c0=$(ns_counter "$NS_C" TcpRetransSegs)
    retrans_s0=$(ns_counter "$NS_S" TcpRetransSegs)
    paws_baseline
    capture_start paws
    fwd0=$(($(rx rc0) + $(rx rs0)))
    t0=$(date +%s.%N)
    port=$(curl_get big files.example /big/file)
    t1=$(date +%s.%N)
    fwd=$(($(rx rc0) + $(rx rs0) - fwd0))
    capture_stop paws
    got=$(sha256_of "$TEST_TMP/big.body")
    [[ "$got" == "$want_big" ]] || fail "the download spliced by the $reader differs: sha256 $got, want $want_big"
    log "$MIB MiB download spliced by the $reader byte-exact in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s (client port $port)"

    flow=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$PORT" --sport "$port")
    log "its flow: $flow"
    for kv in "mode=spliced" "decision=splice" "rule=$big_rule" "splice=spliced" "spliceOutcome=drained" "reason=rule-splice"; do
        k=${kv%%=*} v=${kv#*=}
        [[ "$(json_get "$k" <<<"$flow")" == "$v" ]] || fail "the download's flow has $k=$(json_get "$k" <<<"$flow"), expected $v"
    done
    if [[ $reader == engine ]]; then
        [[ "$(json_get 'proxy?none' <<<"$flow")" == none ]] || fail "the proxy was engaged for a download the engine spliced: $flow"
    fi
    seen=$(json_get packets <<<"$flow")
    after=$(json_get packetsAfterSplice <<<"$flow")
    report "packets ($reader): the router received $fwd for the download (both sides); the engine saw $seen of them, $after after the splice"
    ((seen * 100 < fwd)) || fail "the engine saw $seen of $fwd packets: not well under 1% (the data crossed the queue)"
    ((after <= 8)) || fail "the engine saw $after packets after the splice (expected only the first and the FINs)"
    retrans_c=$(($(ns_counter "$NS_C" TcpRetransSegs) - retrans_c0))
    retrans_s=$(($(ns_counter "$NS_S" TcpRetransSegs) - retrans_s0))
    # At full speed the veth queues overflow and the server resends, spliced or not (plain
    # forwarding does the same here): reported only. The check is the paced transfers above.
    report "retransmitted segments over the full-speed download spliced by the $reader: client +$retrans_c, server +$retrans_s"
    paws_report "over the splice ($reader)"
}
big_download proxy
big_download engine

# What the rule does not match stays proxied.
port_small=$(curl_get small files.example /small)
port_first=$(curl_get first other.example /big/file -r 0-1048575)
[[ "$(sha256_of "$TEST_TMP/small.body")" == "$want_small" ]] || fail "the proxied /small differs"
[[ "$(sha256_of "$TEST_TMP/first.body")" == "$want_first" ]] || fail "the proxied range of /big/file differs"
for p in "$port_small" "$port_first"; do
    f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$PORT" --sport "$p")
    [[ "$(json_get mode <<<"$f")" == resilient && "$(json_get decision <<<"$f")" == proxy && "$(json_get rule <<<"$f")" == 0 ]] \
        || fail "client port $p should be proxied by the default action: $f"
done
log "/small (path not matched) and other.example (host not matched): proxied by the default, byte-exact"

# A rule change while a proxied download runs: the running one keeps its decision, a new one
# follows the new rule.
bg_start slow "$NS_C" curl -sS --max-time 120 --limit-rate 2M -o "$TEST_TMP/slow.body" -w '%{local_port}\n' \
    -H "Host: other.example" "http://$SERVER_IP:$PORT/big/file" -r 0-8388607
wait_for 10 "the paced download's flow" sh -c "'$(need_bin splicectl)' --socket '$CTL_SOCK' flows --json 2>/dev/null | grep -q '\"decision\" : \"proxy\"'"
splicectl rules add --host other.example --action splice --position 1 >/dev/null || fail "splicectl rules add (position 1) failed"
port_new=$(curl_get new other.example /big/file -r 0-1048575)
[[ "$(sha256_of "$TEST_TMP/new.body")" == "$want_first" ]] || fail "the download after the rule change differs"
bg_wait slow 120 || fail "the paced download failed"
[[ "$(sha256_of "$TEST_TMP/slow.body")" == "$(head -c 8388608 "$CROWD_DIR/big/file" | sha256sum | cut -d' ' -f1)" ]] \
    || fail "the paced download (proxied through the rule change) differs"
port_slow=$(head -n 1 "$(bg_log slow)")
f_slow=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$PORT" --sport "$port_slow")
f_new=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$PORT" --sport "$port_new")
[[ "$(json_get decision <<<"$f_slow")" == proxy ]] || fail "the running download changed its decision with the rules: $f_slow"
[[ "$(json_get mode <<<"$f_new")" == spliced && "$(json_get decision <<<"$f_new")" == splice ]] \
    || fail "a new connection after the rule change was not spliced: $f_new"
log "rule change: the running download stayed proxied, the next connection was spliced"
log "status.splices: $(status_json | json_get splices)"
log "PASS"
