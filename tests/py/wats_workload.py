"""Drives the real pyWATS client (pywats-api 0.6.0rc1) against wats_server.py and reports
its own ground truth.

Usage: wats_workload.py --url http://127.0.0.1:PORT --token TOKEN --workdir DIR
                        [--rounds N] [--pause SECS] [--wait]
Prints "pid <PID>"; with --wait it then waits for "go" on stdin. DIR must be empty or
absent. Each round:
  a) 3 reports submitted through the sync pyWATS class;
  b) pyWATS.test_connection() (GET /api/App/Version), then a header query and a fetch
     of one report submitted in a), so the server's read answers are parsed too;
  c) pywats_client.queue.PersistentQueue in DIR/pq: 3 items added, 2 of them marked
     processing, submitted through pyWATS and marked completed or failed;
  d) the real AsyncPendingQueue on DIR/reports: 3 reports enqueued as X.tmp + fsync +
     rename to X.queued, which it moves to .processing, submits, and moves to .completed
     or .error (+ .error.info);
  e) the real AsyncConverterPool watching DIR/conv/in: 3 good and 1 malformed CSV files
     moved in; a converter reads each in a child process, and the pool submits the
     report and moves the file to DIR/conv/done, or to DIR/conv/error on failure.
d) and e) run on an asyncio loop with AsyncWATS, as the client service runs them
(async_client_service.py:440-460, :849); the sync pyWATS can't serve them from a worker
thread: its httpx client stays bound to the event loop of the thread that first used it.
Then it prints "truth <JSON>" and, with --wait, waits for "exit" on stdin. The truth:
  http              per (method, path): requests, ok, failed (2xx or not, as the client saw)
  reports           submissions ok and failed, in all and per flow
  persistent_queue  completed, failed, pending left; items with the time from the update()
                    to processing to the update() to completed/failed
  service_queue     completed, failed, queued left; items with the time from the rename
                    to .processing to the rename to .completed/.error
  converter         done, error; items with the time from the child's open of the input
                    to its rename into done/ or error/
Both clients run with retries and the GET cache off (public constructor arguments), so
every call is exactly one request on the wire, and the truth counts them per call.
Times are time.monotonic() (CLOCK_MONOTONIC, the same clock in every process), taken
right after the operation returns.
"""
import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import time
import types
from collections import Counter

from pywats import AsyncWATS, CompOp, pyWATS
from pywats_client.converters import ConverterResult, FileConverter, PostProcessAction
from pywats_client.queue import PersistentQueue
from pywats_client.service.async_converter_pool import AsyncConverterPool
from pywats_client.service.async_pending_queue import AsyncPendingQueue

import pq_transition

WSJF = "/api/Report/WSJF"
now = time.monotonic


class Truth:
    """What the client made and saw: HTTP requests and report submissions."""

    def __init__(self):
        self.http = Counter()  # (method, path, ok)
        self.reports = Counter()  # (flow, ok)

    def request(self, method, path, ok):
        self.http[(method, path, ok)] += 1

    def submitted(self, flow, ok):
        self.request("POST", WSJF, ok)
        self.reports[(flow, ok)] += 1

    def as_json(self):
        routes = sorted({(m, p) for m, p, _ in self.http})
        flows = sorted({f for f, _ in self.reports})
        return {
            "http": [{"method": m, "path": p, "requests": self.http[(m, p, True)] + self.http[(m, p, False)],
                      "ok": self.http[(m, p, True)], "failed": self.http[(m, p, False)]} for m, p in routes],
            "reports": {"ok": sum(n for (_, ok), n in self.reports.items() if ok),
                        "failed": sum(n for (_, ok), n in self.reports.items() if not ok),
                        "by_flow": {f: {"ok": self.reports[(f, True)], "failed": self.reports[(f, False)]}
                                    for f in flows}},
        }


def new_report(api, serial, voltage=5.0):
    """A minimal UUT report, built with the public factory (report service create_uut_report)."""
    report = api.report.create_uut_report(operator="e2e", part_number="PN-E2E", revision="A",
                                          serial_number=serial, operation_type=10)
    report.get_root_sequence_call().add_numeric_step(name="Voltage", value=voltage, unit="V",
                                                     comp_op=CompOp.GELE, low_limit=4.5, high_limit=5.5)
    return report


