"""The watched client of `cargo xtask bench`: the same operations with the agent
off, on, or with in-process instrumentation instead, each run's CPU time
measured by this process itself.

Usage: bench_client.py HTTP_PORT HTTPS_PORT H2_PORT WORKDIR. Prints "ready",
then answers one JSON line per command:
  open SCENARIO MODE W  a fresh connection (HTTP/2 needs one the agent sees from
                        its start: HPACK state cannot be joined mid-way), then W
                        untimed warm-up operations; MODE "plain", or "inproc" for
                        the feature plan's instrumentation (bench_inproc.py) on
                        every operation and its sampler thread running
  timed N               N operations: {"ops": N, "cpu_ns": ..., "wall_ns": ...};
                        cpu_ns is time.process_time_ns(), the CPU time of all
                        threads of this process (user + system, in the kernel's
                        nanoseconds: what getrusage(RUSAGE_SELF) rounds to µs)
  close                 ends the connection and the instrumentation; answers what
                        was done since open: {"GET": n, "POST": n} or {"items": n}
  exit
Scenarios (request bodies are a 20 kB JSON report, the size of a WSJF report):
  http    keep-alive HTTP/1.1 (http.client) to http_server.py, alternately
          GET /mix/200/1000/cl/get (1 kB answer) and POST /mix/200/64/cl/post
  https   the same over TLS
  h2      the same over HTTP/2 over TLS (httpx, http2=True, as pyWATS) to
          hypercorn serving h2_app.py: GET /mix/200/1000/get, POST /mix/200/64/post
  squeue  a service pending queue item in WORKDIR/squeue: X.tmp + fsync, rename
          to X.queued, X.queued -> X.processing (read) -> X.completed, removed
  pqueue  a persistent queue item in WORKDIR/pqueue: X.pending.wsjf and
          X.pending.meta.json written atomically (mkstemp + fsync + os.replace),
          both renamed to .processing then .completed (metadata rewritten each
          time), then removed (delete_completed)
"""
import http.client
import json
import os
import ssl
import sys
import tempfile
import time

import httpx

import bench_inproc

AUTH = {"Authorization": "Basic YmVuY2g6YmVuY2gtc2VjcmV0"}
JSON = {**AUTH, "Content-Type": "application/json"}
HTTP_PORT, HTTPS_PORT, H2_PORT, WORKDIR = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
INSECURE = ssl._create_unverified_context()  # the bench's self-signed certificate
REPORT_BYTES = 20_000


def report_body():
    """A WSJF-like JSON report of REPORT_BYTES bytes: a header and numeric steps."""
    steps = []
    report = {"type": "T", "pn": "PN-BENCH", "sn": "SN-BENCH", "rev": "A", "processCode": 10,
              "machineName": "bench-station", "result": "P", "root": {"steps": steps}}
    while len(json.dumps(report)) < REPORT_BYTES:
        n = len(steps)
        steps.append({"name": f"Voltage {n}", "stepType": "ET_NLT", "status": "P", "numericMeas": [
            {"value": 5.0 + n / 1000, "unit": "V", "compOp": "GELE", "lowLimit": 4.5, "highLimit": 5.5}]})
    text = json.dumps(report)
    return (text[:-1] + " " * (REPORT_BYTES - len(text)) + "}").encode()


REPORT = report_body()


class Http1:
    """Keep-alive HTTP/1.1 through http.client, plain or TLS."""

    def __init__(self, tls):
        self.conn = (http.client.HTTPSConnection("127.0.0.1", HTTPS_PORT, context=INSECURE) if tls
                     else http.client.HTTPConnection("127.0.0.1", HTTP_PORT))
        self.conn.connect()

    def request(self, method, path, body):
        self.conn.request(method, path, body=body, headers=JSON if body else AUTH)
        r = self.conn.getresponse()
        r.read()
        return r.status

    def close(self):
        self.conn.close()


class Http2:
    """HTTP/2 over TLS through httpx, as pyWATS makes its requests."""

    def __init__(self):
        self.client = httpx.Client(http2=True, verify=False, base_url=f"https://127.0.0.1:{H2_PORT}")

    def request(self, method, path, body):
        r = self.client.request(method, path, content=body, headers=JSON if body else AUTH)
        r.read()
        if r.http_version != "HTTP/2":
            raise RuntimeError(f"expected HTTP/2, got {r.http_version}")
        return r.status_code

    def close(self):
        self.client.close()


