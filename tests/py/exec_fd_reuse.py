"""A target that execs while holding a keep-alive connection, then reuses the
socket's fd number for files.

Usage: exec_fd_reuse.py PORT DIR. Makes 3 GETs to /mix/200/10/cl/before over
one http.client connection (its socket is CLOEXEC, as Python makes them),
prints "ready", waits for a line on stdin, then execs itself with
`--after-exec FD DIR`. The new image opens files until it holds that same fd
number, writes an HTTP request into one and reads an HTTP response from
another through that fd, and prints "reused FD" (or "not-reused FD").
"""
import http.client
import os
import sys


def after_exec(fd, directory):
    request = os.path.join(directory, "request.txt")
    response = os.path.join(directory, "response.txt")
    with open(response, "wb") as f:
        f.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    opened = []
    got = None
    for _ in range(64):
        n = os.open(request, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if n == fd:
            got = n
            break
        opened.append(n)
    if got is None:
        print(f"not-reused {fd}", flush=True)
        return
    os.write(got, b"GET /exec/leak HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    os.close(got)
    got = os.open(response, os.O_RDONLY)
    os.read(got, 4096)
    os.close(got)
    print(f"reused {fd}", flush=True)
    sys.stdin.readline()


def main():
    if sys.argv[1] == "--after-exec":
        after_exec(int(sys.argv[2]), sys.argv[3])
        return
    port, directory = int(sys.argv[1]), sys.argv[2]
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(3):
        conn.request("GET", "/mix/200/10/cl/before")
        conn.getresponse().read()
    fd = conn.sock.fileno()
    print("ready", flush=True)
    sys.stdin.readline()
    os.execv(sys.executable, [sys.executable, __file__, "--after-exec", str(fd), directory])


main()
