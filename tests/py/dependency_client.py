"""The target of the dependency-health tests: calls a server the way pyWATS
does (httpx, keep-alive, a timeout) and reports how each call ended.

Usage: dependency_client.py PORT [--tls]. Prints "ready", then answers one
JSON line per command:
  calls N PATH   N sequential GETs of http(s)://127.0.0.1:PORT/PATH; answers
                 {"ok": calls answered, "failed": calls that raised or got a
                 status >= 500, "errors": [exception class names],
                 "started": wall clock before the first call,
                 "ended": wall clock after the last}
"""
import json
import sys
import time

import httpx

PORT = int(sys.argv[1])
TLS = sys.argv[2:3] == ["--tls"]
BASE = f"{'https' if TLS else 'http'}://127.0.0.1:{PORT}"


def main():
    # No retries (pyWATS's own retry is off in the tests): one call, one outcome.
    client = httpx.Client(base_url=BASE, verify=False, timeout=2.0)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "exit":
            break
        assert cmd[0] == "calls", cmd
        n, path = int(cmd[1]), cmd[2]
        ok, failed, errors = 0, 0, []
        started = time.time()
        for _ in range(n):
            try:
                r = client.get(path)
                if r.status_code >= 500:
                    failed += 1
                else:
                    ok += 1
            except httpx.HTTPError as e:
                failed += 1
                errors.append(type(e).__name__)
        ended = time.time()
        print(json.dumps({"ok": ok, "failed": failed, "errors": errors, "started": started, "ended": ended}),
              flush=True)


if __name__ == "__main__":
    main()
