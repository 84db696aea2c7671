"""A short-lived process: one GET 50 ms after its exec, then exit.

Usage: quick_request.py PORT PATH [TAG]. The request goes out when 50 ms have
passed since the process started (its start time in /proc/self/stat, on the
boot clock), over a new connection; exits 0 on a 200. With HOLD=1 in its
environment it exits only once its standard input is closed (a test then knows
the agent judged it while it ran).
"""
import http.client
import os
import sys
import time

ticks = os.sysconf("SC_CLK_TCK")
with open("/proc/self/stat") as f:
    start = int(f.read().rsplit(")", 1)[1].split()[19]) / ticks
wait = 0.05 - (time.clock_gettime(time.CLOCK_BOOTTIME) - start)
if wait > 0:
    time.sleep(wait)
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
conn.request("GET", sys.argv[2])
response = conn.getresponse()
response.read()
if os.environ.get("HOLD") == "1":
    sys.stdin.read()
sys.exit(0 if response.status == 200 else 1)