def submit_sync(api, truth, flow, report):
    """Submits through the sync pyWATS; post_wsjf raises ValueError on a non-2xx answer."""
    try:
        report_id = api.report.submit_report(report)
    except ValueError as e:
        truth.submitted(flow, False)
        return None, str(e)
    truth.submitted(flow, True)
    return report_id, None


def direct_and_reads(api, truth, rnd):
    ids = [submit_sync(api, truth, "direct", new_report(api, f"SN-R{rnd}-A{i}"))[0] for i in range(1, 4)]
    truth.request("GET", "/api/App/Version", api.test_connection())
    api.report.query_uut_headers(top=10)
    truth.request("GET", "/api/Report/Query/Header", True)
    report_id = next((i for i in ids if i), None)
    if report_id:
        api.report.get_report(report_id)
        truth.request("GET", f"/api/Report/Wsjf/{report_id}", True)


def persistent_queue(api, truth, q, rnd, items):
    """PersistentQueue.update() renames an item's files only when the status it is given
    differs from the stored item's (persistent_queue.py:205); the documented flow of
    mutating the item from get() in place (its docstring, process_pending at :474-488)
    mutates the stored item itself and never renames, so each transition works on a copy."""

    def transition(item_id, action, *args):
        return pq_transition.transition(q, item_id, action, *args)

    for i in range(1, 4):
        q.add(new_report(api, f"SN-R{rnd}-P{i}"), item_id=f"r{rnd}-p{i}")
    for i in range(1, 3):
        item_id = f"r{rnd}-p{i}"
        start = transition(item_id, "mark_processing")
        _, error = submit_sync(api, truth, "persistent", q.get(item_id).data)
        end = transition(item_id, "mark_failed", error) if error else transition(item_id, "mark_completed")
        items.append({"id": item_id, "status": "failed" if error else "completed", "duration": end - start})


class Renames:
    """Records (source, destination, time.monotonic()) right after each pathlib.Path.rename,
    which is how AsyncPendingQueue and AsyncConverterPool move their files; the hook only
    observes, so the package's own code does every rename. `before` keeps the time right
    before each rename, by (source, destination): with it a duration can be bracketed,
    whatever the scheduler did between the syscall and the clock reading."""

    def __enter__(self):
        self.events = []
        self.before = {}
        self.original = original = pathlib.Path.rename

        def rename(path, target):
            before = now()
            result = original(path, target)
            self.events.append((pathlib.Path(path), pathlib.Path(target), now()))
            self.before[(pathlib.Path(path), pathlib.Path(target))] = before
            return result

        pathlib.Path.rename = rename
        return self

    def __exit__(self, *exc):
        pathlib.Path.rename = self.original

    def moved(self, stems):
        """The renames of files whose name up to its first dot is in stems."""
        return [(s, d, t) for s, d, t in self.events if s.name.partition(".")[0] in stems]


async def until(condition, timeout=60.0):
    """Polls, so the loop also runs what watchdog threads hand it without waking it."""
    deadline = now() + timeout
    while not condition():
        if now() > deadline:
            raise TimeoutError("the package did not finish its files in time")
        await asyncio.sleep(0.02)


class Submitter:
    """The report service AsyncPendingQueue and AsyncConverterPool are handed as api.report.
    0.6.0rc1's AsyncPendingQueue calls api.report.submit_raw(report_data) with the queued
    file's parsed JSON dict (async_pending_queue.py:400), which AsyncReportService does not
    have; the pool calls api.report.submit(report) with a WSJF dict
    (async_converter_pool.py:679). Both go to AsyncWATS' real submit_report, which posts a
    dict as it is."""

    def __init__(self, wats, truth, flow):
        self.wats, self.truth, self.flow = wats, truth, flow

    async def submit_raw(self, report):
        try:
            report_id = await self.wats.report.submit_report(report)
        except ValueError:
            self.truth.submitted(self.flow, False)
            raise
        self.truth.submitted(self.flow, True)
        return report_id

    submit = submit_raw


