"""The target of the HTTP/2 tests: httpx with http2=True, sync and asyncio.

Usage: h2_client.py PORT. Prints "ready", then answers one JSON line per command:
  sync      a plan of requests over one HTTP/2 connection (httpx.Client):
            codes 200/201/404/500, bodies of 0 B to 2 MiB both ways; answers
            [method, path, code, request id, seconds] per request, seconds
            measured by the client (see "the client's own clock" below)
  async N   N concurrent requests on one connection (httpx.AsyncClient: TLS
            over memory BIOs); answers the same
  cancel    a request that times out (the client gives up the stream)
  faults    against h2_fault_server.py: a reset stream, a GOAWAY (which httpx
            retries on a new connection) and a normal request; answers what
            the client saw for each
  exit      ends the process
Every request carries Authorization: Basic <SECRET>.
"""
import asyncio
import json
import os
import ssl
import sys
import time

import h2.connection
import h2.events
import httpx

SECRET = "cHl3YXRzOmgyLXNlY3JldA=="
AUTH = {"Authorization": "Basic " + SECRET}
BASE = f"https://127.0.0.1:{sys.argv[1]}"
# The client's own clock, per stream. A request starts at the first TLS write
# after h2 encoded its HEADERS (earlier writes may carry connection-level
# frames: SETTINGS acks, WINDOW_UPDATEs); it ends when the bytes holding its
# END_STREAM reach h2 (right after the read that returned them). Streams are
# told apart by their X-Request-ID, so concurrent asyncio streams are timed too.
unwritten = []  # request ids whose HEADERS are encoded and not yet written
rid_of = {}  # (connection, stream id) -> request id
started = {}  # request id -> perf_counter
ended = {}
_send_headers = h2.connection.H2Connection.send_headers


def _timed_send_headers(self, stream_id, headers, *args, **kwargs):
    for name, value in headers:
        if name in (b"x-request-id", "x-request-id"):
            value = value.decode() if isinstance(value, bytes) else value
            rid_of[(id(self), stream_id)] = value
            unwritten.append(value)
    return _send_headers(self, stream_id, headers, *args, **kwargs)


h2.connection.H2Connection.send_headers = _timed_send_headers


def _timed_write(method):
    def timed(self, data, *args):
        t = time.perf_counter()
        for i in unwritten:
            started.setdefault(i, t)
        unwritten.clear()
        return method(self, data, *args)
    return timed


_receive_data = h2.connection.H2Connection.receive_data


def _timed_receive_data(self, data):
    t = time.perf_counter()
    events = _receive_data(self, data)
    for e in events:
        if isinstance(e, h2.events.StreamEnded) and (id(self), e.stream_id) in rid_of:
            ended[rid_of[(id(self), e.stream_id)]] = t
    return events


h2.connection.H2Connection.receive_data = _timed_receive_data

# Sync httpx writes through SSLSocket, asyncio (anyio) through SSLObject.
for cls, names in ((ssl.SSLSocket, ("sendall", "send")), (ssl.SSLObject, ("write",))):
    for name in names:
        setattr(cls, name, _timed_write(getattr(cls, name)))


def seconds(i):
    return ended[i] - started[i]


seq = 0


def rid():
    global seq
    seq += 1
    return f"h2-{os.getpid()}-{seq}"


def plan():
    items = []
    for code in (200, 201, 404, 500):
        for size in (0, 1000, 100_000):
            items.append(("GET", code, size, 0))
        items.append(("POST", code, 10, 5000))
    items += [("GET", 200, 2 * 1024 * 1024, 0), ("PUT", 200, 0, 2 * 1024 * 1024), ("POST", 201, 100, 300_000)]
    return items


def sync():
    made = []
    with httpx.Client(http2=True, verify=False, base_url=BASE) as c:
        for n, (method, code, size, body) in enumerate(plan()):
            path = f"/mix/{code}/{size}/s{n}"
            i = rid()
            r = c.request(method, path + "?q=h2-query", content=b"b" * body if body else None,
                          headers={**AUTH, "X-Request-ID": i})
            r.read()
            assert r.http_version == "HTTP/2", r.http_version
            made.append([method, path, r.status_code, i, seconds(i)])
    return made


async def run_async(n):
    async with httpx.AsyncClient(http2=True, verify=False, base_url=BASE) as c:
        async def one(k):
            method, code, size, body = plan()[k % len(plan())]
            size = min(size, 100_000)
            path = f"/mix/{code}/{size}/a{k}"
            i = rid()
            r = await c.request(method, path, content=b"a" * min(body, 50_000) if body else None,
                                headers={**AUTH, "X-Request-ID": i})
            await r.aread()
            return [method, path, r.status_code, i, seconds(i)]
        return await asyncio.gather(*(one(k) for k in range(n)))


def faults():
    seen = {}
    with httpx.Client(http2=True, verify=False, base_url=BASE) as c:
        for path in ("/mix/200/5/f1", "/rst/f2", "/goaway/f3", "/mix/404/0/f4"):
            try:
                r = c.get(path, headers=AUTH)
                seen[path] = r.status_code
            except httpx.HTTPError as e:
                seen[path] = type(e).__name__
    return seen


async def cancel():
    async with httpx.AsyncClient(http2=True, verify=False, base_url=BASE, timeout=0.3) as c:
        try:
            await c.get("/slow/1500/c", headers=AUTH)
            return "answered"
        except httpx.TimeoutException as e:
            return type(e).__name__


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "sync":
            out = sync()
        elif cmd[0] == "async":
            out = asyncio.run(run_async(int(cmd[1])))
        elif cmd[0] == "cancel":
            out = asyncio.run(cancel())
        elif cmd[0] == "faults":
            out = faults()
        else:
            break
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
