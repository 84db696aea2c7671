"""HTTP/2 over TLS server of `cargo xtask bench`: h2_app.py served by hypercorn
in this one process (the hypercorn command forks a worker, which outlives a
killed parent).

Usage: bench_h2_server.py PORT CERT KEY. Prints "ready" when the app starts
(the listening socket follows within milliseconds), then serves on 127.0.0.1:PORT
until killed. A connection may carry any number of requests (hypercorn ends
one with GOAWAY after 1000 by default; a bench run's requests share one).
"""
import asyncio
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

import h2_app


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                print("ready", flush=True)
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await h2_app.app(scope, receive, send)


def main():
    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    config.certfile, config.keyfile = sys.argv[2], sys.argv[3]
    config.keep_alive_max_requests = 1_000_000_000
    config.accesslog = config.errorlog = None
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
