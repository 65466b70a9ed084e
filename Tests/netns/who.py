#!/usr/bin/env python3
"""Many short HTTP requests through the balancer, each on a new connection, to a backend's
/who/ (Tests/netns/backend.py answers with its name): the selection-method tests count who
answered each. Reads the requests as JSON from stdin: a list of {"id", "path", "headers"
(optional), "source" (optional: the client address to connect from)}; runs them 20 at a
time (or CONCURRENCY); prints {"id": "backend name", ...}. Exits 1 naming the first request that failed.

Usage: who.py HOST PORT [CONCURRENCY] < requests.json
"""
import concurrent.futures
import http.client
import json
import sys


def one(host, port, r):
    src = (r["source"], 0) if r.get("source") else None
    conn = http.client.HTTPConnection(host, port, timeout=30, source_address=src)
    try:
        conn.request("GET", r["path"], headers=r.get("headers", {}))
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        return r["id"], body
    finally:
        conn.close()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    requests = json.load(sys.stdin)
    out = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as ex:
        futures = {ex.submit(one, host, port, r): r for r in requests}
        for f in concurrent.futures.as_completed(futures):
            try:
                rid, who = f.result()
            except Exception as e:  # noqa: BLE001 - the reason goes to the test's log
                sys.exit(f"request {futures[f]['id']} ({futures[f]['path']}): {e}")
            out[rid] = who
    print(json.dumps(out))


if __name__ == "__main__":
    main()
