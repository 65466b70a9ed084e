#!/usr/bin/env bash
# tcpsplice: install what the project needs to build and test, idempotently.
#
# - Debian packages: checked with dpkg-query first; `apt-get update` and
#   `apt-get install -y` run only when something is missing. No stdin needed.
# - Installing haproxy must not leave a haproxy daemon running: service starts
#   are blocked with a temporary policy-rc.d, and any haproxy process that
#   appeared during the install is stopped.
# - The Swift toolchain must exist (`swift --version`; /opt/swift/usr/bin is
#   tried when swift is not on PATH). It is not installed from here.
# Exits non-zero with a clear message when anything is missing afterwards.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=Scripts/lib/common.sh
. "$SCRIPT_DIR/lib/common.sh"

PACKAGES=(
    iptables iproute2 libnetfilter-queue-dev libmnl-dev pkg-config
    iperf3 haproxy tcpdump nftables conntrack python3 curl procps ethtool kmod
    iputils-ping util-linux coreutils nginx wrk hping3
)

# Commands the scripts and tests use, each checked after the install.
COMMANDS=(
    iptables ip6tables iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy
    iptables-restore iptables-save ip ss python3 curl iperf3 haproxy tcpdump nft
    conntrack ethtool pkg-config ping setsid setpriv timeout sha256sum nginx wrk hping3
)

if [[ $(id -u) -ne 0 ]]; then
    die "must run as root (installs Debian packages; the tests need root too)"
fi

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

policy_rc_created=0
cleanup() {
    if ((policy_rc_created)); then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

if [[ ${#missing[@]} -gt 0 ]]; then
    note "installing missing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script expects Debian (12)"
    # Block service starts during the install (haproxy's package would start one).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# temporary, from tcpsplice Scripts/setup.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_rc_created=1
    fi
    haproxy_before=$(pgrep -x haproxy | sort || true)
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    apt-get "${apt_opts[@]}" update -q </dev/null || die "apt-get update failed"
    apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null \
        || die "apt-get install failed for: ${missing[*]}"
    # No haproxy daemon may be left behind by the install.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    fi
    haproxy_after=$(pgrep -x haproxy | sort || true)
    new_pids=$(comm -13 <(printf '%s\n' "$haproxy_before") <(printf '%s\n' "$haproxy_after") | grep . || true)
    if [[ -n "$new_pids" ]]; then
        note "stopping the haproxy daemon the package started (pids: $(echo "$new_pids" | tr '\n' ' '))"
        if command -v service >/dev/null 2>&1; then service haproxy stop >/dev/null 2>&1 || true; fi
        for pid in $new_pids; do
            kill -TERM "$pid" 2>/dev/null || true
        done
    fi
else
    note "Debian packages: all present"
fi

# Verify, whatever happened above.
still_missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || still_missing+=("$p")
done
[[ ${#still_missing[@]} -eq 0 ]] || die "packages still not installed: ${still_missing[*]}"
for c in "${COMMANDS[@]}"; do
    command -v "$c" >/dev/null 2>&1 || die "command '$c' not found on PATH after the install"
done
pkg-config --exists libnetfilter_queue libmnl || die "pkg-config cannot find libnetfilter_queue / libmnl"
ip netns list >/dev/null 2>&1 || die "'ip netns' does not work on this machine"

swift_was_on_path=0
command -v swift >/dev/null 2>&1 && swift_was_on_path=1
ensure_swift_on_path
if ! command -v swift >/dev/null 2>&1; then
    die "Swift toolchain not found: no 'swift' on PATH and no /opt/swift/usr/bin/swift (install Swift 6 there)"
fi
swift_version=$(swift --version 2>&1 | head -n 1) || die "'swift --version' failed: $swift_version"
note "swift: $swift_version ($(command -v swift))"
if ((!swift_was_on_path)); then
    note "swift is not on PATH: the project's scripts add $(dirname "$(command -v swift)") themselves; add it for your shell"
fi
note "setup complete"
