#!/usr/bin/env python3
"""Lists the segments a capture shows more than once, from tcpdump's text.

Reads `tcpdump -n -tt -S -r CAPTURE` on stdin. A segment is its addresses, flags and sequence
range; pure ACKs and bare FINs are left out (not the handshake, a request or an answer). Each
segment seen more than once is printed as one line:

  KIND NAME: (src, dst, flags, seq, end) sent N times, again after MS ms

KIND is `handshake` (SYN or SYN-ACK) or `data`; NAME is the argument (which capture); MS the
time from its first to its second appearance. Used by test_resilient_first_byte.sh.
"""
import collections
import re
import sys

LINE = re.compile(r"^(\d+\.\d+) IP6? (\S+) > (\S+): Flags \[([^\]]*)\](?:, seq (\d+)(?::(\d+))?)?.*length (\d+)")


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "capture"
    times = collections.defaultdict(list)
    for line in sys.stdin:
        m = LINE.search(line)
        if not m:
            continue
        t, src, dst, flags, seq, end, length = m.groups()
        if "S" not in flags and int(length) == 0:
            continue
        times[(src, dst, flags, seq, end)].append(float(t))
    for key, ts in times.items():
        if len(ts) > 1:
            kind = "handshake" if "S" in key[2] else "data"
            print("%s %s: %s sent %d times, again after %.1f ms" % (kind, name, key, len(ts), (ts[1] - ts[0]) * 1000))


if __name__ == "__main__":
    main()
