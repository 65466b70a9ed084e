#!/usr/bin/env python3
"""A test backend for the balancer tests: Python's threading HTTP server over a directory, with
a listen backlog a crowd fits in (http.server's is 5: a crowd's SYNs would be dropped and
retried a second later), one log line per request on stdout ("REQ <name> <method> <path>
<client> <status> port=<client port>": the port tells the connections apart; "CHECK ..." for the proxy's health checks), GET /headers answering with the request's header block as the body (the
header-insertion test reads what the backend received), GET /who/... answering with
its name (GET /hold/MS/... after MS milliseconds), POST answering with the SHA-256 of
the body it received (uploads), and PUT /duplex/FILE answering with FILE at once while it
reads the request's body, both at the same time ("DUPLEX <name> <path> <bytes> <sha256>" of
the body on stdout: the one-way join test), GET /chunked/FILE answering with FILE in chunks
(Transfer-Encoding: chunked; sizes from 1 byte to 70,000, an extension and a trailer: the
keep-alive test's chunked responses), GET /bigchunks/FILE the same with chunks of 5 bytes to
1.5 MiB (large enough to be joined from inside one). ADDRESS "::" takes IPv4 and IPv6.

MODE (optional): "1.0" (the default: HTTP/1.0, one request per connection), "keepalive"
(HTTP/1.1, persistent connections, Content-Length on every answer) or "close" (HTTP/1.1,
but "Connection: close" on every answer and the connection closed after it: the balancer's
FIN-processing test).

Usage: backend.py NAME ADDRESS PORT DIRECTORY [MODE]
"""
import functools
import hashlib
import http.server
import os
import socket
import sys
import threading
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    server_name_tag = "?"

    def log_request(self, code="-", size="-"):
        # A health check is logged apart ("CHECK"): the tests count the requests ("REQ").
        kind = "CHECK" if self.headers.get("User-Agent", "").startswith("tcpsplice-health-check") else "REQ"
        sys.stdout.write(f"{kind} {self.server_name_tag} {self.command} {self.path} {self.client_address[0]} {code}"
                         f" port={self.client_address[1]}\n")
        sys.stdout.flush()

    def log_message(self, fmt, *args):  # errors and the rest: stderr, as http.server does
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    close_always = False

    def answer_text(self, text, status=200):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self):
        if self.close_always:
            self.send_header("Connection", "close")
            self.close_connection = True
        super().end_headers()

    def do_GET(self):
        if self.path.startswith("/who/") or self.path.startswith("/hold/"):
            # Its own name (the selection-method tests count who answered); /hold/MS answers
            # after MS milliseconds (a connection the balancer holds open meanwhile).
            if self.path.startswith("/hold/"):
                time.sleep(int(self.path.split("/")[2]) / 1000)
            self.answer_text(self.server_name_tag + "\n")
            return
        if self.path == "/headers":
            self.answer_text(str(self.headers))
            return
        if self.path.startswith("/chunked/") and self.request_version == "HTTP/1.1":
            self.answer_chunked(self.translate_path(self.path[len("/chunked"):]), [1, 4096, 70000, 300, 16384, 17])
            return
        if self.path.startswith("/bigchunks/") and self.request_version == "HTTP/1.1":
            self.answer_chunked(self.translate_path(self.path[len("/bigchunks"):]), [5, 1 << 20, 300, 1536 * 1024, 17])
            return
        super().do_GET()

    def answer_chunked(self, path, sizes):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Chunks")
        self.end_headers()
        at, k = 0, 0
        while at < len(data):
            part = data[at:at + sizes[k % len(sizes)]]
            ext = ";part=%d" % k if k == 2 else ""
            self.wfile.write(b"%x%s\r\n" % (len(part), ext.encode()) + part + b"\r\n")
            at += len(part)
            k += 1
        self.wfile.write(b"0\r\nX-Chunks: %d\r\n\r\n" % k)

    def do_POST(self):
        """An upload: the answer is the SHA-256 of the body received (hex, one line)."""
        left = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        self.answer_text(h.hexdigest() + "\n", 200 if left == 0 else 400)


    def do_PUT(self):
        """PUT /duplex/FILE: FILE sent while the body is read (a full-duplex exchange)."""
        if not self.path.startswith("/duplex/"):
            self.send_error(404)
            return
        path = self.translate_path(self.path[len("/duplex"):])
        try:
            f = open(path, "rb")
        except OSError:
            self.send_error(404)
            return
        left = int(self.headers.get("Content-Length", "0"))
        got = {"bytes": 0, "sha": hashlib.sha256()}

        def read_body():
            n = left
            while n > 0:
                chunk = self.rfile.read(min(n, 1 << 16))
                if not chunk:
                    break
                got["sha"].update(chunk)
                got["bytes"] += len(chunk)
                n -= len(chunk)

        reader = threading.Thread(target=read_body)
        reader.start()
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                self.wfile.write(chunk)
        reader.join()
        sys.stdout.write(f"DUPLEX {self.server_name_tag} {self.path} {got['bytes']} {got['sha'].hexdigest()}\n")
        sys.stdout.flush()


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True

    def handle_error(self, request, client_address):
        # One line, in one write: socketserver's own (a traceback between print() calls,
        # each two writes) interleaved with other threads' log lines, and a "REQ" line
        # written between its dashes and their newline escaped the tests' "^REQ" counts.
        exc = sys.exc_info()[1]
        sys.stderr.write(f"ERROR {Handler.server_name_tag} {client_address[0]} port={client_address[1]}: "
                         f"{type(exc).__name__}: {exc}\n")


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    name, address, port, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    mode = sys.argv[5] if len(sys.argv) == 6 else "1.0"
    if mode not in ("1.0", "keepalive", "close"):
        sys.exit(f"backend.py: MODE {mode!r}: expected 1.0, keepalive or close")
    Handler.server_name_tag = name
    if mode != "1.0":
        Handler.protocol_version = "HTTP/1.1"
    Handler.close_always = mode == "close"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    Server.address_family = family
    server = Server((address, port), functools.partial(Handler, directory=directory))
    server.serve_forever()


if __name__ == "__main__":
    main()
