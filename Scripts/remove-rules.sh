#!/usr/bin/env bash
# tcpsplice: remove the rules installed by Scripts/install-rules.sh: every jump
# to our chains (wherever it is) and the chains TCPSPLICE_PRE, TCPSPLICE_MOUT,
# TCPSPLICE_FWDQ and TCPSPLICE_POST (mangle), TCPSPLICE_OUT and TCPSPLICE_RPRE (raw), TCPSPLICE_IN and TCPSPLICE_FWD
# (filter). The host's other rules are untouched. Each table is
# changed in one `iptables-restore --noflush` transaction. Succeeds quietly when
# nothing is installed, and never creates a table that is not there.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

usage() {
    cat <<'EOF'
Usage: remove-rules.sh [options]

Remove the tcpsplice chains and the jumps to them. Quiet and successful when
nothing is installed.

Options:
  --family 4|6|both         iptables, ip6tables or both               [both]
  --backend auto|nft|legacy auto = whatever `iptables` is            [auto]
  --local-mark MARK         the resilient mode's local mark          [0x5a5c]
  --proxy-mark MARK         its proxy mark                           [0x5a5b]
  --route-table N           its routing table                         [100]
  --dry-run                 print what would be done; change nothing

Also removes the resilient mode's policy rule and local route, and restores
the sysctls install-rules.sh changed (early demux, rp_filter).
  -h, --help                this help
EOF
}

