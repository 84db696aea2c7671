"""Reproduces the pyWATS client's queue and converter file flows with known
counts and sleeps, and reports its own ground truth.

Usage: queues.py. Prints "ready", then answers one JSON line per command:
  service DIR          the service pending queue (async_pending_queue.py):
                       tmp + fsync + rename to X.queued, X.queued -> X.processing
                       -> X.completed | X.error (+ X.error.info), a recovery
                       (processing -> queued) and a retry (error -> queued)
  persistent DIR       PersistentQueue's files: mkstemp + fsync + os.replace for
                       X.<status>.wsjf and X.<status>.meta.json, renames of both
                       on a status change, unlink of completed items
  prepare DIR          a service queue left mid-flight: 3 queued, 1 processing
  finish DIR           completes the mid-flight item, then one queued item
  convert WATCH DONE ERROR ARCHIVE
                       converter runs; a child process opens and reads each input
  real_pq DIR          the real pywats_client.queue.PersistentQueue
  late WATCH DONE      for an agent started after w1.csv and w2.csv were dropped:
                       w1 moved to done unread (its read came before the agent),
                       w2 read and moved, v1 dropped and read (left in progress)
  enqueue DIR NAME     one service-queue item (tmp + fsync + rename to NAME.queued)
  move DIR NAME A B    renames NAME<A> to NAME<B> (e.g. .queued .processing)
  load DIR N DONE      N service-queue items (tmp + rename to X.queued, no fsync:
                       the event rate is the point), then DONE of them through
                       processing to completed (every 10th to error); answers
                       the files on disk by state
Processing durations are measured around the renames, on the monotonic clock
the kernel's timestamps use.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import pq_transition

now = time.monotonic


def atomic_write(path, text):
    d, name = os.path.split(path)
    stem = name.rsplit(".", 1)[0]
    fd, tmp = tempfile.mkstemp(prefix=stem + "_", suffix=".tmp", dir=d)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def service_enqueue(d, name):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"report": name}))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(d, name + ".queued"))


def mv(d, name, a, b):
    os.rename(os.path.join(d, name + a), os.path.join(d, name + b))
    return now()


def service_process(d, name, sleep, outcome, truth):
    start = mv(d, name, ".queued", ".processing")
    with open(os.path.join(d, name + ".processing")) as f:
        f.read()
    time.sleep(sleep)
    if outcome == "ok":
        end = mv(d, name, ".processing", ".completed")
        truth["completed"] += 1
    else:
        end = mv(d, name, ".processing", ".error")
        with open(os.path.join(d, name + ".error.info"), "w") as f:
            f.write(json.dumps({"error": "simulated", "attempts": 1}))
        truth["failed"] += 1
    truth["durations"].append(end - start)


def service(d):
    os.makedirs(d, exist_ok=True)
    truth = {"completed": 0, "failed": 0, "recovered": 0, "retried": 0, "durations": []}
    for i in range(1, 7):
        service_enqueue(d, f"s{i}")
    service_process(d, "s1", 0.02, "ok", truth)
    service_process(d, "s2", 0.06, "fail", truth)
    service_process(d, "s3", 0.2, "ok", truth)
    mv(d, "s4", ".queued", ".processing")
    mv(d, "s4", ".processing", ".queued")
    truth["recovered"] += 1
    service_process(d, "s4", 0.02, "ok", truth)
    mv(d, "s2", ".error", ".queued")
    truth["retried"] += 1
    service_process(d, "s2", 0.06, "ok", truth)
    truth["depth"] = 2
    return truth


def pq_paths(d, item, status):
    return os.path.join(d, f"{item}.{status}.wsjf"), os.path.join(d, f"{item}.{status}.meta.json")


def pq_add(d, item):
    data, meta = pq_paths(d, item, "pending")
    atomic_write(data, json.dumps({"sn": item}))
    atomic_write(meta, json.dumps({"id": item, "status": "pending"}))


def pq_move(d, item, a, b):
    da, ma = pq_paths(d, item, a)
    db, mb = pq_paths(d, item, b)
    os.replace(da, db)
    t = now()
    os.replace(ma, mb)
    atomic_write(mb, json.dumps({"id": item, "status": b}))
    return t


def persistent(d):
    os.makedirs(d, exist_ok=True)
    truth = {"completed": 0, "failed": 0, "durations": []}
    for i in range(1, 6):
        pq_add(d, f"p{i}")
    for item, sleep, outcome in (("p1", 0.03, "completed"), ("p2", 0.07, "failed"), ("p3", 0.02, "completed")):
        start = pq_move(d, item, "pending", "processing")
        time.sleep(sleep)
        end = pq_move(d, item, "processing", outcome)
        truth[outcome] += 1
        truth["durations"].append(end - start)
    # delete_completed: the completed item's files go.
    for path in pq_paths(d, "p1", "completed"):
        os.unlink(path)
    truth["depth"] = 2
    return truth


def prepare(d):
    os.makedirs(d, exist_ok=True)
    for i in range(1, 5):
        service_enqueue(d, f"m{i}")
    mv(d, "m4", ".queued", ".processing")
    return {"queued": 3, "processing": 1}


def finish(d):
    truth = {"completed": 0, "failed": 0, "durations": []}
    mv(d, "m4", ".processing", ".completed")
    truth["completed"] += 1
    service_process(d, "m1", 0.03, "ok", truth)
    truth["depth"] = 2
    return truth


CHILD = """
import sys, time
with open(sys.argv[1], "rb") as f:
    t = time.monotonic()
    f.read()
