#!/usr/bin/env python3
"""Names the segments an end would drop by PAWS (RFC 7323 5.3), from tcpdump's text.

Reads `tcpdump -n -tt -S -r CAPTURE` on stdin (a capture taken at one end's interface, so in
the order that end's TCP received them). Per direction of each connection it keeps the newest
TSval seen so far; a later segment whose TSval is older than that by more than one tick is
printed with what came before it, unless it is a plain duplicate ACK no older than the replay
window Linux forgives (tcp_disordered_ack: about an RTO, at least 200 ms; REPLAY_TICKS, in ms
ticks). Prints a last line `old: N`. Used by the failover and balancer tests (lib.sh
paws_report) to show which segments a PAWSEstab growth was, and whether any was on the wire.

Three kinds of old segment are the path's own doing, not a translating middlebox's, and are
named as such (a line `path's own: K` before the last, K of the N):
- a copy: the very transmission seen earlier (the same sequence range, acknowledgment, TSval
  and TSecr), arriving again behind newer ones (a link that duplicates);
- a late original: a data segment overtaken by its own retransmission (a segment starting at
  the same sequence number arrived earlier with a newer TSval: the same range, or, where the
  sender's offloads send 64 KB at a time, a shorter retransmission of its head), carrying the
  clock reading of the segment sent just before it (the one ending where it starts: the same
  TSval and TSecr), so it is the sender's first transmission, delayed on the way (two CPUs'
  backlogs on a veth path reorder so; the sender's RACK retransmits within a fraction of a
  millisecond). Plain forwarding shows both;
- a reordered original: a data segment whose first byte arrives for the first time, behind
  segments sent after it, and whose TSval is not older than that of the segment ending where it
  starts (which arrived before it): in sequence order its clock runs forward, only its arrival
  was late (the same two backlogs; seen in CI, 2026-12-07). TCP takes the clock of an
  out-of-order segment for nothing (RFC 7323 4.3: only a segment at the left edge updates
  TS.Recent), so such a segment is on the wire as old but is not itself dropped by PAWS.
A segment of another clock (a proxy's packet let out after a join, a TSval translated wrong)
matches none of them.
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
    seen = {}        # (src, dst, seq range, ack, tsval, tsecr) -> time first seen
    starts = {}      # (src, dst, sequence start) -> newest TSval a segment starting there arrived with
    ending = {}      # (src, dst, sequence end) -> (tsval, tsecr) of the first segment ending there
    own = 0
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
        tsecr = int(ts[2])
        sq = SEQ.search(rest)
        span = (sq[1], sq[2]) if sq and sq[2] else None
        ident = (src, dst, span, ack, tsval, tsecr)
        copy = span is not None and ident in seen
        seen.setdefault(ident, t)
        start = (src, dst, span[0]) if span is not None else None
        overtaken = start is not None and start in starts and older(tsval, starts[start])
        before = ending.get(start) if start is not None else None
        late = overtaken and before == (tsval, tsecr)
        reordered = span is not None and length > 0 and start not in starts \
            and before is not None and not older(tsval, before[0])
        if span is not None:
            if start not in starts or older(starts[start], tsval):
                starts[start] = tsval
            ending.setdefault((src, dst, span[1]), (tsval, tsecr))
        if ack is not None and advances:
            acked[key] = ack
        if key in newest:
            nv, nt, nline = newest[key]
            behind = (nv - tsval) & 0xFFFFFFFF
            if older(tsval, (nv - 1) & 0xFFFFFFFF) and (length > 0 or 'F' in flags or advances
                                                        or behind > REPLAY_TICKS):
                old += 1
                own += copy or late or reordered
                if old <= 20:
                    print(f"old TSval: {raw.strip()}")
                    print(f"   newest before it ({(t - nt) * 1000:.1f} ms earlier, {behind} ticks newer): {nline}")
                    if copy:
                        print(f"   (the path's own: a copy of a segment seen {(t - seen[ident]) * 1000:.1f} ms earlier)")
                    elif late:
                        print("   (the path's own: a late original; its retransmission came first, and it carries"
                              " the clock of the segment that ends where it starts)")
                    elif reordered:
                        print("   (the path's own: a reordered original; its range's first arrival, its clock"
                              " not older than that of the segment that ends where it starts)")
            if older(nv, tsval):
                newest[key] = (tsval, t, raw.strip())
        else:
            newest[key] = (tsval, t, raw.strip())
    if old:
        print(f"path's own: {own}")
    print(f"old: {old}")


if __name__ == '__main__':
    main()
