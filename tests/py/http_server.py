"""A loopback HTTP/1.1 server that answers a chosen mix and counts what it got.

Usage: http_server.py PORT [--tls CERT KEY]. Prints "ready" once listening on
127.0.0.1:PORT (HTTPS with --tls).

  ANY /mix/<code>/<size>/<mode>[/...][?...]
      answers <code> with a <size>-byte body; <mode> is
      "cl" (Content-Length, keep-alive), "chunked" (Transfer-Encoding: chunked,
      8 KiB chunks), "close" (no length, body ends at connection close), or
      "late" (as "cl", the body 20 ms after the head: the client's read of
      the response's end is the one that waits).
      The request body is read by its Content-Length.
  GET /__counts   (from the test, not the client): JSON list of
      [method, path-without-query, code, count] the server answered, and the
      Authorization headers seen.
"""
import http.server
import json
import socketserver
import ssl
import sys
import threading
import time
from collections import Counter

counts = Counter()
auth = Counter()
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without this, Nagle and delayed ACKs
    # add 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def handle_any(self):
        path = self.path.split("?", 1)[0]
        if path == "/__counts":
            with lock:
                body = json.dumps({
                    "counts": [[m, p, c, n] for (m, p, c), n in sorted(counts.items())],
                    "auth": dict(auth),
                }).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = path.split("/")
        code, size, mode = int(parts[2]), int(parts[3]), parts[4]
        with lock:
            counts[(self.command, path, code)] += 1
            auth[self.headers.get("Authorization", "")] += 1
        body = b"x" * size
        self.send_response(code)
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, size, 8192):
                piece = body[i:i + 8192]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if mode == "late":
                time.sleep(0.02)
            if self.command != "HEAD":
                self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    if sys.argv[2:3] == ["--tls"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
