#!/usr/bin/env python3
"""Peers for test_resilient_path_mtu.sh: an upload, then a download, on one connection.

  serve FAMILY PORT MIB        FAMILY 4 or 6: accepts one connection, reads MIB MiB (a
                               known pattern) and says whether they were right, then sends
                               the same MIB MiB back and closes.
  client HOST PORT MIB         connects, sends MIB MiB, reads the MIB MiB that come back.
Each prints one line, "<WHO> upload OK|BAD <bytes>" or "<WHO> download OK|BAD <bytes>", or
"<WHO> ERROR <what>", and exits 1 unless its part arrived whole and right.
"""
import hashlib
import socket
import sys


def pattern(mib):
    block = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2048))  # 64 KiB
    return block * (mib * 16)


def read_exactly(c, n):
    got = bytearray()
    while len(got) < n:
        d = c.recv(1 << 20)
        if not d:
            break
        got += d
    return bytes(got)


def serve(family, port, mib, prepare=None):
    """Accepts one connection, reads MIB MiB and checks them, sends them back; exits."""
    data = pattern(mib)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if prepare:
        prepare(s)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.listen(4)
    print("LISTENING", flush=True)
    c, _ = s.accept()
    c.settimeout(60)
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


def client(host, port, mib, prepare=None):
    """Connects, sends MIB MiB, reads the MIB MiB that come back; exits."""
    data = pattern(mib)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = socket.socket(family, socket.SOCK_STREAM)
    if prepare:
        prepare(c)
    c.settimeout(30)
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


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET, int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 5 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
