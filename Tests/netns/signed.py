#!/usr/bin/env python3
"""Peers for test_resilient_signed_and_multipath.sh: pmtu.py's upload-then-download on one
connection whose every segment is signed with TCP-MD5 (RFC 2385), as BGP sessions are.

  serve FAMILY PORT MIB KEY PEER   accepts one connection from PEER (the key is for that
                                   address), reads MIB MiB (a known pattern) and says whether
                                   they were right, then sends them back and closes
  client HOST PORT MIB KEY         connects to HOST with KEY, sends MIB MiB, reads them back
Each prints pmtu.py's line ("<WHO> upload|download OK|BAD <bytes>" or "<WHO> ERROR <what>")
and exits 1 unless its part arrived whole and right. A segment that is not signed with the
key, or whose signature does not match its bytes, is dropped by the receiving kernel.
"""
import socket
import struct
import sys

from pmtu import client, serve

TCP_MD5SIG = 14


def md5_key(sock, peer, key):
    """struct tcp_md5sig: a sockaddr_storage (128 bytes) naming the peer, flags, prefix
    length, key length, ifindex, then the key (80 bytes)."""
    if ":" in peer:
        addr = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 0, 0) \
            + socket.inet_pton(socket.AF_INET6, peer) + struct.pack("=I", 0)
    else:
        addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) \
            + socket.inet_pton(socket.AF_INET, peer)
    k = key.encode()
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG,
                    addr.ljust(128, b"\0") + struct.pack("=BBHi", 0, 0, len(k), 0) + k.ljust(80, b"\0"))


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "serve":
        key, peer = sys.argv[5], sys.argv[6]
        serve(socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET, int(sys.argv[3]), int(sys.argv[4]),
              lambda s: md5_key(s, peer, key))
    elif len(sys.argv) == 6 and sys.argv[1] == "client":
        host, key = sys.argv[2], sys.argv[5]
        client(host, int(sys.argv[3]), int(sys.argv[4]), lambda s: md5_key(s, host, key))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
