"""A loopback HTTP/1.1 server that answers any method and any status code,
for the label-bounds tests, and counts what it answered.

Usage: labels_server.py PORT. Prints "ready".
  ANY /codes/<code>   answers <code> with an empty body
  ANY /methods        answers 200 with an empty body
  GET /__counts       from the test: JSON [method, path, code, count]
"""
import http.server
import json
import socketserver
import sys
import threading
from collections import Counter

counts = Counter()
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def __getattr__(self, name):
        # BaseHTTPRequestHandler calls do_<METHOD>: every method gets the same handler.
        if name.startswith("do_"):
            return self.handle_any
        raise AttributeError(name)

    def handle_any(self):
        if self.path == "/__counts":
            with lock:
                body = json.dumps([[m, p, c, n] for (m, p, c), n in sorted(counts.items())]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        code = int(self.path.split("/")[2]) if self.path.startswith("/codes/") else 200
        with lock:
            counts[(self.command, self.path, code)] += 1
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
