"""A target whose children make HTTPS requests: the TLS probes are attached per
process, so a child must get its own as soon as it exists.

Usage: tls_children.py PORT [TAG]. Imports ssl (so libssl is mapped), prints
"ready", then answers one line per command (TAG, ignored, is for --match):
  fork N      forks a child that, after a second, opens a new connection and
              makes N GETs to /mix/200/10/cl/fork, then exits; answers "ok"
              once reaped. A child is probed once the agent has attached for
              it, milliseconds after the fork (pywats_agent_tls_attach_seconds);
              the second keeps the test exact on a loaded machine.
  spawn N     runs a new Python (fork + exec) that does the same to
              /mix/200/10/cl/spawn; answers "ok" once it exited
  load N      N GETs over one connection from this process
              (/mix/200/10/cl/load); answers "ok"
  hostile DIR makes, in DIR, files named like libssl that are no library and
              opens each (so the agent hears of them as a libssl opened):
              libssl.so.3 a FIFO (held open for writing), libssl.so.1.1 a
              symlink to /dev/zero, libssl.so.9 a symlink to the slave of a
              pty whose master this process holds, libssl.so.4 an 8 GiB
              sparse file; answers "ok"
  ctrl_c 0    writes ^C to that pty's master: whoever has the slave as its
              controlling terminal gets SIGINT; answers "ok"
With `--requests PORT N PATH` it only makes the requests (the spawned child).
"""
import http.client
import os
import ssl
import subprocess
import sys
import time

CONTEXT = ssl._create_unverified_context()  # the tests' self-signed certificate


def requests(port, n, path, delay=1.0):
    time.sleep(delay)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=CONTEXT)
    for _ in range(n):
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    conn.close()


held = []


def hostile(d):
    fifo = os.path.join(d, "libssl.so.3")
    os.mkfifo(fifo)
    held.append(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
    os.symlink("/dev/zero", os.path.join(d, "libssl.so.1.1"))
    os.close(os.open(os.path.join(d, "libssl.so.1.1"), os.O_RDONLY))
    master, slave = os.openpty()
    held.append(master)
    os.symlink(os.ttyname(slave), os.path.join(d, "libssl.so.9"))
    os.close(os.open(os.path.join(d, "libssl.so.9"), os.O_RDWR | os.O_NOCTTY))
    os.close(slave)
    with open(os.path.join(d, "big"), "wb") as f:
        f.truncate(8 << 30)
    os.rename(os.path.join(d, "big"), os.path.join(d, "libssl.so.4"))
    os.close(os.open(os.path.join(d, "libssl.so.4"), os.O_RDONLY))


def main():
    if sys.argv[1] == "--requests":
        requests(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    port = int(sys.argv[1])
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "hostile":
            hostile(arg)
            print("ok", flush=True)
            continue
        if cmd == "ctrl_c":
            os.write(held[1], b"\x03")
            print("ok", flush=True)
            continue
        n = int(arg)
        if cmd == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    requests(port, n, "/mix/200/10/cl/fork")
                except BaseException:
                    code = 1
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            print("ok" if status == 0 else f"child failed: {status}", flush=True)
        elif cmd == "spawn":
            done = subprocess.run([sys.executable, __file__, "--requests", str(port), str(n),
                                   "/mix/200/10/cl/spawn"])
            print("ok" if done.returncode == 0 else f"child failed: {done.returncode}", flush=True)
        elif cmd == "load":
            requests(port, n, "/mix/200/10/cl/load", delay=0)
            print("ok", flush=True)


main()
