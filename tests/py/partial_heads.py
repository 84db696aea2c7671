"""The watched client of the connection-bound tests: many connections,
each left with half an HTTP request head.

Usage: partial_heads.py PORT. Prints "ready", then per line on stdin:
  open N WAVE   N more connections, held by child processes of at most
                8000 each (one process may have 20000 files open here),
                opened WAVE at a time with a 20 ms pause between waves (the
                agent's ring must not overflow); each gets half a head (1000
                bytes); answers how many are open
  flood N       on one more connection of this process, N writes of 4 KiB;
                answers "ok"
  close         closes every connection; answers how many. The children
                stay alive (an exit would end their connections in the agent
                whether or not their close events arrived) until this process ends
  exit
"""
import os
import socket
import sys
import time

PORT = int(sys.argv[1])
PER_PROCESS = 8000
HALF_HEAD = (b"GET /partial HTTP/1.1\r\nHost: x\r\nX-Pad: ").ljust(1000, b"a")
# (pipe to tell it to close, pipe it answers on, connections) per child holding connections.
children = []
# Children whose connections are closed: their pipes stay open, so they live on.
done = []
own = []


def hold(n, wave, told, answer):
    """In a child: opens n connections, reports, waits for the word to close
    them, reports, and lives on until the parent is gone (its pipe closes)."""
    conns = []
    for start in range(0, n, wave):
        for _ in range(min(wave, n - start)):
            s = socket.create_connection(("127.0.0.1", PORT))
            s.sendall(HALF_HEAD)
            conns.append(s)
        time.sleep(0.02)
    os.write(answer, b"x")
    os.read(told, 1)
    for s in conns:
        s.close()
    os.write(answer, b"x")
    os.read(told, 1)


def open_conns(n, wave):
    for start in range(0, n, PER_PROCESS):
        share = min(PER_PROCESS, n - start)
        tell_r, tell_w = os.pipe()
        ans_r, ans_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            # Only the parent may hold the write end: its exit ends the child.
            os.close(tell_w)
            hold(share, wave, tell_r, ans_w)
            os._exit(0)
        os.close(tell_r)
        os.close(ans_w)
        os.read(ans_r, 1)
        children.append((tell_w, ans_r, share))
    return sum(c[2] for c in children) + len(own)


def flood(n):
    s = socket.create_connection(("127.0.0.1", PORT))
    own.append(s)
    for _ in range(n):
        s.sendall(b"x" * 4096)
    return "ok"


def close():
    n = len(own)
    for s in own:
        s.close()
    own.clear()
    for tell, answer, share in children:
        os.write(tell, b"x")
        os.read(answer, 1)
        n += share
    done.extend(children)
    children.clear()
    return n


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "open":
            print(open_conns(int(cmd[1]), int(cmd[2])), flush=True)
        elif cmd[0] == "flood":
            print(flood(int(cmd[1])), flush=True)
        elif cmd[0] == "close":
            print(close(), flush=True)
        elif cmd[0] == "exit":
            return


if __name__ == "__main__":
    main()