def enqueue(d, name, text):
    """The service's way into its pending queue: X.tmp, fsync, rename to X.queued."""
    tmp = d / f"{name}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, d / f"{name}.queued")


async def pending_queue(wats, api, truth, d, rnd, result):
    names = [f"r{rnd}-s{i}" for i in range(1, 4)]
    queue = AsyncPendingQueue(types.SimpleNamespace(report=Submitter(wats, truth, "service")), d)
    with Renames() as renames:
        task = asyncio.create_task(queue.run())
        # run() starts its watcher before its first real suspension.
        await asyncio.sleep(0)
        for name in names:
            report = new_report(api, f"SN-{name.upper()}")
            enqueue(d, name, report.model_dump_json(by_alias=True, exclude_none=True))
        ends = (".completed", ".error")
        await until(lambda: sum(dst.suffix in ends for _, dst, _ in renames.moved(names)) == len(names))
        # stop() waits for uploads in flight but does not wake run(), which sleeps up to
        # PERIODIC_CHECK_INTERVAL (60 s, async_pending_queue.py:216-219) for a new file:
        # cancel it, which run() handles as its shutdown.
        await queue.stop()
        task.cancel()
        await task
    started = {}
    for src, dst, t in renames.moved(names):
        if dst.suffix == ".processing":
            started[dst.stem] = t
        else:
            status = "completed" if dst.suffix == ".completed" else "failed"
            result["items"].append({"name": dst.stem, "status": status, "duration": t - started[dst.stem]})
    for name in names:
        for status, suffix in (("completed", ".completed"), ("failed", ".error"), ("queued", ".queued")):
            result[status] += (d / f"{name}{suffix}").exists()


# The converter's child process: opens and reads its input, like the pool's sandbox
# (pywats_client/converters/sandbox.py) would, and reports when it opened it.
CHILD = """
import json, sys, time
before = time.monotonic()
with open(sys.argv[1]) as f:
    opened = time.monotonic()
    text = f.read()
print(json.dumps({"before": before, "opened": opened, "text": text}))
"""


class CsvConverter(FileConverter):
    """A FileConverter for "serial,voltage" CSV files.

    AsyncConverterPool treats converters as a `Converter` type that 0.6.0rc1 does not ship
    (async_converter_pool.py:44, 382): it reads watch_path, supported_extensions,
    watch_recursive (:463-474, :568-580), matches_file (:592, :938), post_process_action and
    archive_path (:875-881) and error_path (:893). FileConverter has none of them
    (ConverterBase only supported_extensions), so they are supplied here. Trusted, it runs
    unsandboxed (:723, :819-834): the sandbox would load it from a source file with its
    import and subprocess restrictions; the child process below stands in for it."""

    name = "e2e-csv"
    supported_extensions = [".csv"]
    watch_recursive = False
    post_process_action = PostProcessAction.MOVE

    def __init__(self, conv, api):
        super().__init__()
        self.trusted_mode = True
        self.watch_path, self.archive_path, self.error_path = conv / "in", conv / "done", conv / "error"
        self.api = api
        self.opened = {}  # file name -> child's open time
        self.before_open = {}  # file name -> child's time right before its open

    def matches_file(self, path):
        return path.parent == self.watch_path and path.suffix in self.supported_extensions

    def convert(self, source, context):
        child = subprocess.run([sys.executable, "-c", CHILD, str(source.path)], check=True,
                               capture_output=True, text=True)
        out = json.loads(child.stdout)
        self.opened[source.path.name] = out["opened"]
        self.before_open[source.path.name] = out["before"]
        lines = out["text"].splitlines()
        if len(lines) != 2 or lines[0] != "serial,voltage":
            return ConverterResult.failed_result("not a serial,voltage CSV file")
        serial, voltage = lines[1].split(",")
        return ConverterResult.success_result(report=new_report(self.api, serial, float(voltage)))


