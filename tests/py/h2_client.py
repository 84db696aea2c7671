"""The target of the HTTP/2 tests: httpx with http2=True, sync and asyncio.

Usage: h2_client.py PORT. Prints "ready", then answers one JSON line per command:
  sync      a plan of requests over one HTTP/2 connection (httpx.Client):
            codes 200/201/404/500, bodies of 0 B to 2 MiB both ways; answers
            [method, path, code, request id, seconds] per request, seconds
            measured at the TLS socket calls (first byte written to last read)
  async N   N concurrent requests on one connection (httpx.AsyncClient: TLS
            over memory BIOs); answers [method, path, code, request id]
  cancel    a request that times out (the client gives up the stream)
  exit      ends the process
Every request carries Authorization: Basic <SECRET>.
"""
import asyncio
import json
import os
import ssl
import sys
import time

import httpx

SECRET = "cHl3YXRzOmgyLXNlY3JldA=="
AUTH = {"Authorization": "Basic " + SECRET}
BASE = f"https://127.0.0.1:{sys.argv[1]}"
first_send = last_recv = None


def _timed_send(method):
    def timed(self, data, *args):
        global first_send
        if first_send is None:
            first_send = time.perf_counter()
        return method(self, data, *args)
    return timed


def _timed_recv(method):
    def timed(self, *args):
        global last_recv
        n = method(self, *args)
        if n:
            last_recv = time.perf_counter()
        return n
    return timed


for name in ("sendall", "send"):
    setattr(ssl.SSLSocket, name, _timed_send(getattr(ssl.SSLSocket, name)))
for name in ("recv", "recv_into"):
    setattr(ssl.SSLSocket, name, _timed_recv(getattr(ssl.SSLSocket, name)))

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
    global first_send, last_recv
    made = []
    with httpx.Client(http2=True, verify=False, base_url=BASE) as c:
        for n, (method, code, size, body) in enumerate(plan()):
            path = f"/mix/{code}/{size}/s{n}"
            i = rid()
            first_send = last_recv = None
            r = c.request(method, path + "?q=h2-query", content=b"b" * body if body else None,
                          headers={**AUTH, "X-Request-ID": i})
            r.read()
            assert r.http_version == "HTTP/2", r.http_version
            # The first request's first write is the connection preface, not its
            # HEADERS: its client-side time is not comparable, so it is left out.
            made.append([method, path, r.status_code, i, (last_recv - first_send) if n else None])
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
            return [method, path, r.status_code, i]
        return await asyncio.gather(*(one(k) for k in range(n)))


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
        else:
            break
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
