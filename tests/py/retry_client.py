"""The real pyWATS client (pywats-api 0.6.0rc1) against wats_server.py, retrying or not,
with the retries it logged as ground truth.

Usage: retry_client.py --url URL --token TOKEN --mode never|retry [--polls N] [--period SECS]
Prints "pid <PID>", waits for "go" on stdin, works, prints "truth <JSON>" and waits for
"exit". The GET cache is off, so every call goes to the server.

  never  pyWATS as it comes: its HTTP retries off. 10 reports that do not exist are asked
         for (10 ids, 404s); 6 reports are submitted and each stored one fetched (against
         a server started with --fail-every 2 --get-fail-first 1000 --get-fail-code 500:
         500s, each for another body or id); then, every PERIOD s, a report that does not
         exist (404) and the server version (against --version-fail-every 3: a 500 every
         third time), POLLS times each: the next run of a schedule, never a retry.
  retry  pyWATS with its HTTP retries on (RetryConfig: 3 attempts, 0.05 s then 0.1 s
         apart, no jitter): 6 reports are submitted (POSTs are not retried) and each
         stored one fetched (against --get-fail-first 2: two 503s, then the report); then
         the version is polled as above, a failed poll retried before the next run.

The truth: the retries the client logged ("Retry n/m for METHOD PATH after ... (...)",
pywats.core.async_client), as [method, path, n] rows, and the retry count of its
RetryConfig's own statistics.
"""
import argparse
import json
import logging
import os
import re
import sys
import time
from collections import Counter

from pywats import CompOp, pyWATS
from pywats.core.retry import RetryConfig

RETRY_LINE = re.compile(r"^Retry \d+/\d+ for (\S+) (\S+) after ")


class Retries(logging.Handler):
    """Counts the client's own retry log lines per (method, path)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.logged = Counter()

    def emit(self, record):
        m = RETRY_LINE.match(record.getMessage())
        if m:
            self.logged[(m.group(1), m.group(2))] += 1


def new_report(api, serial):
    report = api.report.create_uut_report(operator="e2e", part_number="PN-RETRY", revision="A",
                                          serial_number=serial, operation_type=10)
    report.get_root_sequence_call().add_numeric_step(name="Voltage", value=5.0, unit="V",
                                                     comp_op=CompOp.GELE, low_limit=4.5, high_limit=5.5)
    return report


def attempt(call, *args):
    """Calls the client; a failure it raises is the outcome the test wants, not an error."""
    try:
        return call(*args)
    except Exception:  # noqa: BLE001 - every failure of the client is an answer here
        return None


def wait_for(word):
    for line in sys.stdin:
        if line.strip() == word:
            return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", choices=("never", "retry"), required=True)
    parser.add_argument("--polls", type=int, default=9)
    parser.add_argument("--period", type=float, default=0.3)
    args = parser.parse_args()
    print(f"pid {os.getpid()}", flush=True)
    wait_for("go")

    retries = Retries()
    logger = logging.getLogger("pywats.core.async_client")
    logger.addHandler(retries)
    logger.setLevel(logging.INFO)
    if args.mode == "retry":
        config = RetryConfig(max_attempts=3, base_delay=0.05, jitter=False)
        api = pyWATS(base_url=args.url, token=args.token, retry_config=config, enable_cache=False)
    else:
        api = pyWATS(base_url=args.url, token=args.token, enable_cache=False)
    with api:
        if args.mode == "never":
            for i in range(10):
                attempt(api.report.get_report, f"missing-{i}")
        ids = [attempt(api.report.submit_report, new_report(api, f"SN-RETRY-{i}")) for i in range(6)]
        for report_id in filter(None, ids):
            attempt(api.report.get_report, report_id)
        for _ in range(args.polls):
            if args.mode == "never":
                attempt(api.report.get_report, "missing-polled")
            attempt(api.test_connection)
            time.sleep(args.period)
        stats = api.retry_config.stats["total_retries"]
    logged = [[m, p, n] for (m, p), n in sorted(retries.logged.items())]
    print("truth " + json.dumps({"retries_logged": logged, "retry_stats": stats}), flush=True)
    wait_for("exit")


if __name__ == "__main__":
    main()
