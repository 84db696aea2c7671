"""The workload of `cargo xtask bench`: the same operations with and without
the agent watching this process, each timed by the process itself.

Usage: bench_client.py HTTP_PORT HTTPS_PORT QUEUE_DIR. Prints "ready", then
answers one JSON line per command:
  http N    N keep-alive GETs of 1 kB (http.client, Authorization header)
  https N   the same over TLS
  queue N   N items through a service queue, as the pyWATS client moves them:
            tmp + fsync + rename to X.queued, X.queued -> X.processing (read)
            -> X.completed, then the completed file removed
  exit
Each answer: {"ops": N, "seconds": wall time, "p50_us": ..., "p99_us": ...}.
"""
import http.client
import json
import os
import ssl
import statistics
import sys
import time

AUTH = {"Authorization": "Basic YmVuY2g6YmVuY2gtc2VjcmV0"}
HTTP_PORT, HTTPS_PORT, QUEUE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
INSECURE = ssl._create_unverified_context()  # the bench's self-signed certificate
conns = {}
seq = 0


def conn(tls):
    if tls not in conns:
        conns[tls] = (http.client.HTTPSConnection("127.0.0.1", HTTPS_PORT, context=INSECURE) if tls
                      else http.client.HTTPConnection("127.0.0.1", HTTP_PORT))
    return conns[tls]


def get(tls):
    c = conn(tls)
    c.request("GET", "/mix/200/1000/cl/bench", headers=AUTH)
    c.getresponse().read()


def queue_item():
    global seq
    seq += 1
    name = os.path.join(QUEUE, f"item-{os.getpid()}-{seq}")
    with open(name + ".tmp", "w") as f:
        f.write('{"report": "bench"}')
        f.flush()
        os.fsync(f.fileno())
    os.rename(name + ".tmp", name + ".queued")
    os.rename(name + ".queued", name + ".processing")
    with open(name + ".processing") as f:
        f.read()
    os.rename(name + ".processing", name + ".completed")
    os.unlink(name + ".completed")


def run(op, n):
    times = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        op()
        times.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    q = statistics.quantiles(times, n=100)
    return {"ops": n, "seconds": seconds, "p50_us": statistics.median(times) * 1e6, "p99_us": q[98] * 1e6}


def main():
    os.makedirs(QUEUE, exist_ok=True)
    ops = {"http": lambda: get(False), "https": lambda: get(True), "queue": queue_item}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        print(json.dumps(run(ops[cmd[0]], int(cmd[1]))), flush=True)


if __name__ == "__main__":
    main()
