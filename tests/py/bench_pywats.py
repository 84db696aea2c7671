"""The real pyWATS client (pywats-api 0.6.0rc1) submitting reports for
`cargo xtask bench`, its CPU per report measured by this process itself.

Usage: bench_pywats.py TOKEN. Prints "ready", then answers one JSON line per command:
  open URL MODE W   a fresh pyWATS (sync class; retries, GET cache and the 500
                    requests/min throttle off) for URL, so its connection starts
                    while the agent watches; W untimed submissions. MODE "plain",
                    or "inproc": pyWATS's own metrics module
                    (pywats.core.metrics.MetricsCollector) handed to its HTTP
                    client, which then times every request into its Counter and
                    Histogram, plus the sampler thread of bench_inproc.py
  timed N           builds N reports (untimed), then submits them with
                    api.report.submit_report: {"ops": N, "cpu_ns": ..., "wall_ns": ...};
                    cpu_ns is time.process_time_ns(), all threads (the sync class
                    makes its requests from an event-loop thread of its own)
  close             closes the client: {"POST": submissions since open,
                    "versions": {HTTP version: responses} of the timed submissions}
  exit
Reports are UUT reports with numeric steps, about 20 kB of WSJF JSON, like a
real test's. Against wats_server.py: --tls gives HTTPS with HTTP/1.1, --tls --h2
HTTP/2 (pyWATS' httpx client offers h2 by ALPN).
"""
import json
import sys
import time
from collections import Counter

from pywats import CompOp, pyWATS
from pywats.core.metrics import MetricsCollector
from pywats.core.throttle import configure_throttling

import bench_inproc

TOKEN = sys.argv[1]
REPORT_BYTES = 20_000


def new_report(api, serial, steps):
    report = api.report.create_uut_report(operator="bench", part_number="PN-BENCH", revision="A",
                                          serial_number=serial, operation_type=10)
    root = report.get_root_sequence_call()
    for n in range(steps):
        root.add_numeric_step(name=f"Voltage {n}", value=5.0 + n / 1000, unit="V", comp_op=CompOp.GELE,
                              low_limit=4.5, high_limit=5.5)
    return report


def steps_for_size(api):
    """How many numeric steps make a report of at least REPORT_BYTES of JSON."""
    one = len(new_report(api, "SN-SIZE", 1).model_dump_json(by_alias=True, exclude_none=True))
    two = len(new_report(api, "SN-SIZE", 2).model_dump_json(by_alias=True, exclude_none=True))
    return 1 + -(-(REPORT_BYTES - one) // (two - one))


class Session:
    def __init__(self, url, mode):
        self.api = pyWATS(base_url=url, token=TOKEN, verify_ssl=False, retry_enabled=False, enable_cache=False)
        self.metrics = None
        if mode == "inproc":
            # The constructor of the sync class does not take a collector; its
            # HTTP client does (metrics_collector), and records with it when set.
            collector = MetricsCollector()
            self.api._http_client._metrics_collector = collector
            self.metrics = bench_inproc.Sampler(collector.process_cpu_percent, collector.process_memory_bytes,
                                                collector.process_threads)
        self.steps = steps_for_size(self.api)
        self.posted = 0
        self.serial = 0
        self.versions = Counter()

    def record_versions(self):
        """Counts the HTTP version of every response from now on, through an
        httpx response hook on the client pyWATS made (it exists once a request was made)."""
        async def hook(response):
            self.versions[response.http_version] += 1

        self.api._http_client._client.event_hooks["response"].append(hook)

    def reports(self, n):
        made = []
        for _ in range(n):
            self.serial += 1
            made.append(new_report(self.api, f"SN-B{self.serial}", self.steps))
        return made

    def submit(self, reports):
        for report in reports:
            if not self.api.report.submit_report(report):
                raise RuntimeError("a report submission failed")
            self.posted += 1

    def close(self):
        self.api.close()
        if self.metrics:
            self.metrics.stop()
        return {"POST": self.posted, "versions": self.versions}


def main():
    configure_throttling(enabled=False)
    print("ready", flush=True)
    session = None
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "exit":
            break
        if cmd[0] == "open":
            session = Session(cmd[1], cmd[2])
            session.submit(session.reports(int(cmd[3])))
            session.record_versions()
            answer = {"open": cmd[1]}
        elif cmd[0] == "timed":
            reports = session.reports(int(cmd[1]))
            wall, cpu = time.perf_counter_ns(), time.process_time_ns()
            session.submit(reports)
            cpu, wall = time.process_time_ns() - cpu, time.perf_counter_ns() - wall
            answer = {"ops": len(reports), "cpu_ns": cpu, "wall_ns": wall}
        elif cmd[0] == "close":
            answer = session.close()
            session = None
        else:
            raise SystemExit(f"unknown command {line!r}")
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
