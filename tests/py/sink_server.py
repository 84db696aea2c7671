"""A loopback TCP server that accepts any number of connections and reads
and discards what they send, never answering: asyncio workers sharing the
port (SO_REUSEPORT), so that together they hold more connections than one
process may have files open.

Usage: sink_server.py PORT WORKERS. Prints "ready" once every worker listens.
"""
import asyncio
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


async def sink(reader, writer):
    while await reader.read(65536):
        pass
    writer.close()


async def serve(port, ready_fd):
    server = await asyncio.start_server(sink, "127.0.0.1", port, backlog=4096, reuse_port=True)
    os.write(ready_fd, b"x")
    async with server:
        await server.serve_forever()


def main():
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    ready_r, ready_w = os.pipe()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            # The test ends the server with SIGKILL: the workers must go with it.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            asyncio.run(serve(port, ready_w))
            os._exit(0)
        pids.append(pid)
    for _ in range(workers):
        os.read(ready_r, 1)
    print("ready", flush=True)
    for pid in pids:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
