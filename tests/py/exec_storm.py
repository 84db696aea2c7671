"""A target that execs without pause while other processes come and go.

Usage: exec_storm.py PORT ROLE PATTERN, ROLE `target` or `spawner`. The target's
command line holds PATTERN (the agent's --match); the spawner's does not hold
it whole (its argument is PATTERN with its last character dropped; a child of a
target would be that target's child, not a process adopted on its own). Prints
"ready", then runs commands from stdin, answering each with one JSON line:
  start      target: one thread runs /bin/true in children as fast as it can
             (each child's exec is a target's exec), one makes a GET to the
             server every 100 ms. spawner: every 0.5 s, a process whose command
             line holds PATTERN, which connects to the server and holds the
             connection for 5 s (the agent adopts it, sockets and all).
             Answers "ok".
  progress   {"execs": N, "requests": N, "adoptees": N} so far
  stop       stops the threads, waits for the adoptees to exit, answers progress
"""
import http.client
import json
import subprocess
import sys
import threading

PORT = int(sys.argv[1])
ROLE = sys.argv[2]
PATTERN = sys.argv[3] if ROLE == "target" else sys.argv[3] + "d"

stop = threading.Event()
lock = threading.Lock()
counts = {"execs": 0, "requests": 0, "adoptees": 0}
adoptee_pids = []

ADOPTEE = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(5)
"""


def count(key):
    with lock:
        counts[key] += 1


def execs():
    while not stop.is_set():
        subprocess.run(["/bin/true"], check=True)
        count("execs")


def adoptees():
    while not stop.is_set():
        p = subprocess.Popen([sys.executable, "-c", ADOPTEE, str(PORT), PATTERN])
        with lock:
            adoptee_pids.append(p)
        count("adoptees")
        stop.wait(0.5)


def requests():
    conn = http.client.HTTPConnection("127.0.0.1", PORT)
    while not stop.is_set():
        conn.request("GET", "/mix/200/10/cl/storm")
        conn.getresponse().read()
        count("requests")
        stop.wait(0.1)
    conn.close()


threads = []
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "start":
        work = (execs, requests) if ROLE == "target" else (adoptees,)
        threads = [threading.Thread(target=f) for f in work]
        for t in threads:
            t.start()
        print(json.dumps("ok"), flush=True)
    elif cmd == "progress":
        with lock:
            print(json.dumps(counts), flush=True)
    elif cmd == "stop":
        stop.set()
        for t in threads:
            t.join()
        for p in adoptee_pids:
            p.wait()
        with lock:
            print(json.dumps(counts), flush=True)
