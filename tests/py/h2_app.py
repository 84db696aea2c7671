"""ASGI app for the HTTP/2 tests, served by hypercorn over TLS (ALPN h2).

  ANY /mix/<code>/<size>/<tag>   answers <code> with a <size>-byte body
  GET /slow/<ms>/<tag>           answers 200 after <ms> milliseconds
  ANY /late/<ms>/<size>/<tag>    answers 200 and a <size>-byte body at once, and
                                 ends the stream <ms> milliseconds later (an
                                 empty DATA frame with END_STREAM: the read that
                                 brings the stream's end is the one that waits)
  GET /__counts                  JSON [method, path, code, count] of what it answered
                                 (asked by the test, not by the watched client)
"""
import asyncio
import json
from collections import Counter

counts = Counter()


async def read_body(receive):
    while True:
        m = await receive()
        if not m.get("more_body"):
            return


async def respond(send, code, body):
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await read_body(receive)
    path = scope["path"]
    if path == "/__counts":
        rows = [[m, p, c, n] for (m, p, c), n in sorted(counts.items())]
        return await respond(send, 200, json.dumps({"counts": rows}).encode())
    parts = path.split("/")
    if parts[1] == "slow":
        await asyncio.sleep(int(parts[2]) / 1000)
        counts[(scope["method"], path, 200)] += 1
        return await respond(send, 200, b"late")
    if parts[1] == "late":
        size = int(parts[3])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        await send({"type": "http.response.body", "body": b"x" * size, "more_body": True})
        await asyncio.sleep(int(parts[2]) / 1000)
        counts[(scope["method"], path, 200)] += 1
        return await send({"type": "http.response.body", "body": b""})
    code, size = int(parts[2]), int(parts[3])
    counts[(scope["method"], path, code)] += 1
    await respond(send, code, b"x" * size)
