"""A WATS-like loopback HTTP/1.1 server for the real pyWATS client, counting what it answered.

Usage: wats_server.py PORT TOKEN [--fail-every N] [--fail-code 500|400] [--latency-ms MS]
                      [--get-fail-first N [--get-fail-code 500|503]] [--version-fail-every N]
                      [--tls CERT KEY [--h2]]
Prints "ready" once listening on 127.0.0.1:PORT: plain HTTP/1.1, HTTPS (HTTP/1.1) with
--tls, or HTTPS offering HTTP/2 by ALPN with --tls --h2 (served by hypercorn, as the
same routes through ASGI).

Answers what pywats 0.6.0rc1 calls in normal work (paths from pywats/core/routes.py, shapes
from the repositories that parse them):
  GET  /api/App/Version        a JSON string (analytics get_version: str(data)); with
                               --version-fail-every N every Nth one answers 500 instead
  POST /api/Report/WSJF        stores the report, answers {"ID": id} (report post_wsjf reads
                               "ID"); every Nth one answers --fail-code instead
  GET  /api/Report/Query/Header  stored reports as ReportHeader objects; honours reportType
                               (U/R) and $top, ignores $filter/$orderby
  GET  /api/Report/Wsjf/{id}   the stored report as posted (UUTReport.model_validate), or 404;
                               with --get-fail-first N the first N requests of each stored
                               id answer --get-fail-code (503 by default) instead
Anything else is 404. Every request needs "Authorization: Basic TOKEN" (401 otherwise) and
waits --latency-ms before its answer. Request bodies are read by their Content-Length.

  GET /__counts   (from the test; no token, not counted): {"counts": [[method,
      path-without-query, code, n], ...]} for every request answered, and "connections":
      how many connections (client address and port) brought them.
"""
import argparse
import asyncio
import http.server
import json
import socketserver
import ssl
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

VERSION = "2025.1.0"
WSJF = "/api/Report/WSJF"
WSJF_BY_ID = "/api/Report/Wsjf/"

settings = argparse.Namespace(token="", fail_every=0, fail_code=500, latency=0.0, get_fail_first=0,
                              get_fail_code=503, version_fail_every=0)
lock = threading.Lock()
counts = Counter()
peers = set()  # (address, port) of the connections that brought counted requests
reports = {}  # id -> report as posted, in arrival order
posts = 0  # POST /api/Report/WSJF received, for --fail-every
gets = Counter()  # id -> GET /api/Report/Wsjf/{id} received, for --get-fail-first
versions = 0  # GET /api/App/Version received, for --version-fail-every


def header(report):
    """A ReportHeader (pywats/domains/report/models.py) for a stored WSJF report."""
    return {
        "uuid": report["id"],
        "serialNumber": report.get("sn"),
        "partNumber": report.get("pn"),
        "revision": report.get("rev"),
        "reportType": report.get("type", "T"),
        "stationName": report.get("machineName"),
        "location": report.get("location"),
        "purpose": report.get("purpose"),
        "processCode": report.get("processCode"),
        "result": {"P": "Passed", "F": "Failed", "E": "Error", "T": "Terminated"}.get(report.get("result")),
        "startUtc": report.get("start"),
        "operator": (report.get("uut") or {}).get("user"),
    }


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are separate writes: without this, Nagle and delayed ACKs
    # add 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send_json(self, code, value):
        body = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, value = answer(self.command, self.path, self.headers.get("Authorization"), body, self.client_address)
        self.send_json(code, value)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def answer(method, target, authorization, body, peer):
    """(code, JSON value) for a request; counts it (but not /__counts)."""
    url = urlsplit(target)
    if url.path == "/__counts":
        with lock:
            snapshot = [[m, p, c, n] for (m, p, c), n in sorted(counts.items())]
            return 200, {"counts": snapshot, "connections": len(peers)}
    if settings.latency:
        time.sleep(settings.latency)
    if authorization != f"Basic {settings.token}":
        code, value = 401, {"Message": "Authorization has been denied for this request."}
    else:
        code, value = route(method, url, body)
    with lock:
        counts[(method, url.path, code)] += 1
        peers.add(tuple(peer))
    return code, value


def route(method, url, body):
    global posts, versions
    path = url.path
    query = parse_qs(url.query)
    if (method, path) == ("GET", "/api/App/Version"):
        with lock:
            versions += 1
            fail = settings.version_fail_every and versions % settings.version_fail_every == 0
        if fail:
            return 500, {"Message": f"Injected failure of version request {versions}"}
        return 200, VERSION
    if (method, path) == ("POST", WSJF):
        with lock:
            posts += 1
            fail = settings.fail_every and posts % settings.fail_every == 0
        if fail:
            return settings.fail_code, {"Message": f"Injected failure of report post {posts}"}
        try:
            report = json.loads(body)
            report_id = report["id"]
        except (ValueError, TypeError, KeyError):
            return 400, {"Message": "Not a WSJF report"}
        with lock:
            reports[report_id] = report
        return 200, {"ID": report_id}
    if (method, path) == ("GET", "/api/Report/Query/Header"):
        kind = "R" if query.get("reportType") == ["R"] else "T"
        top = int(query.get("$top", ["1000"])[0])
        with lock:
            found = [header(r) for r in reversed(reports.values()) if r.get("type", "T") == kind]
        return 200, found[:top]
    if method == "GET" and path.startswith(WSJF_BY_ID):
        report_id = path[len(WSJF_BY_ID):]
        with lock:
            report = reports.get(report_id)
            if report is not None:
                gets[report_id] += 1
                fail = gets[report_id] <= settings.get_fail_first
        if report is None:
            return 404, {"Message": "Report not found"}
        if fail:
            return settings.get_fail_code, {"Message": f"Injected failure of request {gets[report_id]} of {report_id}"}
        return 200, report
    return 404, {"Message": f"No HTTP resource was found that matches {path}"}


async def asgi(scope, receive, send):
    """The same routes as an ASGI app, for hypercorn (HTTP/2)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                print("ready", flush=True)
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    target = scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    code, value = await asyncio.to_thread(answer, scope["method"], target, headers.get("authorization"), body,
                                          scope["client"])
    data = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json; charset=utf-8"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("token")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--fail-code", type=int, choices=(500, 400), default=500)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--get-fail-first", type=int, default=0)
    parser.add_argument("--get-fail-code", type=int, choices=(500, 503), default=503)
    parser.add_argument("--version-fail-every", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--h2", action="store_true")
    args = parser.parse_args()
    settings.token, settings.fail_every = args.token, args.fail_every
    settings.fail_code, settings.latency = args.fail_code, args.latency_ms / 1000
    settings.get_fail_first, settings.get_fail_code = args.get_fail_first, args.get_fail_code
    settings.version_fail_every = args.version_fail_every
    if args.h2:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{args.port}"]
        config.certfile, config.keyfile = args.tls
        config.accesslog = config.errorlog = None
        # hypercorn closes a connection idle for 5 s; a client that writes
        # its next request just then fails it (httpx: WriteError), which a
        # slow machine (a TCG VM) makes common. Servers behind a proxy keep
        # connections longer.
        config.keep_alive_timeout = 600
        asyncio.run(serve(asgi, config))
        return
    server = Server(("127.0.0.1", args.port), Handler)
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
        # The handshake runs on the connection's own thread (its first read),
        # not in accept(): a client slow to finish one (a slow machine, a TCG
        # VM) would otherwise hold up every other connection.
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