FAMILY=both
BACKEND=auto
DRY_RUN=0
LOCAL_MARK=0x5a5c
PROXY_MARK=0x5a5b
ROUTE_TABLE=100
while [[ $# -gt 0 ]]; do
    opt=$1
    if [[ "$opt" == --*=* ]]; then
        set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
        opt=$1
    fi
    case "$opt" in
        --family) [[ $# -ge 2 ]] || die "option --family needs a value (see --help)"; FAMILY=$2; shift 2 ;;
        --backend) [[ $# -ge 2 ]] || die "option --backend needs a value (see --help)"; BACKEND=$2; shift 2 ;;
        --local-mark) [[ $# -ge 2 ]] || die "option --local-mark needs a value (see --help)"; LOCAL_MARK=$2; shift 2 ;;
        --proxy-mark) [[ $# -ge 2 ]] || die "option --proxy-mark needs a value (see --help)"; PROXY_MARK=$2; shift 2 ;;
        --route-table) [[ $# -ge 2 ]] || die "option --route-table needs a value (see --help)"; ROUTE_TABLE=$2; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
case "$FAMILY" in
    4) families=(4) ;;
    6) families=(6) ;;
    both) families=(4 6) ;;
    *) die "bad family '$FAMILY' in --family (expected 4, 6 or both)" ;;
esac
case "$BACKEND" in
    auto|nft|legacy) ;;
    *) die "bad backend '$BACKEND' in --backend (expected auto, nft or legacy)" ;;
esac
resolve_backend "$BACKEND"
[[ $(id -u) -eq 0 ]] || die "must run as root (iptables needs CAP_NET_ADMIN)"

# removal_script SAVE_OUTPUT TABLE CHAIN -> restore text removing CHAIN and the
# jumps to it from TABLE, or nothing when there is nothing to remove.
removal_script() {
    local save=$1 table=$2 chain=$3
    printf '%s\n' "$save" | awk -v table="$table" -v chain="$chain" '
        $0 == "*" table { intable = 1; next }
        intable && $0 == "COMMIT" { intable = 0; next }
        !intable { next }
        $1 == ":" chain { have = 1; next }
        $1 == "-A" {
            # a jump or goto to our chain, with whatever matches it carries
            for (i = 3; i < NF; i++)
                if (($i == "-j" || $i == "-g") && $(i + 1) == chain) {
                    sub(/^-A /, "-D ")
                    dels[++n] = $0
                    break
                }
        }
        END {
            if (!have && !n) exit
            print "*" table
            for (i = 1; i <= n; i++) print dels[i]
            if (have) { print "-F " chain; print "-X " chain }
            print "COMMIT"
        }'
}

remove_family() {
    local fam=$1 ipt_save rst save script removed=""
    if [[ "$fam" == 4 ]]; then ipt_save=$IPT_SAVE; rst=$IPT_RESTORE; else ipt_save=$IP6T_SAVE; rst=$IP6T_RESTORE; fi
    require_tools "$ipt_save" "$rst"
    # Saving lists only the tables that exist; it never creates one.
    save=$("$ipt_save" 2>/dev/null) || die "$ipt_save failed"
    local spec table chain
    for spec in mangle:TCPSPLICE_PRE mangle:TCPSPLICE_MOUT mangle:TCPSPLICE_FWDQ mangle:TCPSPLICE_POST raw:TCPSPLICE_OUT raw:TCPSPLICE_RPRE filter:TCPSPLICE_IN filter:TCPSPLICE_FWD; do
        table=${spec%%:*}
        chain=${spec#*:}
        script=$(removal_script "$save" "$table" "$chain")
        [[ -n "$script" ]] || continue
        if ((DRY_RUN)); then
            echo "### IPv$fam: $rst -w 10 --noflush <<EOF"
            printf '%s\n' "$script"
            echo "### EOF"
            continue
        fi
        printf '%s\n' "$script" | "$rst" -w 10 --noflush \
            || die "$rst could not remove $chain from IPv$fam $table"
        removed+="${removed:+, }$table/$chain"
    done
    if [[ -n "$removed" ]]; then
        note "IPv$fam rules removed (${ipt_save%-save}): $removed"
    fi
}

[[ "$ROUTE_TABLE" =~ ^[0-9]{1,3}$ ]] || die "bad routing table '$ROUTE_TABLE' in --route-table (expected 1-252)"
[[ "$LOCAL_MARK" =~ ^(0[xX][0-9a-fA-F]{1,8}|[0-9]{1,10})$ ]] || die "bad mark '$LOCAL_MARK' in --local-mark"
[[ "$PROXY_MARK" =~ ^(0[xX][0-9a-fA-F]{1,8}|[0-9]{1,10})$ ]] || die "bad mark '$PROXY_MARK' in --proxy-mark"

remove_routing() {
    local fam=$1 any
    [[ "$fam" == 4 ]] && any=0.0.0.0/0 || any=::/0
    local mark
    for mark in "$LOCAL_MARK" "$PROXY_MARK"; do
        while [[ -n "$(ip -"$fam" rule show fwmark "$mark" lookup "$ROUTE_TABLE" 2>/dev/null)" ]]; do
            if ((DRY_RUN)); then echo "### ip -$fam rule del fwmark $mark lookup $ROUTE_TABLE"; break; fi
            ip -"$fam" rule del fwmark "$mark" lookup "$ROUTE_TABLE" || break
        done
    done
    if [[ -n "$(ip -"$fam" route show table "$ROUTE_TABLE" type local "$any" dev lo 2>/dev/null)" ]]; then
        if ((DRY_RUN)); then echo "### ip -$fam route del local $any dev lo table $ROUTE_TABLE"; return; fi
        ip -"$fam" route del local "$any" dev lo table "$ROUTE_TABLE" || true
    fi
}

restore_sysctls() {
    local state key value
    state=$(state_file)
    [[ -f "$state" ]] || return 0
    while read -r key value; do
        [[ -n "$key" ]] || continue
        if ((DRY_RUN)); then echo "### sysctl -w $key=$value"; continue; fi
        sysctl -qw "$key=$value" >/dev/null || note "could not restore $key=$value"
    done <"$state"
    ((DRY_RUN)) || rm -f "$state"
}

for fam in "${families[@]}"; do
    remove_family "$fam"
    remove_routing "$fam"
done
restore_sysctls
