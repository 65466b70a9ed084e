#!/usr/bin/env python3
"""tcpsplice test tool: TCP transfers with SHA-256 checks (stdlib only).

  serve-send --port P --file F [--rate BPS] [--count N]
      every accepted connection is sent the whole file, then closed.
  serve-send --port P --dir D [--rate BPS] [--count N] [--release-file F]
      every accepted connection first sends one line, a file name (as fetch
      --request does), and is sent D/<name>, then closed.
  serve-recv --port P --out-dir D [--count N]
      every accepted connection's bytes go to D/<n> (n = 1, 2, ...), with a line
      "ACCEPTED CONN=<n> PEER=<addr>:<port>"; on EOF D/<n>.sha256 is written
      ("<hex> <bytes>") and a line is printed.
  fetch --host H --port P --out F [--request NAME]
      connect, (send "NAME\n",) read until EOF into F (written as it arrives),
      print the SHA-256.
  push --host H --port P --file F [--rate BPS] [--release-file F]
      connect, send F, half-close, wait for the server to close, print SHA-256.
  (fetch and push: --cc NAME sets the socket's congestion control.)
  (every command: --mptcp opens IPPROTO_MPTCP sockets; fetch and push then print
  "MPTCP=yes|no" before their result: whether the connection stayed MPTCP or fell back.)

Servers listen on [::] dual-stack (IPv4 and IPv6) unless --bind is given.
Result lines are "SHA256=<hex> BYTES=<n> SECONDS=<t>" (clients) and
"CONN=<n> SHA256=<hex> BYTES=<n> SECONDS=<t>" (serve-recv), so shell tests
can grep them. Clients print "CONNECTED LOCAL=<addr>:<port>" once connected
(the flow's client tuple). Every socket operation has a timeout (--timeout, idle seconds)
and clients have an overall --deadline, so nothing here hangs forever.
--rate limits the sending side (bytes per second) so that a transfer lasts long
enough for a test to do something in the middle of it. With --release-file the
sender also sends the last --hold-back bytes at a crawl (8 KiB/s; printing
"HELD [CONN=<n> ]AT=<bytes>" when it gets there) until that file exists, then the
rest at the rate the file holds (bytes/s; empty: unpaced): the test decides when its
transfers may end.
"""

import argparse
import hashlib
import os
import socket
import sys
import threading
import time

CHUNK = 64 * 1024


_log_lock = threading.Lock()


def log(msg):
    # one write per line, under a lock: server threads must not interleave lines
    with _log_lock:
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()


class Pacer:
    """Token bucket: keeps the long-run rate at `rate` bytes/s (0 = no limit).

    With a release file: until that file exists, the sender is paced and sends the
    last `hold_back` bytes of its `size` at a crawl (`crawl` bytes/s: the connection
    still carries a packet every fraction of a second); once the file exists, the rest
    goes at the rate the file holds (a number of bytes/s; empty: unpaced). A test
    makes a transfer last as long as its events in the middle need, however slow the
    machine, and no longer."""

    def __init__(self, rate, size=0, release_file=None, hold_back=0, crawl=8192):
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0
        self.release_file = release_file
        self.limit = max(0, size - hold_back) if release_file else None
        self.checked = 0.0
        self.crawl = crawl
        self.crawl_from = None  # monotonic time the crawl began (None: not crawling yet)

    def poll_release(self):
        """True once the release file exists (checked at most every 0.05 s); then the
        hold is over and the rate is the file's."""
        if self.release_file is None:
            return True
        now = time.monotonic()
        if now - self.checked < 0.05:
            return False
        self.checked = now
        try:
            with open(self.release_file) as f:
                text = f.read().strip()
        except FileNotFoundError:
            return False
        self.release_file = None
        self.limit = None
        self.rate = int(text) if text.isdigit() else 0
        if self.rate:
            self.start = now - self.sent / self.rate  # from here on, at the new rate
        return True

    def chunk_size(self, who=""):
        """Bytes to send next (> 0); past the hold point, a crawl until released."""
        self.poll_release()
        if self.limit is not None and self.sent >= self.limit:
            if self.crawl_from is None:
                self.crawl_from = time.monotonic()
                log("HELD %sAT=%d (crawling at %d bytes/s until %s exists)"
                    % (who, self.sent, self.crawl, self.release_file))
            # crawl/10 bytes every 0.1 s (after the time that many took), or on at once
            # when released
            while True:
                due = self.crawl_from + (self.sent - self.limit) / self.crawl
                if time.monotonic() >= due:
                    return max(1, self.crawl // 10)
                time.sleep(min(0.05, max(0.0, due - time.monotonic())))
                if self.poll_release():
                    break
        # at most ~1/20 s worth of data per send, so the pacing is smooth
        n = CHUNK if not self.rate else max(1024, min(CHUNK, self.rate // 20))
        return n if self.limit is None else min(n, self.limit - self.sent)

    def account(self, n):
        self.sent += n
        if not self.rate or (self.limit is not None and self.sent > self.limit):
            return  # unpaced, or crawling (chunk_size paces the crawl)
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def send_file(sock, path, rate, release_file=None, hold_back=0, who=""):
    pacer = Pacer(rate, os.path.getsize(path), release_file, hold_back)
    h = hashlib.sha256()
    total = 0
    with open(path, "rb") as f:
        while True:
            buf = f.read(pacer.chunk_size(who))
            if not buf:
                break
            sock.sendall(buf)
            h.update(buf)
            total += len(buf)
            pacer.account(len(buf))
    return h.hexdigest(), total


def recv_to_file(sock, path, deadline=None):
    h = hashlib.sha256()
    total = 0
    with open(path, "wb") as f:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("deadline passed after %d bytes" % total)
            buf = sock.recv(1 << 20)
            if not buf:
                break
            f.write(buf)
            f.flush()
            h.update(buf)
            total += len(buf)
    return h.hexdigest(), total


IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1


def mptcp_in_use(s):
    """Whether an MPTCP socket's connection is still MPTCP: MPTCP_INFO answers with some
    bytes; after a fallback to TCP it answers with none, or fails."""
    try:
        return len(s.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)) > 0
    except OSError:
        return False


def listen(bind, port, mptcp=False):
    proto = IPPROTO_MPTCP if mptcp else 0
    if bind:
        fam = socket.AF_INET6 if ":" in bind else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, port))
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", port))
    s.listen(64)
    log("LISTENING port=%d" % port)
    return s


