#!/usr/bin/env python3
"""Names the segments an end would drop by PAWS (RFC 7323 5.3), from tcpdump's text.

Reads `tcpdump -n -tt -S -r CAPTURE` on stdin (a capture taken at one end's interface, so in
the order that end's TCP received them). Per direction of each connection it keeps the newest
TSval seen so far; a later segment whose TSval is older than that by more than one tick is
printed with what came before it, unless it is a plain duplicate ACK no older than the replay
window Linux forgives (tcp_disordered_ack: about an RTO, at least 200 ms; REPLAY_TICKS, in ms
ticks). Prints a last line `old: N`. Used by the failover and balancer tests (lib.sh
paws_report) to show which segments a PAWSEstab growth was, and whether any was on the wire.
"""
import re
import sys

LINE = re.compile(r'^(\d+\.\d+) IP6? (\S+) > (\S+): Flags \[([^\]]*)\](.*)$')
SEQ = re.compile(r'seq (\d+)(?::(\d+))?')
ACK = re.compile(r'ack (\d+)')
TS = re.compile(r'TS val (\d+) ecr (\d+)')
LEN = re.compile(r'length (\d+)')
# A late pure ACK is forgiven when it is at most this many ticks older (Linux: the RTO, whose
# floor is 200 ms; ms ticks).
REPLAY_TICKS = 200


def older(a, b):
    """a is older than b in 32-bit serial arithmetic."""
    return ((b - a) & 0xFFFFFFFF) < 0x80000000 and a != b


def main():
    newest = {}      # (src, dst) -> (tsval, time, line)
    acked = {}       # (src, dst) -> highest ack seen
    old = 0
    for raw in sys.stdin:
        m = LINE.match(raw.strip())
        if not m:
            continue
        t, src, dst, flags, rest = float(m[1]), m[2], m[3].rstrip(':'), m[4], m[5]
        ts = TS.search(rest)
        if not ts:
            continue
        tsval = int(ts[1])
        key = (src, dst)
        length = int(LEN.search(rest)[1]) if LEN.search(rest) else 0
        a = ACK.search(rest)
        ack = int(a[1]) if a else None
        advances = ack is not None and (key not in acked or older(acked[key], ack))
        if ack is not None and advances:
            acked[key] = ack
        if key in newest:
            nv, nt, nline = newest[key]
            behind = (nv - tsval) & 0xFFFFFFFF
            if older(tsval, (nv - 1) & 0xFFFFFFFF) and (length > 0 or 'F' in flags or advances
                                                        or behind > REPLAY_TICKS):
                old += 1
                if old <= 20:
                    print(f"old TSval: {raw.strip()}")
                    print(f"   newest before it ({(t - nt) * 1000:.1f} ms earlier, {behind} ticks newer): {nline}")
            if older(nv, tsval):
                newest[key] = (tsval, t, raw.strip())
        else:
            newest[key] = (tsval, t, raw.strip())
    print(f"old: {old}")


if __name__ == '__main__':
    main()
