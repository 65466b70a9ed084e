#!/usr/bin/env python3
"""TCP Fast Open peers for test_resilient_fast_open.sh.

  serve PORT [PORT ...]        on every PORT (IPv4 and IPv6) with TCP_FASTOPEN: reads a
                               request up to its blank line, answers the request's SHA-256
                               hex, a newline and BODY_BYTES bytes of a known pattern, then
                               closes its side and waits for the client's close.
  client HOST PORT COUNT PATH [--prime PORT]
                               with --prime first one Fast Open connection to HOST:PORT (the
                               cookie request: the server's answer gives the client its
                               cookie for HOST), then COUNT requests to HOST:PORT one after
                               the other, each on a new connection whose SYN carries the
                               request (sendto MSG_FASTOPEN), each answer checked. Prints
                               "RESULT ok=N bad=M" and exits 1 unless every answer was right.
"""
import hashlib
import socket
import sys
import threading

BODY_BYTES = 65536
BODY = (b"0123456789abcdef" * (BODY_BYTES // 16))[:BODY_BYTES]


def handle(c):
    try:
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(65536)
            if not d:
                return
            req += d
        c.sendall(hashlib.sha256(req).hexdigest().encode() + b"\n" + BODY)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    except OSError as e:
        print("SERVER-ERROR", e, flush=True)
    finally:
        c.close()


def listener(family, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 256)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def serve(ports):
    for port in ports:
        for family in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=listener, args=(family, port), daemon=True).start()
    print("LISTENING", flush=True)
    threading.Event().wait()


def request(host, port, path):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Headers padded so that the request fills most of the SYN's room for data.
    payload = (f"GET {path} HTTP/1.1\r\nHost: fastopen.test\r\nX-Pad: " + "p" * 900 + "\r\n\r\n").encode()
    c = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Blocking: a socket with a timeout is non-blocking inside, and its Fast Open connect
        # would return EINPROGRESS before sending anything.
        c.sendto(payload, socket.MSG_FASTOPEN, (host, port))
        c.settimeout(10)
        got = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            got += d
    except OSError as e:
        return f"{e}"
    finally:
        c.close()
    want = hashlib.sha256(payload).hexdigest().encode() + b"\n" + BODY
    if got != want:
        return f"answer of {len(got)} bytes, not the {len(want)} expected" + (
            "" if got[:64] == want[:64] else " (the request's hash differs: the server got other bytes)")
    return None


def client(host, port, count, path, prime):
    if prime is not None:
        err = request(host, prime, "/prime")
        if err:
            print("PRIME-FAILED", err, flush=True)
            sys.exit(1)
    ok = bad = 0
    for i in range(count):
        err = request(host, port, f"{path}{i}")
        if err:
            bad += 1
            print(f"BAD {path}{i}: {err}", flush=True)
        else:
            ok += 1
    print(f"RESULT ok={ok} bad={bad}", flush=True)
    sys.exit(0 if bad == 0 else 1)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    elif len(sys.argv) in (6, 8) and sys.argv[1] == "client":
        prime = int(sys.argv[7]) if len(sys.argv) == 8 and sys.argv[6] == "--prime" else None
        if len(sys.argv) == 8 and prime is None:
            sys.exit(__doc__)
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], prime)
    else:
        sys.exit(__doc__)