def peer_str(addr):
    host = addr[0]
    if host.startswith("::ffff:"):
        host = host[7:]
    if ":" in host:
        return "[%s]:%d" % (host, addr[1])
    return "%s:%d" % (host, addr[1])


def serve(args, handler):
    srv = listen(args.bind, args.port, args.mptcp)
    n = 0
    threads = []
    while args.count == 0 or n < args.count:
        conn, addr = srv.accept()
        n += 1
        conn.settimeout(args.timeout)
        t = threading.Thread(target=handler, args=(conn, addr, n), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    srv.close()


def read_request(conn):
    """One line, the name of a file in --dir (no path)."""
    buf = b""
    while b"\n" not in buf:
        more = conn.recv(256)
        if not more:
            raise OSError("connection closed before the request line")
        buf += more
        if len(buf) > 256:
            raise OSError("request line too long")
    name = buf.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    if not name or "/" in name or name.startswith("."):
        raise OSError("bad file name in request: %r" % name)
    return name


def cmd_serve_send(args):
    if bool(args.file) == bool(args.dir):
        sys.exit("xfer: serve-send needs exactly one of --file and --dir")
    if args.file and not os.path.isfile(args.file):
        sys.exit("xfer: no such file: %s" % args.file)
    if args.dir and not os.path.isdir(args.dir):
        sys.exit("xfer: no such directory: %s" % args.dir)

    def handler(conn, addr, n):
        t0 = time.monotonic()
        try:
            path = args.file or os.path.join(args.dir, read_request(conn))
            digest, total = send_file(conn, path, args.rate, args.release_file, args.hold_back,
                                      "CONN=%d " % n)
            conn.shutdown(socket.SHUT_WR)
            # wait for the client to close, so the last bytes are not reset away
            while conn.recv(CHUNK):
                pass
            log("CONN=%d PEER=%s SENT SHA256=%s BYTES=%d SECONDS=%.2f"
                % (n, peer_str(addr), digest, total, time.monotonic() - t0))
        except OSError as e:
            log("CONN=%d PEER=%s ERROR %s" % (n, peer_str(addr), e))
        finally:
            conn.close()

    serve(args, handler)


def cmd_serve_recv(args):
    os.makedirs(args.out_dir, exist_ok=True)

    def handler(conn, addr, n):
        t0 = time.monotonic()
        out = os.path.join(args.out_dir, str(n))
        log("ACCEPTED CONN=%d PEER=%s" % (n, peer_str(addr)))
        try:
            digest, total = recv_to_file(conn, out)
            with open(out + ".sha256", "w") as f:
                f.write("%s %d\n" % (digest, total))
            log("CONN=%d PEER=%s SHA256=%s BYTES=%d SECONDS=%.2f"
                % (n, peer_str(addr), digest, total, time.monotonic() - t0))
        except OSError as e:
            log("CONN=%d PEER=%s ERROR %s" % (n, peer_str(addr), e))
        finally:
            conn.close()

    serve(args, handler)


def connect(args):
    start = time.monotonic()
    while True:
        try:
            s = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM,
                              IPPROTO_MPTCP if args.mptcp else 0)
            if args.cc:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode("ascii"))
            s.settimeout(args.timeout)
            try:
                if args.source_port:
                    # A port a connection of a test used before (its tuple reused).
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("::" if ":" in args.host else "0.0.0.0", args.source_port))
                s.connect((args.host, args.port))
            except OSError:
                s.close()
                raise
            log("CONNECTED LOCAL=%s" % peer_str(s.getsockname()))
            return s, start + args.deadline
        except OSError as e:
            # retry briefly: the server may still be starting
            if time.monotonic() - start >= args.connect_retry:
                sys.exit("xfer: cannot connect to %s port %d: %s" % (args.host, args.port, e))
            time.sleep(0.2)


