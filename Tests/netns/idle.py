#!/usr/bin/env python3
"""An idle TCP connection kept alive by TCP keepalive probes (SO_KEEPALIVE, first probe after
1 s idle, then every 1 s, given up after 3 unanswered: the connection then fails with
ETIMEDOUT after ~4 s of silence).

  idle.py serve PORT [--keepalive]
      echo server; with --keepalive every accepted socket probes its peer. Before echoing a
      message it prints "SERVER LAST_ACK_RECV_MS N" (tcp_info: ms since an ACK last came, as
      read at most half a second before the message arrived).
  idle.py client HOST PORT IDLE [--keepalive]
      connects, exchanges "hello", stays silent IDLE seconds (probing when --keepalive), then
      prints "CLIENT LAST_ACK_RECV_MS N" and exchanges "again". Prints "OK", or "FAILED ..."
      and exits 1 (the connection was lost).

  idle.py serve-stream PORT MIB
      sends every connection MIB MiB (the same bytes for the same MIB), then closes.
  idle.py client-stall HOST PORT MIB PAUSE
      reads such a stream, stops reading for PAUSE seconds after its first MiB, then reads
      on; prints "OK N bytes byte-exact" or "FAILED ..." (exit 1).
  idle.py serve-recv-stall PORT MIB PAUSE
      reads MIB MiB from each connection, stops reading for PAUSE seconds after the first
      MiB; answers "OK" if the bytes are the stream's and prints "OK ..." or "FAILED ...".
  idle.py client-push HOST PORT MIB
      sends the stream of MIB MiB, half-closes, prints "OK" when the server answered "OK".

An answered probe is an ACK: after IDLE seconds of silence, a prober whose probes were
answered heard an ACK within the last probe interval, one whose probes were not answered
either lost the connection or heard nothing since the exchange.
"""
import hashlib
import random
import select
import socket
import struct
import sys
import time


def keepalive(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def last_ack_recv_ms(s):
    # struct tcp_info: 8 bytes of u8 fields, 9 u32 (rto ... fackets), then last_data_sent,
    # last_ack_sent, last_data_recv, last_ack_recv.
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 8 + 4 * 12)[0]


def listen(port):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(16)
    print("LISTENING", flush=True)
    return ls


def read_stalling(s, pause, got):
    """Reads s to EOF into got (its "sha" and byte count "n"), stopping PAUSE seconds after
    the first MiB."""
    stalled = False
    while True:
        d = s.recv(65536)
        if not d:
            return
        got["sha"].update(d)
        got["n"] += len(d)
        if not stalled and got["n"] >= (1 << 20):
            stalled = True
            print("STALLING at", got["n"], flush=True)
            time.sleep(pause)
            print("READING again", flush=True)


def serve(port, probe):
    ls = listen(port)
    while True:
        c, _ = ls.accept()
        if probe:
            keepalive(c)
        try:
            # tcp_info read while the connection is silent (a data segment's own ACK resets
            # last_ack_recv): the value of the last half second before a message is printed.
            silent = last_ack_recv_ms(c)
            while True:
                if not select.select([c], [], [], 0.5)[0]:
                    silent = last_ack_recv_ms(c)
                    continue
                d = c.recv(4096)
                if not d:
                    break
                print("SERVER LAST_ACK_RECV_MS", silent, flush=True)
                c.sendall(d)
        except OSError as e:
            print("SERVER FAILED", e, flush=True)
        c.close()


def exchange(s, msg):
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        d = s.recv(4096)
        if not d:
            raise OSError("connection closed by the peer")
        got += d
    if got != msg:
        raise OSError(f"echo {got!r}, expected {msg!r}")


def client(host, port, idle, probe):
    try:
        s = socket.create_connection((host, port), timeout=30)
        if probe:
            keepalive(s)
        exchange(s, b"hello")
        print("CONNECTED LOCAL=%s:%d" % s.getsockname()[:2], flush=True)
        time.sleep(idle)
        print("CLIENT LAST_ACK_RECV_MS", last_ack_recv_ms(s), flush=True)
        exchange(s, b"again")
        s.close()
    except OSError as e:
        print("FAILED", e, flush=True)
        sys.exit(1)
    print("OK", flush=True)


def stream_bytes(mib):
    return random.Random(mib).randbytes(mib << 20)


def serve_stream(port, mib):
    data = stream_bytes(mib)
    ls = listen(port)
    while True:
        c, _ = ls.accept()
        try:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
            print("SERVER SENT", len(data), flush=True)
        except OSError as e:
            print("SERVER FAILED", e, flush=True)
        c.close()


def client_stall(host, port, mib, pause):
    want = hashlib.sha256(stream_bytes(mib)).hexdigest()
    got = {"sha": hashlib.sha256(), "n": 0}
    try:
        s = socket.create_connection((host, port), timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        print("CONNECTED LOCAL=%s:%d" % s.getsockname()[:2], flush=True)
        read_stalling(s, pause, got)
        s.close()
    except OSError as e:
        print("FAILED", e, "after", got["n"], "bytes", flush=True)
        sys.exit(1)
    if got["sha"].hexdigest() != want:
        print("FAILED", got["n"], "bytes, SHA-256 differs", flush=True)
        sys.exit(1)
    print("OK", got["n"], "bytes byte-exact", flush=True)


def serve_recv_stall(port, mib, pause):
    want = hashlib.sha256(stream_bytes(mib)).hexdigest()
    ls = listen(port)
    while True:
        c, _ = ls.accept()
        c.settimeout(60)
        got = {"sha": hashlib.sha256(), "n": 0}
        try:
            read_stalling(c, pause, got)
            ok = got["sha"].hexdigest() == want
            c.sendall(b"OK" if ok else b"BAD")
            print("OK %d bytes byte-exact" % got["n"] if ok else "FAILED %d bytes, SHA-256 differs" % got["n"], flush=True)
        except OSError as e:
            print("FAILED", e, "after", got["n"], "bytes", flush=True)
        c.close()


def client_push(host, port, mib):
    try:
        s = socket.create_connection((host, port), timeout=60)
        print("CONNECTED LOCAL=%s:%d" % s.getsockname()[:2], flush=True)
        s.sendall(stream_bytes(mib))
        s.shutdown(socket.SHUT_WR)
        got = s.recv(16)
        s.close()
    except OSError as e:
        print("FAILED", e, flush=True)
        sys.exit(1)
    if got != b"OK":
        print("FAILED the server answered %r" % got, flush=True)
        sys.exit(1)
    print("OK", flush=True)


def main():
    a = sys.argv[1:]
    probe = "--keepalive" in a
    a = [x for x in a if x != "--keepalive"]
    if a[:1] == ["serve"] and len(a) == 2:
        serve(int(a[1]), probe)
    elif a[:1] == ["client"] and len(a) == 4:
        client(a[1], int(a[2]), float(a[3]), probe)
    elif a[:1] == ["serve-stream"] and len(a) == 3:
        serve_stream(int(a[1]), int(a[2]))
    elif a[:1] == ["client-stall"] and len(a) == 5:
        client_stall(a[1], int(a[2]), int(a[3]), float(a[4]))
    elif a[:1] == ["serve-recv-stall"] and len(a) == 4:
        serve_recv_stall(int(a[1]), int(a[2]), float(a[3]))
    elif a[:1] == ["client-push"] and len(a) == 4:
        client_push(a[1], int(a[2]), int(a[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
