"""A test station's client: the real pyWATS client (pywats-api 0.6.0rc1) submitting
reports to wats_server.py on command, keeping its own ground truth.

Usage: station_client.py --url http://127.0.0.1:PORT --token TOKEN
Prints "pid <PID>", then runs commands from stdin, one per line, answering each with
one JSON line:
  submit N PAUSE   N reports submitted through the sync pyWATS class, PAUSE seconds
                   apart; answers {"ok", "failed", "ids": [report id of each], "seconds":
                   [duration of each by the client's clock]}
  traceparent N    N GETs of /api/App/Version through httpx, each with a W3C traceparent
                   of a fresh trace id; answers the trace ids
  correlation N    the same with a fresh X-Correlation-ID each (and an X-Request-ID the
                   agent must not prefer to it); answers the correlation ids
  totals           every request made so far: {"requests", "ok", "failed"}
  exit             ends the process
Every request carries the station's Authorization: Basic token. pyWATS runs with
retries and the GET cache off, so every call is one request on the wire.
"""
import argparse
import json
import os
import secrets
import sys
import time

import httpx
from pywats import CompOp, pyWATS


def new_report(api, serial):
    """A minimal UUT report, built with the public factory (as wats_workload.py does)."""
    report = api.report.create_uut_report(operator="fleet", part_number="PN-FLEET", revision="A",
                                          serial_number=serial, operation_type=10)
    report.get_root_sequence_call().add_numeric_step(name="Voltage", value=5.0, unit="V",
                                                     comp_op=CompOp.GELE, low_limit=4.5, high_limit=5.5)
    return report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    totals = {"requests": 0, "ok": 0, "failed": 0}
    serial = 0
    auth = {"Authorization": f"Basic {args.token}"}
    print(f"pid {os.getpid()}", flush=True)
    with pyWATS(base_url=args.url, token=args.token, retry_enabled=False, enable_cache=False) as api, \
            httpx.Client(base_url=args.url, headers=auth) as raw:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "submit":
                n, pause = int(words[1]), float(words[2])
                answer = {"ok": 0, "failed": 0, "ids": [], "seconds": []}
                for i in range(n):
                    serial += 1
                    report = new_report(api, f"SN-{os.getpid()}-{serial}")
                    start = time.monotonic()
                    try:
                        api.report.submit_report(report)
                        answer["ok"] += 1
                    except ValueError:
                        answer["failed"] += 1
                    answer["seconds"].append(time.monotonic() - start)
                    answer["ids"].append(str(report.id))
                    if i + 1 < n:
                        time.sleep(pause)
                totals["requests"] += n
                totals["ok"] += answer["ok"]
                totals["failed"] += answer["failed"]
                print(json.dumps(answer), flush=True)
            elif words[0] in ("traceparent", "correlation"):
                ids = []
                for _ in range(int(words[1])):
                    if words[0] == "traceparent":
                        ids.append(secrets.token_hex(16))
                        headers = {"traceparent": f"00-{ids[-1]}-{secrets.token_hex(8)}-01"}
                    else:
                        ids.append(f"corr-{secrets.token_hex(8)}")
                        headers = {"X-Correlation-ID": ids[-1], "X-Request-ID": "not-this-one"}
                    r = raw.get("/api/App/Version", headers=headers)
                    totals["requests"] += 1
                    totals["ok" if r.is_success else "failed"] += 1
                print(json.dumps(ids), flush=True)
            elif words[0] == "totals":
                print(json.dumps(totals), flush=True)
            elif words[0] == "exit":
                return


if __name__ == "__main__":
    main()
