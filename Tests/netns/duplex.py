#!/usr/bin/env python3
"""A full-duplex HTTP exchange for the one-way join test: PUT PATH with a body of BYTES bytes
(pseudo-random from SEED, written in CHUNK-byte pieces PACE_MS milliseconds apart) while the
response is read at the same time. Prints one JSON line: the status, the response body's
length and SHA-256, the sent body's length and SHA-256, how long it took. Exit 1 on a
connection error or a response that is not 200 with as many bytes as its Content-Length.

Usage: duplex.py HOST PORT PATH BYTES [--seed N] [--chunk N] [--pace-ms N]
"""
import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("bytes", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=1 << 16)
    ap.add_argument("--pace-ms", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    t0 = time.monotonic()
    s = socket.create_connection((args.host, args.port), timeout=args.timeout)
    s.sendall((f"PUT {args.path} HTTP/1.1\r\nHost: {args.host}\r\nContent-Length: {args.bytes}\r\n"
               f"Connection: close\r\n\r\n").encode())
    sent = {"bytes": 0, "sha": hashlib.sha256(), "error": None}

    def send_body():
        rng = random.Random(args.seed)
        try:
            left = args.bytes
            while left > 0:
                chunk = rng.randbytes(min(left, args.chunk))
                s.sendall(chunk)
                sent["sha"].update(chunk)
                sent["bytes"] += len(chunk)
                left -= len(chunk)
                if args.pace_ms:
                    time.sleep(args.pace_ms / 1000)
        except OSError as e:
            sent["error"] = str(e)

    writer = threading.Thread(target=send_body)
    writer.start()
    raw = bytearray()
    error = None
    try:
        while True:
            data = s.recv(1 << 16)
            if not data:
                break
            raw += data
    except OSError as e:
        error = str(e)
    writer.join()
    s.close()
    head, sep, body = bytes(raw).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")[1].decode() if sep else "none"
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    out = {"status": status, "responseBytes": len(body), "responseSha": hashlib.sha256(body).hexdigest(),
           "contentLength": length, "sentBytes": sent["bytes"], "sentSha": sent["sha"].hexdigest(),
           "seconds": round(time.monotonic() - t0, 3), "error": error or sent["error"]}
    print(json.dumps(out, sort_keys=True), flush=True)
    ok = status == "200" and length == len(body) and not out["error"] and sent["bytes"] == args.bytes
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
