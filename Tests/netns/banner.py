#!/usr/bin/env python3
"""Short exchanges on new connections (lib.sh banner_exchanges: the firewalled-router and NAT-gateway tests).

  serve FIRST_PORT SECOND_PORT   IPv4 and IPv6. On FIRST_PORT the server speaks first (a
                                 220 banner, as SMTP does), then answers the client's line;
                                 on SECOND_PORT it waits for the client's line, then answers.
                                 Each answer names the line it got.
  client HOST PORT COUNT first|second
                                 COUNT connections one after the other, each checked; prints
                                 "OK COUNT, median whole exchange MS ms" or the first failure
                                 and exits 1.
"""
import socket
import statistics
import sys
import threading
import time

BANNER = b"220 tcpsplice test ready\r\n"


def read_line(c):
    """Bytes up to and with a newline, or what came before the peer closed."""
    got = b""
    while not got.endswith(b"\n"):
        d = c.recv(1024)
        if not d:
            break
        got += d
    return got


def handle(c, first):
    try:
        if first:
            c.sendall(BANNER)
        line = read_line(c)
        if line.endswith(b"\n"):
            c.sendall(b"250 got " + line)
    except OSError:
        pass
    finally:
        c.close()


def listener(family, port, first):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c, first), daemon=True).start()


def client(host, port, count, first):
    times = []
    for i in range(count):
        t0 = time.monotonic()
        try:
            c = socket.create_connection((host, port), timeout=5)
            with c:
                if first:
                    got = read_line(c)
                    if got != BANNER:
                        print(f"connection {i}: banner {got!r}, not the server's")
                        sys.exit(1)
                line = f"HELO {i}\r\n".encode()
                c.sendall(line)
                answer = read_line(c)
        except OSError as e:
            print(f"connection {i}: {e}")
            sys.exit(1)
        if answer != b"250 got " + line:
            print(f"connection {i}: answer {answer!r}")
            sys.exit(1)
        times.append((time.monotonic() - t0) * 1000)
    print(f"OK {count}, median whole exchange {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        for port, first in ((int(sys.argv[2]), True), (int(sys.argv[3]), False)):
            for fam in (socket.AF_INET, socket.AF_INET6):
                threading.Thread(target=listener, args=(fam, port, first), daemon=True).start()
        print("LISTENING", flush=True)
        threading.Event().wait()
    elif len(sys.argv) == 6 and sys.argv[1] == "client" and sys.argv[5] in ("first", "second"):
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "first")
    else:
        sys.exit(__doc__)