class Requests:
    """Alternately a GET and a POST of the report; counts them by method."""

    def __init__(self, conn, prefix):
        self.conn = conn
        self.plan = (("GET", prefix.format(size=1000, tag="get"), None),
                     ("POST", prefix.format(size=64, tag="post"), REPORT))
        self.done = {"GET": 0, "POST": 0}

    def op(self, metrics):
        method, path, body = self.plan[sum(self.done.values()) % 2]
        if metrics:
            code = metrics.request(method, path, lambda: self.conn.request(method, path, body))
        else:
            code = self.conn.request(method, path, body)
        if code != 200:
            raise RuntimeError(f"{method} {path} answered {code}")
        self.done[method] += 1

    def close(self):
        self.conn.close()
        return self.done


class ServiceQueue:
    """Items through a service pending queue, moved as the pyWATS client moves them."""

    def __init__(self, name):
        self.name, self.dir = name, os.path.join(WORKDIR, name)
        os.makedirs(self.dir, exist_ok=True)
        self.items = 0

    def item(self):
        base = os.path.join(self.dir, f"item-{os.getpid()}-{self.items}")
        with open(base + ".tmp", "wb") as f:
            f.write(REPORT)
            f.flush()
            os.fsync(f.fileno())
        os.rename(base + ".tmp", base + ".queued")
        os.rename(base + ".queued", base + ".processing")
        with open(base + ".processing", "rb") as f:
            f.read()
        os.rename(base + ".processing", base + ".completed")
        os.unlink(base + ".completed")

    def op(self, metrics):
        if metrics:
            metrics.queue_item(self.name, 0, self.item)
        else:
            self.item()
        self.items += 1

    def close(self):
        return {"items": self.items}


def atomic_write(path, data):
    """PersistentQueue's way of writing a file: mkstemp, fsync, os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + "_", suffix=".tmp", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PersistentQueue(ServiceQueue):
    """Items through a persistent queue, its files handled as PersistentQueue handles them."""

    def paths(self, item, status):
        base = os.path.join(self.dir, f"{item}.{status}")
        return base + ".wsjf", base + ".meta.json"

    def meta(self, item, status):
        return json.dumps({"id": item, "status": status, "attempts": 0}).encode()

    def move(self, item, a, b):
        (data_a, meta_a), (data_b, meta_b) = self.paths(item, a), self.paths(item, b)
        os.replace(data_a, data_b)
        os.replace(meta_a, meta_b)
        atomic_write(meta_b, self.meta(item, b))

    def item(self):
        item = f"pq-{os.getpid()}-{self.items}"
        data, meta = self.paths(item, "pending")
        atomic_write(data, REPORT)
        atomic_write(meta, self.meta(item, "pending"))
        self.move(item, "pending", "processing")
        self.move(item, "processing", "completed")
        for path in self.paths(item, "completed"):
            os.unlink(path)


SCENARIOS = {
    "http": lambda: Requests(Http1(False), "/mix/200/{size}/cl/{tag}"),
    "https": lambda: Requests(Http1(True), "/mix/200/{size}/cl/{tag}"),
    "h2": lambda: Requests(Http2(), "/mix/200/{size}/{tag}"),
    "squeue": lambda: ServiceQueue("squeue"),
    "pqueue": lambda: PersistentQueue("pqueue"),
}


def main():
    print("ready", flush=True)
    work = metrics = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "open":
            scenario, mode, warmup = cmd[1], cmd[2], int(cmd[3])
            metrics = bench_inproc.Metrics() if mode == "inproc" else None
            work = SCENARIOS[scenario]()
            for _ in range(warmup):
                work.op(metrics)
            answer = {"open": scenario}
        elif cmd[0] == "timed":
            n = int(cmd[1])
            op = work.op
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            for _ in range(n):
                op(metrics)
            cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
            answer = {"ops": n, "cpu_ns": cpu, "wall_ns": wall}
        elif cmd[0] == "close":
            answer = work.close()
            if metrics:
                metrics.stop()
            work = metrics = None
        else:
            raise SystemExit(f"unknown command {line!r}")
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