print(t)
"""


def child_reads(path):
    out = subprocess.run([sys.executable, "-c", CHILD, path], check=True, capture_output=True, text=True)
    return float(out.stdout)


def convert(watch, done, error, archive):
    for d in (watch, done, error, archive):
        os.makedirs(d, exist_ok=True)
    truth = {"success": 0, "error": 0, "durations": [], "in_progress": 1}
    names = ["c1.csv", "c2.csv", "c3.csv", "c4.csv", "c5.csv", "c6.csv", "c7.csv"]
    for n in names:
        with open(os.path.join(watch, n), "w") as f:
            f.write("sn,result\n1,pass\n")
    plan = [("c1.csv", done, 0.03), ("c2.csv", done, 0.0), ("c3.csv", None, 0.05), ("c4.csv", error, 0.02),
            ("c5.csv", archive, 0.01)]
    for name, dest, sleep in plan:
        src = os.path.join(watch, name)
        start = child_reads(src)
        time.sleep(sleep)
        if dest is None:
            os.unlink(src)
        else:
            os.rename(src, os.path.join(dest, name))
        end = now()
        truth["error" if dest == error else "success"] += 1
        truth["durations"].append(end - start)
    # c6 is never picked up; c7 is picked up and never finished.
    child_reads(os.path.join(watch, "c7.csv"))
    return truth


def real_pq(d):
    from pywats_client.queue import PersistentQueue

    q = PersistentQueue(queue_dir=d, delete_completed=False)
    truth = {"completed": 0, "failed": 0, "durations": []}

    def transition(item_id, action, *args):
        return pq_transition.transition(q, item_id, action, *args)

    for i in range(1, 6):
        q.add({"sn": f"SN{i}"}, item_id=f"r{i}")
    for item, sleep, outcome in (("r1", 0.03, "completed"), ("r2", 0.06, "failed"), ("r3", 0.01, "completed")):
        start = transition(item, "mark_processing")
        time.sleep(sleep)
        end = transition(item, "mark_completed") if outcome == "completed" else transition(item, "mark_failed", "x")
        truth[outcome] += 1
        truth["durations"].append(end - start)
    truth["depth"] = q.count_pending()
    truth["files"] = sorted(os.listdir(d))
    return truth


def late(watch, done):
    os.rename(os.path.join(watch, "w1.csv"), os.path.join(done, "w1.csv"))
    child_reads(os.path.join(watch, "w2.csv"))
    os.rename(os.path.join(watch, "w2.csv"), os.path.join(done, "w2.csv"))
    with open(os.path.join(watch, "v1.csv"), "w") as f:
        f.write("sn,result\n1,pass\n")
    child_reads(os.path.join(watch, "v1.csv"))
    return {"success": 2, "timed": 1, "in_progress": 1}


def load(d, n, done):
    os.makedirs(d, exist_ok=True)
    payload = json.dumps({"report": "x" * 200})
    for i in range(int(n)):
        tmp = os.path.join(d, f"L{i:06d}.tmp")
        with open(tmp, "w") as f:
            f.write(payload)
        os.rename(tmp, os.path.join(d, f"L{i:06d}.queued"))
    for i in range(int(done)):
        name = f"L{i:06d}"
        mv(d, name, ".queued", ".processing")
        mv(d, name, ".processing", ".error" if i % 10 == 9 else ".completed")
    on_disk = {"queued": 0, "processing": 0, "completed": 0, "failed": 0}
    for f in os.listdir(d):
        for suffix, state in ((".queued", "queued"), (".processing", "processing"), (".completed", "completed"),
                              (".error", "failed")):
            if f.endswith(suffix):
                on_disk[state] += 1
    return on_disk


def enqueue(d, name):
    service_enqueue(d, name)
    return "ok"


def move(d, name, a, b):
    mv(d, name, a, b)
    return "ok"


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "exit":
            break
        fn = {"service": service, "persistent": persistent, "prepare": prepare, "finish": finish,
              "convert": convert, "real_pq": real_pq, "late": late,
              "load": load, "enqueue": enqueue, "move": move}[cmd[0]]
        print(json.dumps(fn(*cmd[1:])), flush=True)


if __name__ == "__main__":
    main()
