#!/usr/bin/env bash
# tcpsplice test: clients whose TCP stacks leave options out, or use a small
# MSS, go through the proxy and survive its death like any other.
#
# For each variant, set in the client namespace only:
#   no-timestamps   net.ipv4.tcp_timestamps=0 (IPv4 and IPv6)
#   no-sack         net.ipv4.tcp_sack=0
#   no-wscale       net.ipv4.tcp_window_scaling=0
#   small-mss       advmss 536 on the client's routes (both families): it
#                   announces MSS 536
#   all             all four at once
# a fresh splice-proxy registers, 50 concurrent transfers of 32 MiB run (25
# downloads, 25 uploads, IPv4 and IPv6 alternately), their flows are
# resilient/policy with that proxy's id, the server's and the proxy's sockets
# show that the option is really off (no "ts", "sack", "wscale" in `ss -i`;
# mss <= 536), and a third of the way the proxy is killed with SIGKILL; every
# transfer completes with the SHA-256 it left with and the flows are
# bypass/proxy-died.
#
# Tunable: VARIANTS (space separated subset), XF_N, XF_MIB_EACH, XF_KIBPS.
# run.sh runs the test once per variant of the next line (VARIANTS=one of them,
# its own topology), each reported on its own: one failing variant hides no other.
# Run alone, the test goes through VARIANTS (default: that line) in one topology.
# variants: no-timestamps no-sack no-wscale small-mss all
# shellcheck source=Tests/netns/lib.sh disable=SC2119
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VARIANTS=${VARIANTS:-$(sed -n 's/^# variants:[[:space:]]*//p' "$0" | head -n 1)}
[[ -n "$VARIANTS" ]] || fail "no variants (VARIANTS is empty and the '# variants:' line is missing)"
xfers_size_defaults

topo_create
resilient_start
# Servers for every variant's files (prepared up front so that serve-send finds them).
XF_DIR="$TEST_TMP/xf"
mkdir -p "$XF_DIR/src"
xfers_servers_start "$RATE"

client_defaults() {
    nsx "$NS_C" sysctl -qw net.ipv4.tcp_timestamps=1 net.ipv4.tcp_sack=1 net.ipv4.tcp_window_scaling=1
    ip -n "$NS_C" route change default via "$ROUTER_IP_C"
    ip -n "$NS_C" -6 route change default via "$ROUTER_IP6_C"
}

set_variant() {
    client_defaults
    case "$1" in
        no-timestamps) nsx "$NS_C" sysctl -qw net.ipv4.tcp_timestamps=0 ;;
        no-sack) nsx "$NS_C" sysctl -qw net.ipv4.tcp_sack=0 ;;
        no-wscale) nsx "$NS_C" sysctl -qw net.ipv4.tcp_window_scaling=0 ;;
        small-mss)
            ip -n "$NS_C" route change default via "$ROUTER_IP_C" advmss 536
            ip -n "$NS_C" -6 route change default via "$ROUTER_IP6_C" advmss 536 ;;
        all)
            nsx "$NS_C" sysctl -qw net.ipv4.tcp_timestamps=0 net.ipv4.tcp_sack=0 net.ipv4.tcp_window_scaling=0
            ip -n "$NS_C" route change default via "$ROUTER_IP_C" advmss 536
            ip -n "$NS_C" -6 route change default via "$ROUTER_IP6_C" advmss 536 ;;
        *) fail "unknown variant '$1'" ;;
    esac
}

# check_sockets VARIANT NS WHO: the established sockets of the set's client ports
# in NS show the variant (ss -i: options and mss).
check_sockets() {
    local variant=$1 ns=$2 who=$3 port info want_no=() mss toward_client
    case "$variant" in
        no-timestamps) want_no=(ts) ;;
        no-sack) want_no=(sack) ;;
        no-wscale) want_no=(wscale) ;;
        all) want_no=(ts sack wscale) ;;
    esac
    for name in "${XF_NAMES[@]}"; do
        port=$(xfers_client_port "$name")
        info=$(nsx "$ns" ss -Htni state established "( sport = :$port or dport = :$port )" | tr '\n' ' ')
        [[ -n "$info" ]] || fail "$variant: no established socket of client port $port ($name) in the $who"
        local w
        for w in "${want_no[@]}"; do
            [[ " $info " != *" $w "* && " $info " != *" $w:"* ]] \
                || fail "$variant: the $who's socket of $name still uses '$w': $info"
        done
        if [[ "$variant" == small-mss || "$variant" == all ]]; then
            # Only the sockets facing the client send it segments (the proxy's up
            # socket faces the server, whose MSS is the usual one).
            toward_client=$(nsx "$ns" ss -Htni state established \
                "( sport = :$XF_DOWN_PORT or sport = :$XF_UP_PORT ) and dport = :$port" | tr '\n' ' ')
            mss=$(grep -o ' mss:[0-9]*' <<<"$toward_client" | head -n 1 | cut -d: -f2)
            [[ -n "$mss" ]] || fail "$variant: no socket facing the client port $port ($name) in the $who"
            ((mss <= 536)) || fail "$variant: the $who's socket facing the client of $name sends segments of $mss bytes (> 536): $toward_client"
        fi
    done
}

for variant in $VARIANTS; do
    log "=== variant $variant"
    set_variant "$variant"
    proxy_start "proxy-$variant"
    pid=$(bg_pid "proxy-$variant")
    id=$(proxy_id_of "$pid")
    xfers_prepare $((N / 2)) $((N - N / 2)) "$MIB" "$variant-"
    xfers_start "$SERVER_IP" "$SERVER_IP6"
    xfers_wait_connected 30
    xfers_wait_progress 50 60
    mapfile -t ports < <(xfers_client_ports)
    flows_of_clients_assert resilient policy --proxy "$id" "${ports[@]}"
    check_sockets "$variant" "$NS_S" server
    check_sockets "$variant" "$NS_R" "proxy (router)"
    log "$variant: $N flows resilient/policy through proxy $id; server and proxy sockets show the variant"

    xfers_wait_progress 333 60
    xfers_assert_running
    rc=0
    bg_kill "proxy-$variant" KILL || rc=$?
    [[ $rc -eq 137 ]] || fail "$variant: splice-proxy exited with $rc after SIGKILL, expected 137"
    wait_no_proxy 10
    flows_of_clients_assert bypass proxy-died "${ports[@]}"
    xfers_wait 240
    xfers_verify
    log "$variant: all $N transfers byte-exact after the proxy's death"
    rm -f "$XF_DIR"/src/"$variant"-* "$XF_DIR"/got/"$variant"-* "$XF_DIR"/recv/"$variant"-*   # 1.6 GB a variant
done
client_defaults
log "PASS"