class ConverterPool(AsyncConverterPool):
    """AsyncConverterPool with its converter handed in. As shipped, run() loads converters
    through _create_converter, which imports converters.base.Converter and
    converters.registry (async_converter_pool.py:382-383); neither exists in 0.6.0rc1, so
    it logs the ImportError, loads none and watches nothing. Everything else is the
    package's: scan, watcher, queue, conversion, submit, move to done or error."""

    def __init__(self, api, converter):
        super().__init__(config=None, api=api)
        self.converter = converter

    async def _load_converters(self):
        self._converters = [self.converter]


async def converter_pool(wats, api, truth, conv, rnd, result):
    converter = CsvConverter(conv, api)
    inputs = {f"r{rnd}-c{i}": f"serial,voltage\nSN-R{rnd}-C{i},{4.9 + i / 10:.1f}\n" for i in range(1, 4)}
    inputs[f"r{rnd}-bad"] = "this is not the expected CSV\n"
    pool = ConverterPool(types.SimpleNamespace(report=Submitter(wats, truth, "converter")), converter)
    with Renames() as renames:
        task = asyncio.create_task(pool.run())
        # run() loads, scans and starts its watcher before its first real suspension.
        await asyncio.sleep(0)
        for stem, text in inputs.items():
            # Written beside the watched folder, then moved in whole.
            (conv / f"{stem}.csv").write_text(text)
            os.rename(conv / f"{stem}.csv", converter.watch_path / f"{stem}.csv")
        await until(lambda: len(renames.moved(inputs)) == len(inputs))
        await pool.stop()
        await task
    for src, dst, t in renames.moved(inputs):
        status = "done" if dst.parent == converter.archive_path else "error"
        result[status] += 1
        # The agent times the open's and the rename's syscalls: its duration lies between
        # (rename began - open returned) and (rename returned - open began), however long
        # a busy machine kept either process from reading its clock.
        result["items"].append({"name": src.name, "status": status, "duration": t - converter.opened[src.name],
                                "min": renames.before[(src, dst)] - converter.opened[src.name],
                                "max": t - converter.before_open[src.name]})


async def service_round(args, api, truth, workdir, rnd, service, conversions):
    async with AsyncWATS(base_url=args.url, token=args.token, retry_enabled=False, enable_cache=False) as wats:
        await pending_queue(wats, api, truth, workdir / "reports", rnd, service)
        await converter_pool(wats, api, truth, workdir / "conv", rnd, conversions)


def wait_for(word):
    for line in sys.stdin:
        if line.strip() == word:
            return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds (the demo's pace)")
    args = parser.parse_args()
    print(f"pid {os.getpid()}", flush=True)
    if args.wait:
        wait_for("go")

    workdir = args.workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        sys.exit(f"{workdir} is not empty")
    for sub in ("reports", "conv/in", "conv/done", "conv/error"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    truth = Truth()
    pq_items = []
    service = {"completed": 0, "failed": 0, "queued": 0, "items": []}
    conversions = {"done": 0, "error": 0, "items": []}
    # The default 30 s timeout is for a real server; a TLS handshake in a VM
    # emulated by a busy host took longer (no retries: a timeout would fail the run).
    with pyWATS(base_url=args.url, token=args.token, retry_enabled=False, enable_cache=False, timeout=120) as api:
        q = PersistentQueue(queue_dir=workdir / "pq", delete_completed=False)
        for rnd in range(1, args.rounds + 1):
            direct_and_reads(api, truth, rnd)
            persistent_queue(api, truth, q, rnd, pq_items)
            asyncio.run(service_round(args, api, truth, workdir, rnd, service, conversions))
            if rnd < args.rounds:
                time.sleep(args.pause)
        pq = {"completed": sum(i["status"] == "completed" for i in pq_items),
              "failed": sum(i["status"] == "failed" for i in pq_items),
              "pending": q.count_pending(), "items": pq_items}

    print("truth " + json.dumps({"rounds": args.rounds, **truth.as_json(), "persistent_queue": pq,
                                 "service_queue": service, "converter": conversions}), flush=True)
    if args.wait:
        wait_for("exit")


if __name__ == "__main__":
    main()
