#!/usr/bin/env python3
"""A keep-alive HTTP/1.1 client for the balancer's per-request tests: ONE TCP connection, the
requests sent one after another on it (each after the previous answer was read whole), each
body's SHA-256 checked against the file it must be. Never reconnects: a connection the other
side closes before the last answer is a failure (unless --expect-close says after which
answer the close must come: FIN propagation).

Usage: keepalive.py HOST PORT ROOT PATH... [--expect-close N] [--header 'Name: value'] [--hold S]
           [--pause S] [--rate B]
  ROOT: the directory the paths are files of (the expected bodies).
  PATH may be POST:N:/path: a POST of N pseudo-random bytes, whose answer must be the body's
  SHA-256 in hex and a newline (Tests/netns/backend.py's POST).
--hold S: after the last answer (the JSON line printed), the connection stays open, idle, S
  seconds before the client closes it.
--pause S: the connection stays idle S seconds between an answer and the next request.
--rate B: the answers are read at B bytes a second at most, through a receive buffer of
  256 KiB (so that the sender, held by the window, is still sending for most of that time).
Prints one JSON line: {"answers": N, "local_port": P, "closed_after": N or null}; exits 1
with the reason on stderr when an answer is wrong, missing, or out of order.
"""
import hashlib
import json
import os
import random
import socket
import sys
import time


def read_head(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    return buf[:end].decode("latin-1"), buf[end:]


def read_chunked(sock, buf, n, path):
    """A chunked body from `buf` and the socket: (the body, the bytes after it)."""
    def need(k):
        nonlocal buf
        while len(buf) < k:
            chunk = sock.recv(1 << 20)
            if not chunk:
                sys.exit(f"request {n} ({path}): the connection closed inside a chunked body")
            buf += chunk

    def line():
        nonlocal buf
        while b"\r\n" not in buf:
            need(len(buf) + 1)
        text, _, buf = buf.partition(b"\r\n")
        return text
    body = bytearray()
    while True:
        size = int(line().split(b";")[0], 16)
        if size == 0:
            while line():  # the trailer section, up to its empty line
                pass
            return bytes(body), buf
        need(size + 2)
        body += buf[:size]
        if buf[size:size + 2] != b"\r\n":
            sys.exit(f"request {n} ({path}): no CRLF after a chunk")
        buf = buf[size + 2:]


class Paced:
    """A socket whose reads keep to `rate` bytes a second on average (--rate)."""
    def __init__(self, sock, rate):
        self.sock, self.rate, self.start, self.got = sock, rate, time.monotonic(), 0

    def recv(self, n):
        data = self.sock.recv(min(n, 16384))
        self.got += len(data)
        ahead = self.got / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)
        return data

    def __getattr__(self, name):
        return getattr(self.sock, name)


def take_option(args, name, convert, default):
    """The value of `name VALUE` in args (taken out of them), or default."""
    if name not in args:
        return default
    i = args.index(name)
    value = convert(args[i + 1])
    del args[i:i + 2]
    return value


def main():
    args = sys.argv[1:]
    expect_close = None
    headers = []
    pause = take_option(args, "--pause", float, 0.0)
    hold = take_option(args, "--hold", float, 0.0)
    rate = take_option(args, "--rate", float, 0.0)
    while "--expect-close" in args:
        i = args.index("--expect-close")
        expect_close = int(args[i + 1])
        del args[i:i + 2]
    while "--header" in args:
        i = args.index("--header")
        headers.append(args[i + 1])
        del args[i:i + 2]
    host, port, root, paths = args[0], int(args[1]), args[2], args[3:]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(60)
    if rate > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)
    sock.connect((host, port))
    local_port = sock.getsockname()[1]
    if rate > 0:
        sock = Paced(sock, rate)
    if family == socket.AF_INET6:
        host = f"[{host}]"  # as a Host header gives an IPv6 literal
    buf = b""
    closed_after = None
    for n, path in enumerate(paths, 1):
        if n > 1 and pause > 0:
            time.sleep(pause)
        extra = "".join(h + "\r\n" for h in headers)
        want = None
        if path.startswith("POST:"):
            _, size, path = path.split(":", 2)
            payload = random.Random(n).randbytes(int(size))
            want = hashlib.sha256((hashlib.sha256(payload).hexdigest() + "\n").encode()).hexdigest()
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(payload)}\r\n{extra}\r\n".encode()
                         + payload)
        else:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        head, buf = read_head(sock, buf)
        if head is None:
            if expect_close is not None and n == expect_close + 1:
                closed_after = n - 1
                break
            sys.exit(f"request {n} ({path}): the connection closed before an answer")
        status = head.split(" ", 2)[1]
        length = None
        close = False
        chunked = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            if name.strip().lower() == "connection" and "close" in value.lower():
                close = True
            if name.strip().lower() == "transfer-encoding" and value.strip().lower() == "chunked":
                chunked = True
        if status != "200" or (length is None and not chunked):
            sys.exit(f"request {n} ({path}): status {status}, Content-Length {length}: {head!r}")
        if chunked:
            body, buf = read_chunked(sock, buf, n, path)
        else:
            while len(buf) < length:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    sys.exit(f"request {n} ({path}): the connection closed after {len(buf)} of {length} body bytes")
                buf += chunk
            body, buf = buf[:length], buf[length:]
        if want is None:
            # (/chunked/FILE and /bigchunks/FILE are FILE, sent in chunks.)
            file = path
            for prefix in ("/chunked/", "/bigchunks/"):
                if path.startswith(prefix):
                    file = path[len(prefix) - 1:]
            with open(os.path.join(root, file.lstrip("/")), "rb") as f:
                want = hashlib.sha256(f.read()).hexdigest()
        got = hashlib.sha256(body).hexdigest()
        if got != want:
            sys.exit(f"request {n} ({path}): the body differs from the file ({len(body)} bytes)")
        if close:
            # The server said it closes: the next read must be the end of the stream.
            rest = sock.recv(1)
            if rest:
                sys.exit(f"request {n} ({path}): Connection: close, but more bytes followed")
            closed_after = n
            if expect_close != n:
                sys.exit(f"request {n} ({path}): the answer said Connection: close (expected the connection to stay)")
            break
    if expect_close is not None and closed_after != expect_close:
        sys.exit(f"expected the connection to close after answer {expect_close}, it closed after {closed_after}")
    print(json.dumps({"answers": n if closed_after is None else closed_after, "local_port": local_port,
                      "closed_after": closed_after}), flush=True)
    time.sleep(hold)


if __name__ == "__main__":
    main()
