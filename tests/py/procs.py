"""Processes with known properties for the foundation tests.

Usage: procs.py KIND. Each prints "ready" once in its final state, then obeys
commands on stdin (one per line) and answers each with one line:
  fork          start a child process that sleeps; answers its pid
  reap PID      kill that child and wait for it; answers "ok"
  thread        start one more idle thread; answers "ok"
  exit          exits 0
KIND is one of:
  sleeper       7 extra idle threads, 200 MiB allocated and touched
  spinner       one thread spinning a core
  plain         nothing special
"""
import os
import signal
import sys
import threading

ALLOC = 200 * 1024 * 1024
stop = threading.Event()
children = {}


def idle_thread():
    threading.Thread(target=stop.wait, daemon=True).start()


def spin():
    x = 0
    while not stop.is_set():
        x += 1


def main():
    kind = sys.argv[1]
    keep = None
    if kind == "sleeper":
        for _ in range(7):
            idle_thread()
        keep = bytearray(ALLOC)
        for i in range(0, ALLOC, 4096):
            keep[i] = 1
    elif kind == "spinner":
        threading.Thread(target=spin, daemon=True).start()
    elif kind != "plain":
        sys.exit(f"unknown kind {kind}")
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "fork":
            pid = os.fork()
            if pid == 0:
                signal.pause()
                os._exit(0)
            children[pid] = True
            print(pid, flush=True)
        elif cmd[0] == "reap":
            pid = int(cmd[1])
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print("ok", flush=True)
        elif cmd[0] == "thread":
            idle_thread()
            print("ok", flush=True)
        elif cmd[0] == "exit":
            break
    stop.set()
    del keep


if __name__ == "__main__":
    main()
