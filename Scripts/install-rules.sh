#!/usr/bin/env bash
# tcpsplice: install (or replace) the iptables rules that divert the intercepted
# TCP traffic into NFQUEUE, in chains of our own beside the host's rules.
#
# Renders iptables/tcpsplice.rules.in for each family and loads it with
# `iptables-restore --noflush` (declaring our chains flushes them, so installing
# twice gives the same ruleset and re-installing with other ports replaces our
# rules), then adds the jumps with `-C || -I`:
#   mangle PREROUTING (position 1) -> TCPSPLICE_PRE  (queue, fail-open)
#   raw OUTPUT        (position 1) -> TCPSPLICE_OUT  (inject-mark exemption)
#   mangle OUTPUT     (position 1) -> TCPSPLICE_MOUT (a splice's conntrack mark)
#   mangle FORWARD    (last)       -> TCPSPLICE_FWDQ (servers' packets behind source NAT)
#   mangle POSTROUTING (last)       -> TCPSPLICE_POST (copies of handshakes as they leave)
#   raw PREROUTING, filter INPUT and FORWARD -> TCPSPLICE_RPRE, _IN, _FWD (the balancer)
# The host's other rules are never touched. Undo with Scripts/remove-rules.sh.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

TEMPLATE=${TCPSPLICE_RULES_TEMPLATE:-$SCRIPT_DIR/../iptables/tcpsplice.rules.in}
MAX_PORTS=15   # limit of -m multiport (a range counts as two)

usage() {
    cat <<'EOF'
Usage: install-rules.sh [options]

Install the tcpsplice NFQUEUE rules (chains TCPSPLICE_PRE in mangle PREROUTING,
TCPSPLICE_OUT in raw OUTPUT, TCPSPLICE_MOUT in mangle OUTPUT, TCPSPLICE_FWDQ last in mangle
FORWARD, TCPSPLICE_POST last in mangle POSTROUTING, and the balancer's in raw PREROUTING, filter INPUT and FORWARD). Idempotent;
re-running replaces our rules.

Options:
  --ports LIST         intercepted TCP ports, comma separated, ranges A:B allowed
                       (at most 15, a range counting as 2)            [80]
  --queues N|A:B       NFQUEUE number, or a --queue-balance range       [0]
  --inject-mark MARK   mark of packets injected by the engine (never queued),
                       hex (0x...) or decimal, non-zero                [0x5a5a]
  --clients LIST       only intercept clients in these prefixes (comma
                       separated, IPv4 and/or IPv6)                    [any]
  --servers LIST       only intercept servers in these prefixes         [any]
  --family 4|6|both    iptables, ip6tables or both                     [both]
  --backend auto|nft|legacy
                       auto = whatever `iptables` is on this host     [auto]
  --tproxy-port PORT   resilient mode: the proxy's transparent listener port.
                       Adds the TPROXY rule, queues the proxy's own sockets
                       fail-closed in raw OUTPUT, adds the policy routing for
                       local transparent sockets, turns early demux off and
                       loosens strict rp_filter, turns TCP timestamps on
                       if they are off and has this host ask for ECN
                       (tcp_ecn 2 -> 1) (saved, restored on removal)
  --proxy-mark MARK    mark the engine sets on packets for the proxy   [0x5a5b]
  --local-mark MARK    mark of packets for local transparent sockets   [0x5a5c]
  --splice-mark MARK   mark the engine sets on a spliced flow's packet; saved
                       as the flow's conntrack mark, its data and ACKs then
                       skip the queue (give spliced --splice-mark)    [0x5a5d]
  --fin-log-group N|none
                       NFLOG group a spliced flow's FINs are logged to:
                       they skip the queue too, and spliced (give it
                       --fin-log-group N) follows the flow's end from the
                       copies; none = the FINs are queued         [23133]
  --syn-log-group N|none
                       resilient mode: NFLOG group the intercepted SYNs and
                       SYN-ACKs are logged to as they leave the router (the
                       last rule of mangle POSTROUTING, after any rule that
                       clamps their MSS): spliced (give it --syn-log-group N)
                       gives the proxy's sockets the MSS the ends got; none =
                       no copies, the MSS the ends offered          [23134]
  --route-table N      routing table for those packets                 [100]
  --proxy-queue N|A:B  queue(s) for the proxy's own packets, so that a second
                       spliced thread takes them (give spliced both)  [--queues]
  --proxy-reply-queue N|A:B
                       queue(s) for the proxy's packets to the clients (its
                       sockets facing them), apart from its packets to the
                       servers (give spliced both as --proxy-queue)
                                                                  [--proxy-queue]
  --reply-queue N|A:B  queue(s) for the servers' packets (replies), apart from
                       the clients' (give spliced both as --queue): the kernel
                       holds at most 65,536 packets per queue, so a crowd's
                       burst of answers does not fill the queue the clients'
                       packets wait in                                [--queues]
  --syn-queue N        queue of the ends' SYN and SYN-ACK packets (give spliced
                       --syn-queue N): under a SYN flood past what the engine
                       can take, new flows go by unseen (bypass) instead of
                       delaying the established ones              [--queues]
  --service LIST       layer-7 balancer: service addresses ADDR:PORT (IPv6 as
                       [ADDR]:PORT), comma separated, where splice-proxy
                       --service listens. Their connections and the answers to
                       --balancer-ports are queued (fail-open) and untracked;
                       sets net.ipv4.conf.all.accept_local=1 (a joined packet
                       arrives with a source address of this host), saved and
                       restored on removal (Docs/balancer.md)
  --balancer-ports A:B the local ports the balancer's backend connections
                       leave from (splice-proxy --balancer-ports) [61000:65535]
  --balancer-mark MARK mark of the balancer's sockets (splice-proxy
                       --balancer-mark; spliced --balancer-mark)     [0x5a5e]
  --balancer-relay-mark MARK
                       mark of the balancer's sockets of a connection it
                       relays to its end: not queued (splice-proxy
                       --balancer-relay-mark)                        [0x5a5f]
  --dry-run            print the rendered rules and the jump commands; change
                       nothing
  -h, --help           this help

