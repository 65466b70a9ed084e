#!/usr/bin/env python3
"""tcpsplice test tool: a crowd of concurrent short HTTP downloads (stdlib only).

  crowd.py --host H --port P --path /f --count N --sha256 HEX --bytes B
           [--concurrency C] [--deadline S] [--timeout S] [--json FILE]
           [--failures FILE]

Starts N connections at once (at most C open at a time; C defaults to N), each a
new TCP connection that sends `GET PATH HTTP/1.1` with `Connection: close` and
reads until the server closes. A download counts as ok when the status is 200
and the body is exactly B bytes with the given SHA-256; a body that arrives whole
(the server closed normally) but differs is counted as *wrong* (a corrupted
byte stream: the worst outcome), and every other failure as an error of its kind
(refused, reset, timeout, short body, bad status). Nothing is retried.

Prints one JSON line (also written to --json FILE):
  {"count": N, "ok": .., "wrong": .., "errors": {"kind": n, ...}, "seconds": ..,
   "connect_ms": {"p50": .., "p99": .., "max": ..},
   "first_byte_ms": {...}, "total_ms": {...},
   "slowest": [{"port": .., "total_ms": .., "connect_ms": .., "first_byte_ms": ..}, ...]}
--failures FILE gets a line "LOCALPORT KIND" per download that was not ok (the
port is "-" when it never connected), to find its flow and packets.
Exit 0 when every download was ok, 1 otherwise. Every socket operation has a
timeout (--timeout, idle seconds) and the whole run a --deadline.
"""

import argparse
import asyncio
import errno
import hashlib
import json
import resource
import socket
import sys
import time


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def percentiles(values):
    if not values:
        return {}
    v = sorted(values)

    def at(q):
        return round(v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(v[-1], 2)}


class Result:
    def __init__(self):
        self.ok = 0
        self.wrong = 0
        self.errors = {}
        self.connect_ms = []
        self.first_byte_ms = []
        self.total_ms = []

        self.failed = []   # (local port or None, kind, bytes received) of every download not ok
        self.done = []     # (total ms, local port, connect ms, first byte ms) of every download ok

    def error(self, kind, port=None, got=0):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.failed.append((port, kind, got))


def error_kind(exc):
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


async def one(args, request, res, sem):
    async with sem:
        t0 = time.monotonic()
        writer = None
        port = None
        got = 0
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(args.host, args.port), args.timeout)
            t1 = time.monotonic()
            port = writer.get_extra_info("sockname")[1]
            res.connect_ms.append((t1 - t0) * 1000)
            writer.write(request)
            await asyncio.wait_for(writer.drain(), args.timeout)
            chunks = []
            first = None
            while True:
                data = await asyncio.wait_for(reader.read(65536), args.timeout)
                if not data:
                    break
                if first is None:
                    first = time.monotonic()
                got += len(data)
                chunks.append(data)
            t2 = time.monotonic()
            raw = b"".join(chunks)
            head, sep, body = raw.partition(b"\r\n\r\n")
            if not sep:
                res.error("no-response" if not raw else "short-header", port)
                return
            status = head.split(b"\r\n", 1)[0].split(b" ")
            if len(status) < 2 or status[1] != b"200":
                res.error("status-" + (status[1].decode(errors="replace") if len(status) > 1 else "?"), port)
                return
            res.first_byte_ms.append((first - t1) * 1000)
            res.total_ms.append((t2 - t0) * 1000)
            if len(body) < args.bytes:
                res.error("short-body", port, got)
            elif len(body) != args.bytes or hashlib.sha256(body).hexdigest() != args.sha256:
                res.wrong += 1
                res.failed.append((port, "wrong", got))
            else:
                res.ok += 1
                res.done.append((round((t2 - t0) * 1000, 1), port, round((t1 - t0) * 1000, 1),
                                 round((first - t1) * 1000, 1)))
        except Exception as exc:  # every failure is counted by kind, none retried
            res.error(error_kind(exc), port, got)
        finally:
            if writer is not None:
                writer.close()


async def run(args):
    raise_fd_limit(args.concurrency + 256)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
               f"User-Agent: tcpsplice-crowd\r\nConnection: close\r\n\r\n").encode()
    res = Result()
    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(one(args, request, res, sem)) for _ in range(args.count)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
        res.errors["deadline"] = res.errors.get("deadline", 0) + len(pending)
    seconds = time.monotonic() - t0
    out = {
        "count": args.count, "ok": res.ok, "wrong": res.wrong, "errors": res.errors,
        "seconds": round(seconds, 3),
        "connect_ms": percentiles(res.connect_ms),
        "first_byte_ms": percentiles(res.first_byte_ms),
        "total_ms": percentiles(res.total_ms),
        "slowest": [{"port": port, "total_ms": total, "connect_ms": conn, "first_byte_ms": fb}
                    for total, port, conn, fb in sorted(res.done, reverse=True)[:args.slowest]],
    }
    if args.failures:
        with open(args.failures, "w") as f:
            for port, kind, got in res.failed:
                f.write(f"{port if port is not None else '-'} {kind} after {got} bytes\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/f")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=0)
    ap.add_argument("--sha256", required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--deadline", type=float, default=300.0)
    ap.add_argument("--json")
    ap.add_argument("--slowest", type=int, default=3,
                    help="name the N slowest downloads that were ok (port and times)")
    ap.add_argument("--failures", help="write 'LOCALPORT KIND' per failed download to this file")
    args = ap.parse_args()
    if args.count <= 0:
        ap.error("--count must be positive")
    if args.concurrency <= 0:
        args.concurrency = args.count
    out = asyncio.run(run(args))
    line = json.dumps(out, sort_keys=True)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    sys.exit(0 if out["ok"] == args.count else 1)


if __name__ == "__main__":
    main()
