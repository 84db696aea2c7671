#!/usr/bin/env python3
"""A real Prometheus scraping pywats-agent, and the guide's PromQL recipes
answered by it.

Starts Debian's `prometheus` on loopback with the project's own scrape job
(deploy/prometheus/scrape.yml, its station job pointed at the agent) and
alert rules (deploy/prometheus/alerts.yml), waits until it has scraped the
agent a few times, then asks it every question of recipes.json through its
HTTP API and prints the answers, and the alerts it evaluates.

    python3 examples/observability/prometheus_monitoring.py [--agent 127.0.0.1:9090]

Standard library only. Prometheus keeps running (http://127.0.0.1:9091) until
Ctrl-C, unless --exit is given.
"""

import argparse
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCRAPE = ROOT / "deploy/prometheus/scrape.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
RECIPES = HERE / "recipes.json"
STATION_JOB = "  - job_name: pywats-agent\n"


def station_job(agent, interval, scheme, auth):
    """The station job of the shipped scrape config, aimed at `agent`."""
    text = SCRAPE.read_text()
    start = text.index(STATION_JOB)
    end = text.find("\n  - job_name:", start + 1)
    job = text[start:] if end < 0 else text[start:end + 1]
    # Comment lines that introduce the next job belong to it.
    lines = job.rstrip("\n").split("\n")
    while lines and lines[-1].strip().startswith("#"):
        lines.pop()
    out = []
    for line in lines:
        if line.strip().startswith("- targets:"):
            line = line[: line.index("- targets:")] + f'- targets: ["{agent}"]'
        elif line.strip().startswith("scrape_interval:"):
            line = line[: line.index("scrape_interval:")] + f"scrape_interval: {interval}"
        out.append(line)
    if not any(f'"{agent}"' in line for line in out):
        sys.exit(f"{SCRAPE}: its station job has no `- targets:` line to point at the agent")
    if scheme == "https":
        out.append("    scheme: https")
        out.append("    tls_config:")
        out.append(f"      ca_file: {auth['ca_file']}")
    if auth.get("username"):
        out.append("    basic_auth:")
        out.append(f"      username: {auth['username']}")
        out.append(f"      password_file: {auth['password_file']}")
    return "\n".join(out) + "\n"


def config(agent, interval, scheme, auth):
    return (
        "# Written by examples/observability/prometheus_monitoring.py\n"
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "rule_files:\n"
        f"  - {ALERTS}\n"
        "scrape_configs:\n" + station_job(agent, interval, scheme, auth)
    )


def api(prom, path, params=None):
    url = f"http://{prom}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def query(prom, q):
    return api(prom, "query", {"query": q})["result"]


def label_text(metric):
    shown = {k: v for k, v in metric.items() if k not in ("__name__", "instance", "job")}
    if not shown and "instance" in metric:
        shown = {"instance": metric["instance"]}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "(no labels)"


def number(v):
    f = float(v)
    if f != f:
        return "NaN (no traffic in the window)"
    return f"{f:.4g}"


def wait(what, timeout, check):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default="127.0.0.1:9090", help="the agent's host:port (default 127.0.0.1:9090)")
    p.add_argument("--port", type=int, default=9091, help="Prometheus's port on 127.0.0.1 (default 9091)")
    p.add_argument("--interval", default="5s", help="scrape and rule interval (the shipped job: 15s)")
    p.add_argument("--workdir", help="Prometheus's config and data (default: a new temporary directory)")
    p.add_argument("--scheme", choices=["http", "https"], default="http", help="https for an agent with --web-config TLS")
    p.add_argument("--ca-file", help="CA certificate that signed the agent's certificate (https)")
    p.add_argument("--username", help="basic-auth user of the agent's web-config")
    p.add_argument("--password-file", help="file holding that user's password")
    p.add_argument("--answers", help="also write the answers as JSON to this file")
    p.add_argument("--exit", action="store_true", help="stop Prometheus after printing the answers")
    args = p.parse_args()

    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus or not promtool:
        sys.exit("prometheus and promtool are needed: apt-get install prometheus (Debian's package)")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pywats-prometheus-"))
    work.mkdir(parents=True, exist_ok=True)
    auth = {"ca_file": args.ca_file, "username": args.username, "password_file": args.password_file}
    cfg = work / "prometheus.yml"
    cfg.write_text(config(args.agent, args.interval, args.scheme, auth))
    print(f"== Prometheus config: {cfg}\n{cfg.read_text()}")
    check = subprocess.run([promtool, "check", "config", str(cfg)], capture_output=True, text=True)
    print(f"== promtool check config: {(check.stdout + check.stderr).strip()}\n")
    if check.returncode != 0:
        sys.exit(1)

    # The agent answers before Prometheus is asked, so a wrong address is
    # reported as such rather than as `up == 0`.
    ctx = ssl.create_default_context(cafile=args.ca_file) if args.scheme == "https" else None
    ready = urllib.request.Request(f"{args.scheme}://{args.agent}/health/ready")
    try:
        with urllib.request.urlopen(ready, timeout=5, context=ctx) as r:
            print(f"== the agent at {args.agent}: {r.read().decode().strip()}")
    except OSError as e:
        sys.exit(f"the agent does not answer at {args.scheme}://{args.agent}/health/ready: {e}\n"
                 "start it first, e.g. `sudo -E cargo xtask demo` in another terminal")

    prom = f"127.0.0.1:{args.port}"
    log = open(work / "prometheus.log", "w")
    server = subprocess.Popen(
        [prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address={prom}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(*_):
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        def started():
            if server.poll() is not None:
                sys.exit(f"prometheus exited; see {work / 'prometheus.log'}")
            return urllib.request.urlopen(f"http://{prom}/-/ready", timeout=2).status == 200

        wait("Prometheus to start", 60, started)
        print(f"== Prometheus is up at http://{prom} (data in {work / 'data'})")
        up = wait("the first scrape of the agent", 60,
                  lambda: [r for r in query(prom, 'up{job="pywats-agent"}')])
        if up[0]["value"][1] != "1":
            target = api(prom, "targets")["activeTargets"][0]
            sys.exit(f"Prometheus cannot scrape the agent: {target.get('lastError')}")
        recipes = json.loads(RECIPES.read_text())
        # Rates want two samples in their window; a few scrape intervals.
        wait("data for every recipe", 120,
             lambda: all(query(prom, r["query"]) for r in recipes if r["expect_data"]))

        answers = []
        for r in recipes:
            result = query(prom, r["query"])
            answers.append({"question": r["question"], "query": r["query"], "result": result})
            print(f"\n## {r['question']}\n   {r['query']}")
            if not result:
                print("   → no series")
            for s in sorted(result, key=lambda s: label_text(s["metric"])):
                print(f"   → {label_text(s['metric'])}: {number(s['value'][1])}")

        groups = api(prom, "rules")["groups"]
        rules = [rule for g in groups for rule in g["rules"] if rule["type"] == "alerting"]
        print(f"\n## Alert rules loaded from {ALERTS.relative_to(ROOT)}: {len(rules)}")
        for rule in rules:
            print(f"   {rule['name']}: {rule['state']}")
        if args.answers:
            Path(args.answers).write_text(json.dumps(
                {"answers": answers, "alerts": {r["name"]: r["state"] for r in rules}}, indent=1))
        if args.exit:
            stop()
        print(f"\nPrometheus keeps running at http://{prom} (try its /graph page); Ctrl-C stops it.")
        server.wait()
    except KeyboardInterrupt:
        stop()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
