#!/usr/bin/env python3
"""Peers for test_resilient_urgent_data.sh: pmtu.py's pattern up, then down, on one connection,
with one byte in every 256 KiB sent as urgent data (send(MSG_OOB): the URG flag and pointer, as
Telnet's Synch and FTP's ABOR use them). Both ends read with SO_OOBINLINE, so the urgent bytes
stay in the stream and each side must receive exactly the pattern.

  serve PORT MIB          accepts connections (IPv4 and IPv6); for each: reads MIB MiB and
                          answers "OK\\n" or "BAD\\n", waits for the client's "G", sends MIB
                          MiB back and closes
  client HOST PORT MIB [GO_FILE]
                          sends MIB MiB, reads the answer ("UPLOAD OK|BAD <bytes>"), waits
                          until GO_FILE exists when given (the test kills the proxy then), asks
                          for the download and reads it ("DOWNLOAD OK|BAD <bytes>")
  post HOST PORT PATH MIB an HTTP/1.0 POST of MIB MiB to backend.py (through the balancer),
                          whose answer is the body's SHA-256 ("POST OK|BAD <bytes>")
Exits 1 unless every byte arrived right; "ERROR <what>" on a socket error.
"""
import hashlib
import os
import socket
import sys
import threading
import time

from pmtu import pattern, read_exactly

EVERY = 256 * 1024


def send_with_urgent(sock, data):
    """Sends data, every EVERY-th byte as urgent data (alone, with MSG_OOB)."""
    i = 0
    while i < len(data):
        sock.sendall(data[i:i + EVERY - 1])
        i += EVERY - 1
        if i < len(data):
            sock.send(data[i:i + 1], socket.MSG_OOB)
            i += 1


def inline(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)


def serve_one(c, data):
    inline(c)
    c.settimeout(30)
    try:
        got = read_exactly(c, len(data))
        ok = got == data
        c.sendall(b"OK\n" if ok else b"BAD\n")
        if c.recv(1) != b"G":
            raise OSError("no request for the download")
        send_with_urgent(c, data)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        print(f"SERVER upload {'OK' if ok else 'BAD'} {len(got)}", flush=True)
    except OSError as e:
        print(f"SERVER ERROR {e}", flush=True)
    finally:
        c.close()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        port, mib = int(sys.argv[2]), int(sys.argv[3])
        data = pattern(mib)
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
        s.listen(16)
        print("LISTENING", flush=True)
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve_one, args=(c, data), daemon=True).start()
    elif len(sys.argv) in (5, 6) and sys.argv[1] == "client":
        host, port, mib = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        go = sys.argv[5] if len(sys.argv) == 6 else None
        data = pattern(mib)
        c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        inline(c)
        c.settimeout(30)
        try:
            c.connect((host, port))
            send_with_urgent(c, data)
            up_ok = read_exactly(c, 3) == b"OK\n"
            print(f"UPLOAD {'OK' if up_ok else 'BAD'} {len(data)}", flush=True)
            if go:
                deadline = time.monotonic() + 30
                while not os.path.exists(go):
                    if time.monotonic() > deadline:
                        raise OSError(f"{go} did not appear")
                    time.sleep(0.05)
            c.sendall(b"G")
            got = read_exactly(c, len(data) + 1)
        except OSError as e:
            print(f"ERROR {e}", flush=True)
            sys.exit(1)
        ok = up_ok and got == data
        print(f"DOWNLOAD {'OK' if got == data else 'BAD'} {len(got)}", flush=True)
        sys.exit(0 if ok else 1)
    elif len(sys.argv) == 6 and sys.argv[1] == "post":
        host, port, path, mib = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        data = pattern(mib)
        c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(30)
        try:
            c.connect((host, port))
            c.sendall(f"POST {path} HTTP/1.0\r\nHost: urgent.example\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            send_with_urgent(c, data)
            answer = read_exactly(c, 1 << 16)   # the answer is short: read to its end
        except OSError as e:
            print(f"ERROR {e}", flush=True)
            sys.exit(1)
        ok = answer.split(b"\r\n\r\n", 1)[-1].strip() == hashlib.sha256(data).hexdigest().encode()
        print(f"POST {'OK' if ok else 'BAD'} {len(data)}", flush=True)
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