With --clients/--servers, a family for which no prefix is given has nothing to
intercept: its chains get the inject-mark rule only.
EOF
}

# --- argument parsing --------------------------------------------------------
PORTS_ARG=80
QUEUES_ARG=0
MARK_ARG=0x5a5a
FAMILY=both
BACKEND=auto
DRY_RUN=0
CLIENTS_ARG=""
SERVERS_ARG=""
TPROXY_PORT_ARG=""
PROXY_MARK_ARG=0x5a5b
LOCAL_MARK_ARG=0x5a5c
SPLICE_MARK_ARG=0x5a5d
FIN_LOG_GROUP_ARG=23133
SYN_LOG_GROUP_ARG=23134
ROUTE_TABLE_ARG=100
PROXY_QUEUE_ARG=""
SYN_QUEUE_ARG=""
REPLY_QUEUE_ARG=""
PROXY_REPLY_QUEUE_ARG=""
SERVICE_ARG=""
BAL_PORTS_ARG=61000:65535
BAL_MARK_ARG=0x5a5e
BAL_RELAY_MARK_ARG=0x5a5f

need_value() {
    # need_value OPTION REMAINING_ARG_COUNT
    [[ "$2" -ge 2 ]] || die "option $1 needs a value (see --help)"
}
# check_value OPTION VALUE: a value that looks like an option means it is missing.
check_value() {
    [[ "$2" != --* ]] || die "option $1 needs a value, got option '$2' (see --help)"
}

while [[ $# -gt 0 ]]; do
    opt=$1
    val=""
    if [[ "$opt" == --*=* ]]; then
        val=${opt#*=}
        opt=${opt%%=*}
        set -- "$opt" "$val" "${@:2}"
    fi
    [[ $# -lt 2 || "$opt" == --dry-run || "$opt" == -h || "$opt" == --help ]] || check_value "$opt" "$2"
    case "$opt" in
        --ports) need_value "$1" $#; PORTS_ARG=$2; shift 2 ;;
        --queues|--queue) need_value "$1" $#; QUEUES_ARG=$2; shift 2 ;;
        --inject-mark) need_value "$1" $#; MARK_ARG=$2; shift 2 ;;
        --family) need_value "$1" $#; FAMILY=$2; shift 2 ;;
        --backend) need_value "$1" $#; BACKEND=$2; shift 2 ;;
        --clients|--src) need_value "$1" $#; CLIENTS_ARG=$2; shift 2 ;;
        --servers|--dst) need_value "$1" $#; SERVERS_ARG=$2; shift 2 ;;
        --tproxy-port) need_value "$1" $#; TPROXY_PORT_ARG=$2; shift 2 ;;
        --proxy-mark) need_value "$1" $#; PROXY_MARK_ARG=$2; shift 2 ;;
        --local-mark) need_value "$1" $#; LOCAL_MARK_ARG=$2; shift 2 ;;
        --splice-mark) need_value "$1" $#; SPLICE_MARK_ARG=$2; shift 2 ;;
        --fin-log-group) need_value "$1" $#; FIN_LOG_GROUP_ARG=$2; shift 2 ;;
        --syn-log-group) need_value "$1" $#; SYN_LOG_GROUP_ARG=$2; shift 2 ;;
        --route-table) need_value "$1" $#; ROUTE_TABLE_ARG=$2; shift 2 ;;
        --proxy-queue) need_value "$1" $#; PROXY_QUEUE_ARG=$2; shift 2 ;;
        --syn-queue) need_value "$1" $#; SYN_QUEUE_ARG=$2; shift 2 ;;
        --reply-queue) need_value "$1" $#; REPLY_QUEUE_ARG=$2; shift 2 ;;
        --proxy-reply-queue) need_value "$1" $#; PROXY_REPLY_QUEUE_ARG=$2; shift 2 ;;
        --service) need_value "$1" $#; SERVICE_ARG+="${SERVICE_ARG:+,}$2"; shift 2 ;;
        --balancer-ports) need_value "$1" $#; BAL_PORTS_ARG=$2; shift 2 ;;
        --balancer-mark) need_value "$1" $#; BAL_MARK_ARG=$2; shift 2 ;;
        --balancer-relay-mark) need_value "$1" $#; BAL_RELAY_MARK_ARG=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

