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

from pmtu import pattern, read_exactly

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
        family = socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET
        port, mib, key, peer = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
        data = pattern(mib)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        md5_key(s, peer, key)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        s.listen(4)
        print("LISTENING", flush=True)
        c, _ = s.accept()
        c.settimeout(20)
        try:
            got = read_exactly(c, len(data))
            ok = got == data
            print(f"SERVER upload {'OK' if ok else 'BAD'} {len(got)}", flush=True)
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
        except OSError as e:
            print(f"SERVER ERROR {e}", flush=True)
            sys.exit(1)
        sys.exit(0 if ok else 1)
    elif len(sys.argv) == 6 and sys.argv[1] == "client":
        host, port, mib, key = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        data = pattern(mib)
        c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        md5_key(c, host, key)
        c.settimeout(15)
        try:
            c.connect((host, port))
            c.sendall(data)
            got = read_exactly(c, len(data) + 1)
        except OSError as e:
            print(f"CLIENT ERROR {e}", flush=True)
            sys.exit(1)
        ok = got == data
        print(f"CLIENT download {'OK' if ok else 'BAD'} {len(got)}", flush=True)
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