def cmd_fetch(args):
    s, deadline = connect(args)
    t0 = time.monotonic()
    try:
        if args.request:
            s.sendall(args.request.encode("ascii") + b"\n")
        digest, total = recv_to_file(s, args.out, deadline)
    except (OSError, TimeoutError) as e:
        sys.exit("xfer: fetch from %s port %d failed: %s" % (args.host, args.port, e))
    finally:
        if args.mptcp:
            log("MPTCP=%s" % ("yes" if mptcp_in_use(s) else "no"))
        s.close()
    log("SHA256=%s BYTES=%d SECONDS=%.2f" % (digest, total, time.monotonic() - t0))


def cmd_push(args):
    s, deadline = connect(args)
    t0 = time.monotonic()
    try:
        digest, total = send_file(s, args.file, args.rate, args.release_file, args.hold_back)
        s.shutdown(socket.SHUT_WR)
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("deadline passed waiting for the server to close")
            if not s.recv(CHUNK):
                break
    except (OSError, TimeoutError) as e:
        sys.exit("xfer: push to %s port %d failed: %s" % (args.host, args.port, e))
    finally:
        if args.mptcp:
            log("MPTCP=%s" % ("yes" if mptcp_in_use(s) else "no"))
        s.close()
    log("SHA256=%s BYTES=%d SECONDS=%.2f" % (digest, total, time.monotonic() - t0))


def main():
    p = argparse.ArgumentParser(description="TCP transfers with SHA-256 (tcpsplice tests)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, server):
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=30.0,
                        help="idle timeout of socket operations, seconds [30]")
        sp.add_argument("--mptcp", action="store_true", help="IPPROTO_MPTCP sockets")
        if server:
            sp.add_argument("--bind", default="", help="address to bind [:: dual-stack]")
            sp.add_argument("--count", type=int, default=0,
                            help="exit after this many connections [0 = never]")
        else:
            sp.add_argument("--host", required=True)
            sp.add_argument("--deadline", type=float, default=300.0,
                            help="overall limit of the transfer, seconds [300]")
            sp.add_argument("--connect-retry", type=float, default=5.0,
                            help="keep retrying a refused connect this long [5]")
            sp.add_argument("--cc", default="",
                            help="congestion control of the socket (TCP_CONGESTION) [system's]")
            sp.add_argument("--source-port", type=int, default=0,
                            help="connect from this local port [0 = the kernel's choice]")

    def hold(sp):
        sp.add_argument("--release-file", default=None,
                        help="until this file exists: paced at --rate, the last --hold-back bytes "
                             "at a crawl (8 KiB/s); then the rest at the rate the file holds "
                             "(bytes/s; empty: unpaced)")
        sp.add_argument("--hold-back", type=int, default=1 << 20,
                        help="bytes sent at a crawl until the release file exists [1 MiB]")

    sp = sub.add_parser("serve-send")
    common(sp, True)
    sp.add_argument("--file", help="the file every connection is sent")
    sp.add_argument("--dir", help="serve the file each connection names in its first line")
    sp.add_argument("--rate", type=int, default=0, help="bytes per second [0 = unlimited]")
    hold(sp)
    sp.set_defaults(func=cmd_serve_send)

    sp = sub.add_parser("serve-recv")
    common(sp, True)
    sp.add_argument("--out-dir", required=True)
    sp.set_defaults(func=cmd_serve_recv)

    sp = sub.add_parser("fetch")
    common(sp, False)
    sp.add_argument("--out", required=True)
    sp.add_argument("--request", help="send this file name (one line) first (serve-send --dir)")
    sp.set_defaults(func=cmd_fetch)

    sp = sub.add_parser("push")
    common(sp, False)
    sp.add_argument("--file", required=True)
    sp.add_argument("--rate", type=int, default=0, help="bytes per second [0 = unlimited]")
    hold(sp)
    sp.set_defaults(func=cmd_push)

    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