# --- validation --------------------------------------------------------------
# validate_prefix_early ITEM ADDR -> 4 for a valid dotted quad, dies otherwise.
validate_prefix_early() {
    [[ "$2" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || die "bad address in service '$1' in --service"
    local i
    for i in 1 2 3 4; do ((10#${BASH_REMATCH[$i]} <= 255)) || die "bad address in service '$1' in --service"; done
    echo 4
}
# is_uint STR: decimal digits only, at most 10 of them.
is_uint() { [[ "$1" =~ ^[0-9]{1,10}$ ]]; }

# parse_port STR -> echoes the port as a number, dies naming STR otherwise.
parse_port() {
    is_uint "$1" || die "bad port '$1' in --ports (expected a number 1-65535)"
    local n=$((10#$1))
    ((n >= 1 && n <= 65535)) || die "bad port '$1' in --ports (out of range 1-65535)"
    echo "$n"
}

PORTS=""        # normalized list for multiport
PORT_COUNT=0    # as multiport counts them
SINGLE_PORT=""  # set when the list is one port (then --dport/--sport is used)
[[ -n "$PORTS_ARG" ]] || die "--ports is empty"
declare -A seen_port=()
IFS=',' read -r -a port_items <<<"$PORTS_ARG"
[[ "$PORTS_ARG" != *, && "$PORTS_ARG" != ,* && "$PORTS_ARG" != *,,* ]] \
    || die "bad port list '$PORTS_ARG' in --ports (empty element)"
for item in "${port_items[@]}"; do
    if [[ "$item" == *:* ]]; then
        lo=$(parse_port "${item%%:*}")
        hi=$(parse_port "${item#*:}")
        ((lo < hi)) || die "bad port range '$item' in --ports (first port must be below the second)"
        norm="$lo:$hi"
        PORT_COUNT=$((PORT_COUNT + 2))
    else
        norm=$(parse_port "$item")
        PORT_COUNT=$((PORT_COUNT + 1))
    fi
    [[ -z "${seen_port[$norm]:-}" ]] || die "port '$item' given twice in --ports"
    seen_port[$norm]=1
    PORTS+="${PORTS:+,}$norm"
done
((PORT_COUNT <= MAX_PORTS)) \
    || die "too many ports in --ports: $PORT_COUNT (at most $MAX_PORTS; a range counts as 2)"
if [[ ${#port_items[@]} -eq 1 && "$PORTS" != *:* ]]; then
    SINGLE_PORT=$PORTS
fi

parse_queue() {   # parse_queue VALUE [OPTION]
    local opt=${2:---queues}
    is_uint "$1" || die "bad queue '$1' in $opt (expected N or A:B, numbers 0-65535)"
    local n=$((10#$1))
    ((n <= 65535)) || die "bad queue '$1' in $opt (out of range 0-65535)"
    echo "$n"
}
# queue_spec OPTION VALUE -> "--queue-num N" or "--queue-balance A:B"
queue_spec() {
    local opt=$1 v=$2 qa qb q
    if [[ "$v" == *:* ]]; then
        qa=$(parse_queue "${v%%:*}" "$opt") || exit 1
        qb=$(parse_queue "${v#*:}" "$opt") || exit 1
        ((qa < qb)) || die "bad queue range '$v' in $opt (first queue must be below the second)"
        echo "--queue-balance $qa:$qb"
    else
        q=$(parse_queue "$v" "$opt") || exit 1
        echo "--queue-num $q"
    fi
}
QUEUE_SPEC=$(queue_spec --queues "$QUEUES_ARG")
PROXY_QUEUE_SPEC=$QUEUE_SPEC
if [[ -n "$PROXY_QUEUE_ARG" ]]; then PROXY_QUEUE_SPEC=$(queue_spec --proxy-queue "$PROXY_QUEUE_ARG"); fi
REPLY_QUEUE_SPEC=$QUEUE_SPEC
REPLY_NOTE=""
if [[ -n "$REPLY_QUEUE_ARG" ]]; then
    REPLY_QUEUE_SPEC=$(queue_spec --reply-queue "$REPLY_QUEUE_ARG")
    # The proxy's queue is bound fail-closed for the proxy's packets alone: no end's packet there.
    [[ -z "$PROXY_QUEUE_ARG" || "$REPLY_QUEUE_SPEC" != "$PROXY_QUEUE_SPEC" ]] \
        || die "--reply-queue $REPLY_QUEUE_ARG must differ from --proxy-queue"
    REPLY_NOTE=" (the servers' packets: ${REPLY_QUEUE_SPEC#--})"
fi
PROXY_REPLY_QUEUE_SPEC=$PROXY_QUEUE_SPEC
if [[ -n "$PROXY_REPLY_QUEUE_ARG" ]]; then
    [[ -n "$PROXY_QUEUE_ARG" ]] || die "--proxy-reply-queue needs --proxy-queue (the proxy's packets to the servers)"
    PROXY_REPLY_QUEUE_SPEC=$(queue_spec --proxy-reply-queue "$PROXY_REPLY_QUEUE_ARG")
    # spliced binds the proxy's queues fail-closed: no end's packet may share one.
    [[ "$PROXY_REPLY_QUEUE_SPEC" != "$QUEUE_SPEC" && "$PROXY_REPLY_QUEUE_SPEC" != "$REPLY_QUEUE_SPEC" ]] \
        || die "--proxy-reply-queue $PROXY_REPLY_QUEUE_ARG must differ from --queues and --reply-queue"
fi
SYN_QUEUE_SPEC=""
# A spliced flow's FINs: logged (NFLOG) and let by, or queued (none).
if [[ "$FIN_LOG_GROUP_ARG" == none ]]; then
    FIN_LOG_GROUP=""
    SPLICE_SKIP_FLAGS=SYN,FIN,RST
    FIN_NOTE="queued"
else
    [[ "$FIN_LOG_GROUP_ARG" =~ ^[0-9]+$ ]] && ((10#$FIN_LOG_GROUP_ARG <= 65535)) \
        || die "--fin-log-group '$FIN_LOG_GROUP_ARG': give an NFLOG group number 0-65535, or none"
    FIN_LOG_GROUP=$((10#$FIN_LOG_GROUP_ARG))
    SPLICE_SKIP_FLAGS=SYN,RST
    FIN_NOTE="logged to NFLOG group $FIN_LOG_GROUP"
fi
# The handshakes as they leave: logged (NFLOG), or not (none).
if [[ "$SYN_LOG_GROUP_ARG" == none ]]; then
    SYN_LOG_GROUP=""
    SYN_NOTE="not logged"
else
    [[ "$SYN_LOG_GROUP_ARG" =~ ^[0-9]+$ ]] && ((10#$SYN_LOG_GROUP_ARG <= 65535)) \
        || die "--syn-log-group '$SYN_LOG_GROUP_ARG': give an NFLOG group number 0-65535, or none"
    SYN_LOG_GROUP=$((10#$SYN_LOG_GROUP_ARG))
    [[ "$SYN_LOG_GROUP" != "$FIN_LOG_GROUP" ]] \
        || die "--syn-log-group and --fin-log-group are both $SYN_LOG_GROUP: each log needs a group of its own"
    SYN_NOTE="logged to NFLOG group $SYN_LOG_GROUP"
fi

if [[ -n "$SYN_QUEUE_ARG" ]]; then
    [[ "$SYN_QUEUE_ARG" != *:* ]] || die "--syn-queue takes one queue number, not a range ('$SYN_QUEUE_ARG')"
    SYN_QUEUE_SPEC=$(queue_spec --syn-queue "$SYN_QUEUE_ARG")
    [[ "$SYN_QUEUE_SPEC" != "$QUEUE_SPEC" && "$SYN_QUEUE_SPEC" != "$PROXY_QUEUE_SPEC" && "$SYN_QUEUE_SPEC" != "$REPLY_QUEUE_SPEC" && "$SYN_QUEUE_SPEC" != "$PROXY_REPLY_QUEUE_SPEC" ]] \
        || die "--syn-queue $SYN_QUEUE_ARG must differ from the other queues"
fi

# parse_mark OPTION VALUE -> echoes the mark as 0x..., dies naming the option otherwise.
parse_mark() {
    local opt=$1 v=$2 n
    if [[ "$v" =~ ^0[xX][0-9a-fA-F]{1,8}$ ]]; then
        n=$((16#${v:2}))
    elif [[ "$v" =~ ^[0-9]{1,10}$ ]]; then
        n=$((10#$v))
    else
        die "bad mark '$v' in $opt (expected hex 0x... or decimal)"
    fi
    ((n >= 1 && n <= 0xffffffff)) \
        || die "bad mark '$v' in $opt (must be 1..0xffffffff; 0 is the mark of every unmarked packet)"
    printf '0x%x' "$n"
}
INJECT_MARK=$(parse_mark --inject-mark "$MARK_ARG")
PROXY_MARK=$(parse_mark --proxy-mark "$PROXY_MARK_ARG")
LOCAL_MARK=$(parse_mark --local-mark "$LOCAL_MARK_ARG")
SPLICE_MARK=$(parse_mark --splice-mark "$SPLICE_MARK_ARG")
BAL_MARK=$(parse_mark --balancer-mark "$BAL_MARK_ARG")
BAL_RELAY_MARK=$(parse_mark --balancer-relay-mark "$BAL_RELAY_MARK_ARG")
[[ "$BAL_RELAY_MARK" != "$BAL_MARK" ]] || die "--balancer-relay-mark must differ from --balancer-mark ($BAL_MARK)"
[[ "$BAL_PORTS_ARG" =~ ^[0-9]{1,5}:[0-9]{1,5}$ ]] \
    || die "bad port range '$BAL_PORTS_ARG' in --balancer-ports (expected LOW:HIGH)"
bal_lo=$((10#${BAL_PORTS_ARG%%:*})); bal_hi=$((10#${BAL_PORTS_ARG#*:}))
((bal_lo >= 1 && bal_hi <= 65535 && bal_lo <= bal_hi)) \
    || die "bad port range '$BAL_PORTS_ARG' in --balancer-ports (1-65535, LOW <= HIGH)"
BAL_PORTS="$bal_lo:$bal_hi"
# Services: "4 ADDR PORT" / "6 ADDR PORT" lines.
SERVICES=""
if [[ -n "$SERVICE_ARG" ]]; then
    IFS=',' read -r -a svc_items <<<"$SERVICE_ARG"
    for item in "${svc_items[@]}"; do
        if [[ "$item" =~ ^\[([0-9a-fA-F:.]+)\]:([0-9]{1,5})$ ]]; then
            svc_fam=6; svc_addr=${BASH_REMATCH[1]}; svc_port=${BASH_REMATCH[2]}
        elif [[ "$item" =~ ^([0-9.]+):([0-9]{1,5})$ ]]; then
            svc_fam=$(validate_prefix_early "$item" "${BASH_REMATCH[1]}"); svc_addr=${BASH_REMATCH[1]}; svc_port=${BASH_REMATCH[2]}
        else
            die "bad service '$item' in --service (expected ADDR:PORT, IPv6 as [ADDR]:PORT)"
        fi
        ((10#$svc_port >= 1 && 10#$svc_port <= 65535)) || die "bad port in service '$item' in --service (1-65535)"
        SERVICES+="$svc_fam $svc_addr $((10#$svc_port))"$'\n'
    done
fi
TPROXY_PORT=""
if [[ -n "$TPROXY_PORT_ARG" ]]; then
    is_uint "$TPROXY_PORT_ARG" && ((10#$TPROXY_PORT_ARG >= 1 && 10#$TPROXY_PORT_ARG <= 65535)) \
        || die "bad port '$TPROXY_PORT_ARG' in --tproxy-port (expected a number 1-65535)"
    TPROXY_PORT=$((10#$TPROXY_PORT_ARG))
    [[ $(printf '%s\n' "$INJECT_MARK" "$PROXY_MARK" "$LOCAL_MARK" "$SPLICE_MARK" | sort -u | wc -l) == 4 ]] \
        || die "--inject-mark, --proxy-mark, --local-mark and --splice-mark must differ"
fi
is_uint "$ROUTE_TABLE_ARG" && ((10#$ROUTE_TABLE_ARG >= 1 && 10#$ROUTE_TABLE_ARG <= 252)) \
    || die "bad routing table '$ROUTE_TABLE_ARG' in --route-table (expected 1-252)"
ROUTE_TABLE=$((10#$ROUTE_TABLE_ARG))

case "$FAMILY" in
    4|6|both) ;;
    *) die "bad family '$FAMILY' in --family (expected 4, 6 or both)" ;;
esac
case "$BACKEND" in
    auto|nft|legacy) ;;
    *) die "bad backend '$BACKEND' in --backend (expected auto, nft or legacy)" ;;
esac

# validate_prefix OPTION PREFIX -> echoes 4 or 6
validate_prefix() {
    local opt=$1 p=$2 addr len
    addr=${p%%/*}
    len=""
    [[ "$p" == */* ]] && len=${p#*/}
    if [[ "$addr" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
        local i
        for i in 1 2 3 4; do
            ((10#${BASH_REMATCH[$i]} <= 255)) || die "bad IPv4 prefix '$p' in $opt"
        done
        if [[ -n "$len" || "$p" == */ ]]; then
            if ! [[ "$len" =~ ^[0-9]{1,2}$ ]] || ((10#$len > 32)); then
                die "bad prefix length in '$p' in $opt (0-32)"
            fi
        fi
        echo 4
    elif [[ "$addr" == *:* && "$addr" =~ ^[0-9a-fA-F:.]+$ ]]; then
        if [[ -n "$len" || "$p" == */ ]]; then
            if ! [[ "$len" =~ ^[0-9]{1,3}$ ]] || ((10#$len > 128)); then
                die "bad prefix length in '$p' in $opt (0-128)"
            fi
        fi
        echo 6
    else
        die "bad address prefix '$p' in $opt (expected IPv4 or IPv6 address[/len])"
    fi
}

# split_prefixes OPTION LIST -> sets P4 and P6 (comma lists, maybe empty)
split_prefixes() {
    local opt=$1 list=$2 item fam
    P4=""
    P6=""
    [[ "$list" != *, && "$list" != ,* && "$list" != *,,* ]] || die "bad prefix list '$list' in $opt (empty element)"
    IFS=',' read -r -a items <<<"$list"
    for item in "${items[@]}"; do
        fam=$(validate_prefix "$opt" "$item")
        if [[ "$fam" == 4 ]]; then P4+="${P4:+,}$item"; else P6+="${P6:+,}$item"; fi
    done
}

C4=""; C6=""; S4=""; S6=""
if [[ -n "$CLIENTS_ARG" ]]; then split_prefixes --clients "$CLIENTS_ARG"; C4=$P4; C6=$P6; fi
if [[ -n "$SERVERS_ARG" ]]; then split_prefixes --servers "$SERVERS_ARG"; S4=$P4; S6=$P6; fi

if [[ ! -r "$TEMPLATE" ]]; then
    die "rules template not found: $TEMPLATE"
fi

# --- rendering ---------------------------------------------------------------
# render FAMILY -> the iptables-restore text for that family on stdout.
render() {
    local fam=$1 clients servers queue_rules=1 orig reply line
    if [[ "$fam" == 4 ]]; then clients=$C4; servers=$S4; else clients=$C6; servers=$S6; fi
    # A restriction given only for the other family: nothing to intercept here.
    if [[ -n "$CLIENTS_ARG" && -z "$clients" ]] || [[ -n "$SERVERS_ARG" && -z "$servers" ]]; then
        queue_rules=0
    fi
    orig=""
    reply=""
    if [[ -n "$clients" ]]; then orig+="-s $clients "; reply+="-d $clients "; fi
    if [[ -n "$servers" ]]; then orig+="-d $servers "; reply+="-s $servers "; fi
    if [[ -n "$SINGLE_PORT" ]]; then
        orig+="--dport $SINGLE_PORT"
        reply+="--sport $SINGLE_PORT"
    else
        orig+="-m multiport --dports $PORTS"
        reply+="-m multiport --sports $PORTS"
    fi
    echo "# tcpsplice IPv$fam rules, rendered by install-rules.sh from $(basename "$TEMPLATE")"
    while IFS= read -r line || [[ -n "$line" ]]; do
        # The template's own comments (they name the placeholders) stay out.
        [[ "$line" == \#* || -z "$line" ]] && continue
        if [[ "$line" == @S@* ]]; then
            [[ -n "$SYN_QUEUE_SPEC" ]] || continue
            line=${line#@S@}
        fi
        if [[ "$line" == @P@* ]]; then
            [[ -n "$TPROXY_PORT" ]] || continue
            line=${line#@P@}
        fi
        if [[ "$line" == @L@* ]]; then
            [[ -n "$FIN_LOG_GROUP" ]] || continue
            line=${line#@L@}
        fi
        if [[ "$line" == @H@* ]]; then
            [[ -n "$SYN_LOG_GROUP" ]] || continue
            line=${line#@H@}
        fi
        if [[ "$line" == @Q@* ]]; then
            ((queue_rules)) || continue
            line=${line#@Q@}
        fi
        if [[ "$line" == @B@* ]]; then
            line=${line#@B@}
            local svc_lines
            svc_lines=$(printf '%s' "$SERVICES" | awk -v f="$fam" '$1 == f')
            [[ -n "$svc_lines" ]] || continue
            if [[ "$line" == *@SVC_ADDR@* ]]; then
                local sf sa sp one
                while read -r sf sa sp; do
                    one=${line//@SVC_ADDR@/$sa}
                    one=${one//@SVC_PORT@/$sp}
                    one=${one//@INJECT_MARK@/$INJECT_MARK}
                    one=${one//@QUEUE@/$QUEUE_SPEC}
                    printf '%s\n' "$one"
                done <<<"$svc_lines"
                continue
            fi
            line=${line//@BAL_PORTS@/$BAL_PORTS}
            line=${line//@BAL_MARK@/$BAL_MARK}
            line=${line//@BAL_RELAY_MARK@/$BAL_RELAY_MARK}
        fi
        line=${line//@LOCAL_MARK@/$LOCAL_MARK}
        line=${line//@PROXY_MARK@/$PROXY_MARK}
        line=${line//@SPLICE_MARK@/$SPLICE_MARK}
        line=${line//@SPLICE_SKIP_FLAGS@/$SPLICE_SKIP_FLAGS}
        line=${line//@FIN_LOG_GROUP@/$FIN_LOG_GROUP}
        line=${line//@SYN_LOG_GROUP@/$SYN_LOG_GROUP}
        line=${line//@TPROXY_PORT@/$TPROXY_PORT}
        line=${line//@INJECT_MARK@/$INJECT_MARK}
        line=${line//@PQUEUE@/$PROXY_QUEUE_SPEC}
        line=${line//@PRQUEUE@/$PROXY_REPLY_QUEUE_SPEC}
        line=${line//@SQUEUE@/$SYN_QUEUE_SPEC}
        line=${line//@RQUEUE@/$REPLY_QUEUE_SPEC}
        line=${line//@QUEUE@/$QUEUE_SPEC}
        if [[ "$fam" == 4 ]]; then
            line=${line//@TOOBIG@/-p icmp --icmp-type fragmentation-needed}
        else
            line=${line//@TOOBIG@/-p ipv6-icmp --icmpv6-type packet-too-big}
        fi
        line=${line//@ORIG@/$orig}
        line=${line//@REPLY@/$reply}
        if [[ "$line" =~ @[A-Z_]+@ ]]; then
            die "unrendered placeholder in template line: $line"
        fi
        printf '%s\n' "$line"
    done <"$TEMPLATE"
}

families=()
case "$FAMILY" in
    4) families=(4) ;;
    6) families=(6) ;;
    both) families=(4 6) ;;
esac

resolve_backend "$BACKEND"

if ((DRY_RUN)); then
    for fam in "${families[@]}"; do
        if [[ "$fam" == 4 ]]; then ipt=$IPT; rst=$IPT_RESTORE; else ipt=$IP6T; rst=$IP6T_RESTORE; fi
        echo "### IPv$fam: $rst -w 10 --noflush <<EOF"
        render "$fam"
        echo "### EOF"
        echo "### $ipt -w 10 -t mangle -C PREROUTING -j TCPSPLICE_PRE || $ipt -w 10 -t mangle -I PREROUTING 1 -j TCPSPLICE_PRE"
        echo "### $ipt -w 10 -t raw -C OUTPUT -j TCPSPLICE_OUT || $ipt -w 10 -t raw -I OUTPUT 1 -j TCPSPLICE_OUT"
        echo "### $ipt -w 10 -t mangle -C OUTPUT -j TCPSPLICE_MOUT || $ipt -w 10 -t mangle -I OUTPUT 1 -j TCPSPLICE_MOUT"
        echo "### $ipt -w 10 -t mangle -D FORWARD -j TCPSPLICE_FWDQ (while there is one); $ipt -w 10 -t mangle -A FORWARD -j TCPSPLICE_FWDQ"
        echo "### $ipt -w 10 -t mangle -D POSTROUTING -j TCPSPLICE_POST (while there is one); $ipt -w 10 -t mangle -A POSTROUTING -j TCPSPLICE_POST"
        echo "### $ipt -w 10 -t raw -C PREROUTING -j TCPSPLICE_RPRE || $ipt -w 10 -t raw -I PREROUTING 1 -j TCPSPLICE_RPRE"
        echo "### $ipt -w 10 -t filter -C INPUT -j TCPSPLICE_IN || $ipt -w 10 -t filter -I INPUT 1 -j TCPSPLICE_IN"
        echo "### $ipt -w 10 -t filter -C FORWARD -j TCPSPLICE_FWD || $ipt -w 10 -t filter -I FORWARD 1 -j TCPSPLICE_FWD"
        if [[ -n "$TPROXY_PORT" ]]; then
            echo "### ip -$fam rule add fwmark $LOCAL_MARK lookup $ROUTE_TABLE"
            echo "### ip -$fam rule add fwmark $PROXY_MARK lookup $ROUTE_TABLE"
            echo "### ip -$fam route add local $( [[ $fam == 4 ]] && echo 0.0.0.0/0 || echo ::/0 ) dev lo table $ROUTE_TABLE"
        fi
    done
    if [[ -n "$TPROXY_PORT" ]]; then
        echo "### sysctl net.ipv4.tcp_early_demux=0 net.ipv4.ip_early_demux=0; rp_filter 1 -> 2; tcp_timestamps 0 -> 1; tcp_ecn 2 -> 1 (saved in $(state_file))"
    fi
    exit 0
fi

# --- install -----------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "must run as root (iptables needs CAP_NET_ADMIN)"

install_family() {
    local fam=$1 ipt rst rendered
    if [[ "$fam" == 4 ]]; then ipt=$IPT; rst=$IPT_RESTORE; else ipt=$IP6T; rst=$IP6T_RESTORE; fi
    require_tools "$ipt" "$rst"
    rendered=$(render "$fam")
    if ! printf '%s\n' "$rendered" | "$rst" -w 10 --noflush; then
        die "$rst rejected the rendered IPv$fam rules (nothing of this family was changed; see --dry-run)"
    fi
    if ! "$ipt" -w 10 -t mangle -C PREROUTING -j TCPSPLICE_PRE 2>/dev/null; then
        "$ipt" -w 10 -t mangle -I PREROUTING 1 -j TCPSPLICE_PRE \
            || die "could not insert the jump to TCPSPLICE_PRE in IPv$fam mangle PREROUTING"
    fi
    if ! "$ipt" -w 10 -t raw -C OUTPUT -j TCPSPLICE_OUT 2>/dev/null; then
        "$ipt" -w 10 -t raw -I OUTPUT 1 -j TCPSPLICE_OUT \
            || die "could not insert the jump to TCPSPLICE_OUT in IPv$fam raw OUTPUT"
    fi
    if ! "$ipt" -w 10 -t mangle -C OUTPUT -j TCPSPLICE_MOUT 2>/dev/null; then
        "$ipt" -w 10 -t mangle -I OUTPUT 1 -j TCPSPLICE_MOUT \
            || die "could not insert the jump to TCPSPLICE_MOUT in IPv$fam mangle OUTPUT"
    fi
    # Last in mangle FORWARD and POSTROUTING, after the host's own rules there, moved to the
    # end at every install: a packet the queue accepts skips the rest of the table's chain, so
    # a host's clamp of the handshakes' MSS in FORWARD (OpenWrt's, for one) must come first,
    # and the handshakes' log must see what every rule left.
    local builtin chain
    for builtin in FORWARD:TCPSPLICE_FWDQ POSTROUTING:TCPSPLICE_POST; do
        chain=${builtin#*:}
        builtin=${builtin%%:*}
        while "$ipt" -w 10 -t mangle -D "$builtin" -j "$chain" 2>/dev/null; do :; done
        "$ipt" -w 10 -t mangle -A "$builtin" -j "$chain" \
            || die "could not append the jump to $chain in IPv$fam mangle $builtin"
    done
    if ! "$ipt" -w 10 -t raw -C PREROUTING -j TCPSPLICE_RPRE 2>/dev/null; then
        "$ipt" -w 10 -t raw -I PREROUTING 1 -j TCPSPLICE_RPRE \
            || die "could not insert the jump to TCPSPLICE_RPRE in IPv$fam raw PREROUTING"
    fi
    local hook
    for hook in INPUT:TCPSPLICE_IN FORWARD:TCPSPLICE_FWD; do
        if ! "$ipt" -w 10 -t filter -C "${hook%%:*}" -j "${hook#*:}" 2>/dev/null; then
            "$ipt" -w 10 -t filter -I "${hook%%:*}" 1 -j "${hook#*:}" \
                || die "could not insert the jump to ${hook#*:} in IPv$fam filter ${hook%%:*}"
        fi
    done
    local first
    first=$("$ipt" -w 10 -t mangle -S PREROUTING | sed -n 2p)
    if [[ "$first" != "-A PREROUTING -j TCPSPLICE_PRE" ]]; then
        note "warning: IPv$fam mangle PREROUTING has rules before the jump to TCPSPLICE_PRE (left as they are)"
    fi
    note "IPv$fam rules installed ($ipt): ports $PORTS, ${QUEUE_SPEC#--}$REPLY_NOTE, inject mark $INJECT_MARK${CLIENTS_ARG:+, clients $CLIENTS_ARG}${SERVERS_ARG:+, servers $SERVERS_ARG}${TPROXY_PORT:+, tproxy port $TPROXY_PORT}"
}

# The resilient mode's routing: packets marked for local transparent sockets
# (TPROXY's mark, and the engine's injections to the proxy) are delivered
# locally whatever their destination address.
install_routing() {
    local fam=$1 any
    [[ "$fam" == 4 ]] && any=0.0.0.0/0 || any=::/0
    local mark
    for mark in "$LOCAL_MARK" "$PROXY_MARK"; do
        if [[ -z "$(ip -"$fam" rule show fwmark "$mark" lookup "$ROUTE_TABLE" 2>/dev/null)" ]]; then
            ip -"$fam" rule add fwmark "$mark" lookup "$ROUTE_TABLE" \
                || die "could not add the IPv$fam policy rule (fwmark $mark lookup $ROUTE_TABLE)"
        fi
    done
    if [[ -z "$(ip -"$fam" route show table "$ROUTE_TABLE" type local "$any" dev lo 2>/dev/null)" ]]; then
        ip -"$fam" route add local "$any" dev lo table "$ROUTE_TABLE" \
            || die "could not add the IPv$fam local route to table $ROUTE_TABLE"
    fi
}

# Early demux attaches a packet to a local socket of the same 4-tuple before
# routing, and ip_forward drops packets that carry a socket: a dead proxy's
# leftover sockets (FIN-WAIT, TIME-WAIT) would black-hole its bypassed flows.
# Strict rp_filter would drop the replayed SYN (the client's source arriving
# from the server's side). Both are changed here and saved for remove-rules.sh.
install_sysctls() {
    local state key old
    state=$(state_file)
    mkdir -p "$(dirname "$state")"
    [[ -f "$state" ]] || : >"$state"
    set_saved() {   # set_saved KEY VALUE: remember the first old value, then set
        key=$1
        old=$(sysctl -n "$key" 2>/dev/null) || return 0
        [[ "$old" == "$2" ]] && return 0
        grep -q "^$key " "$state" || printf '%s %s\n' "$key" "$old" >>"$state"
        sysctl -qw "$key=$2" >/dev/null || die "could not set $key=$2"
    }
    if [[ -n "$TPROXY_PORT" ]]; then
        set_saved net.ipv4.tcp_early_demux 0
        set_saved net.ipv4.ip_early_demux 0
        # The proxy's sockets are the router's: with its timestamps off they answer the
        # replayed handshake without the timestamps the ends use, and spliced lets such flows
        # go on without the proxy (reason proxy-without-timestamps). (1 or 2 both have them on.)
        if [[ "$(sysctl -n net.ipv4.tcp_timestamps 2>/dev/null)" == 0 ]]; then
            set_saved net.ipv4.tcp_timestamps 1
            TIMESTAMPS_NOTE=" (this host's net.ipv4.tcp_timestamps was 0: set to 1, restored on removal)"
        fi
        # The proxy's socket facing the server asks for ECN only with tcp_ecn=1 (the default
        # 2 accepts ECN and never asks): spliced answers that SYN with ECN only where the ends
        # set it up, so the servers' congestion marks keep being echoed while the proxy is in
        # the path. 0 (ECN off on this host) is left as it is.
        if [[ "$(sysctl -n net.ipv4.tcp_ecn 2>/dev/null)" == 2 ]]; then
            set_saved net.ipv4.tcp_ecn 1
            ECN_NOTE="; TCP ECN asked for (net.ipv4.tcp_ecn 2 -> 1, restored on removal)"
        fi
    fi
    if [[ -n "$SERVICES" ]]; then
        # A joined packet arrives with a source address of this host (the service address,
        # or the balancer's own); without accept_local it is dropped as a martian.
        set_saved net.ipv4.conf.all.accept_local 1
    fi
    local f v
    for f in /proc/sys/net/ipv4/conf/*/rp_filter; do
        v=$(<"$f")
        if [[ "$v" == 1 ]]; then
            key=${f#/proc/sys/}
            key=${key//\//.}
            set_saved "$key" 2
        fi
    done
}

for fam in "${families[@]}"; do
    install_family "$fam"
    if [[ -n "$TPROXY_PORT" ]]; then install_routing "$fam"; fi
done
if [[ -n "$TPROXY_PORT" || -n "$SERVICES" ]]; then install_sysctls; fi
if [[ -n "$SERVICES" ]]; then
    note "balancer: services $(printf '%s' "$SERVICES" | awk '{printf "%s%s:%s", (NR>1?", ":""), $2, $3}'), backend ports $BAL_PORTS, mark $BAL_MARK; accept_local on"
fi
if [[ -n "$TPROXY_PORT" ]]; then
    if [[ -z "$PROXY_QUEUE_ARG" ]]; then
        note "warning: no --proxy-queue: the proxy's packets share the ends' queue, which spliced binds fail-open (a full queue would let them out untranslated); give them a queue of their own (--proxy-queue N, and spliced --proxy-queue N)"
    fi
    note "resilient mode: TPROXY to port $TPROXY_PORT, the proxy's packets on ${PROXY_QUEUE_SPEC#--}${PROXY_REPLY_QUEUE_ARG:+ and ${PROXY_REPLY_QUEUE_SPEC#--}} (no bypass), proxy mark $PROXY_MARK, local mark $LOCAL_MARK via table $ROUTE_TABLE, splice mark $SPLICE_MARK, spliced FINs $FIN_NOTE, handshakes leaving $SYN_NOTE; early demux off${TIMESTAMPS_NOTE:-}${ECN_NOTE:-}"
fi
