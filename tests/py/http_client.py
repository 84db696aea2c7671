"""The target of the HTTP tests: performs a plan of requests with real Python
clients and reports what it measured.

Usage: http_client.py PORT [--tls]. Prints "ready", then runs commands from stdin, one
per line, answering each with one JSON line:
  plan            the mixed plan over http.client, urllib and httpx; answers
                  the list of requests made: client, method, path, code,
                  request id, [least, most] seconds by the client's clock
  refused PORT    connects to a closed port; answers the error
  garbage         writes random bytes to the server; answers "ok"
  open            opens a keep-alive http.client connection and makes one request
  more N          N requests on that connection
  load N          N small keep-alive GETs as fast as possible
  bulk N          N GETs of 2 MiB each on the connection "open" made; answers
                  [request id, [least, most] seconds] per request
  tls_events      how many TLS data events the agent's probes must have sent
                  for this process's SSL reads and writes so far
Every request carries Authorization: Basic <SECRET> and a unique X-Request-ID.
"""
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

import httpx

SECRET = "cHl3YXRzOnMzY3JldC10b2tlbi12YWx1ZQ=="

# The client's own clock, read around its socket calls, as a bracket: the
# agent's duration runs from the start of the call that writes the first
# request byte to the return of the read that brings the last response byte,
# so it lies between (start of that last read − return of the first write)
# and (return of that last read − start of the first write). A busy machine
# that delays the client between its clock and the kernel widens the bracket;
# it never moves the agent out of it.
first_send = first_send_ret = None
last_recv = last_recv_start = None


def _timed_send(method):
    def timed(self, data, *args):
        global first_send, first_send_ret
        first = first_send is None
        if first:
            first_send = time.perf_counter()
        n = method(self, data, *args)
        if first:
            first_send_ret = time.perf_counter()
        return n
    return timed


def _timed_recv(method):
    def timed(self, *args):
        global last_recv, last_recv_start
        t0 = time.perf_counter()
        n = method(self, *args)
        # Also a read of 0 bytes: a response delimited by the connection's
        # close ends with it.
        last_recv, last_recv_start = time.perf_counter(), t0
        return n
    return timed


for cls in (socket.socket, ssl.SSLSocket):
    cls.sendall = _timed_send(cls.sendall)
    cls.send = _timed_send(cls.send)
    cls.recv = _timed_recv(cls.recv)
    cls.recv_into = _timed_recv(cls.recv_into)


# Ground truth for the libssl probes: each SSL read or write that moved n > 0
# bytes of an HTTP/1 connection is sent as one event (its first and last
# bytes; agent-ebpf/src/probes/tls.rs).
tls_events = 0


def _counted_tls(method):
    def counted(self, *args):
        global tls_events
        r = method(self, *args)
        n = r if isinstance(r, int) else len(r)
        if n > 0:
            tls_events += 1
        return r
    return counted


# SSLSocket.send (sendall loops over it) and SSLSocket.read (recv and
# recv_into call it) are its only calls into SSL_write_ex and SSL_read_ex.
ssl.SSLSocket.send = _counted_tls(ssl.SSLSocket.send)
ssl.SSLSocket.read = _counted_tls(ssl.SSLSocket.read)


def warm_up_tls():
    # The first time a process hits the libssl uprobes, the kernel sets up its
    # uprobe state before the agent's program runs: a one-off cost the client's
    # clock sees and the agent's cannot (the bench measures the probes' cost).
    # A TLS connection with an empty write takes it outside the timed plan; it
    # carries no HTTP and no counted data.
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with INSECURE.wrap_socket(raw) as s:
            try:
                s.send(b"")
            except ssl.SSLError:
                pass


def start():
    global first_send, first_send_ret, last_recv, last_recv_start
    first_send = first_send_ret = last_recv = last_recv_start = None


def elapsed(closed=False):
    """[least, most] seconds the agent's duration can be. Over TLS a response
    delimited by the connection's close ends when the connection does (libssl
    reports no end-of-stream read): `closed` when the caller has just closed it."""
    most_end = time.perf_counter() if closed else last_recv
    return [max(0.0, last_recv_start - first_send_ret), most_end - first_send]
AUTH = {"Authorization": "Basic " + SECRET}
port = int(sys.argv[1])
TLS = sys.argv[2:3] == ["--tls"]
SCHEME = "https" if TLS else "http"
INSECURE = ssl._create_unverified_context()  # the test's self-signed certificate
seq = 0
made = []


def rid():
    global seq
    seq += 1
    return f"req-{os.getpid()}-{seq}"


def record(client, method, path, code, rid_, bracket):
    made.append({"client": client, "method": method, "path": path, "code": code, "id": rid_,
                 "seconds": bracket})


def plan_items():
    # (method, code, size, mode, request body size)
    items = []
    for code in (200, 201, 404, 500):
        for size in (0, 1000, 100_000):
            for mode in ("cl", "chunked"):
                items.append(("GET", code, size, mode, 0))
        items.append(("POST", code, 10, "cl", 5000))
    items.append(("GET", 200, 2 * 1024 * 1024, "cl", 0))
    items.append(("GET", 200, 2 * 1024 * 1024, "chunked", 0))
    items.append(("GET", 200, 50_000, "close", 0))
    items.append(("HEAD", 200, 1234, "cl", 0))
    items.append(("PUT", 200, 0, "cl", 300_000))
    return items


def path_of(code, size, mode, n):
    return f"/mix/{code}/{size}/{mode}/{n}"


def new_conn():
    if TLS:
        return http.client.HTTPSConnection("127.0.0.1", port, context=INSECURE)
    return http.client.HTTPConnection("127.0.0.1", port)


def run_http_client(items):
    conn = new_conn()
    for n, (method, code, size, mode, body) in enumerate(items):
        path = path_of(code, size, mode, n)
        i = rid()
        payload = b"p" * body if body else None
        start()
        conn.request(method, path + "?token=q-secret", body=payload, headers={**AUTH, "X-Request-ID": i})
        resp = conn.getresponse()
        resp.read()
        if mode == "close":
            conn.close()
        record("http.client", method, path, resp.status, i, elapsed(mode == "close"))
        if mode == "close":
            conn = new_conn()
    conn.close()


def run_urllib(items):
    for n, (method, code, size, mode, body) in enumerate(items):
        path = path_of(code, size, mode, n)
        i = rid()
        req = urllib.request.Request(f"{SCHEME}://127.0.0.1:{port}{path}", method=method,
                                     data=b"u" * body if body else None, headers={**AUTH, "X-Request-ID": i})
        start()
        try:
            with urllib.request.urlopen(req, context=INSECURE if TLS else None) as r:
                r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            e.read()
            status = e.code
        record("urllib", method, path, status, i, elapsed(mode == "close"))


def run_httpx(items):
    with httpx.Client(base_url=f"{SCHEME}://127.0.0.1:{port}", verify=not TLS) as c:
        for n, (method, code, size, mode, body) in enumerate(items):
            path = path_of(code, size, mode, n)
            i = rid()
            start()
            r = c.request(method, path, content=b"h" * body if body else None, headers={**AUTH, "X-Request-ID": i})
            r.read()
            r.close()
            record("httpx", method, path, r.status_code, i, elapsed(mode == "close"))


def main():
    kept = None
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "plan":
            if TLS:
                warm_up_tls()
            made.clear()
            items = plan_items()
            run_http_client(items)
            run_urllib(items)
            run_httpx(items)
            print(json.dumps(made), flush=True)
        elif cmd[0] == "refused":
            try:
                urllib.request.urlopen(f"{SCHEME}://127.0.0.1:{cmd[1]}/x", timeout=5)
                print(json.dumps("connected?"), flush=True)
            except Exception as e:
                print(json.dumps(type(e).__name__), flush=True)
        elif cmd[0] == "garbage":
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(os.urandom(512).replace(b"\n", b"_"))
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            s.close()
            print(json.dumps("ok"), flush=True)
        elif cmd[0] == "open":
            kept = new_conn()
            kept.request("GET", "/mix/200/10/cl/open", headers=AUTH)
            kept.getresponse().read()
            print(json.dumps("ok"), flush=True)
        elif cmd[0] in ("more", "load"):
            conn = kept if cmd[0] == "more" else new_conn()
            t0 = time.perf_counter()
            for n in range(int(cmd[1])):
                conn.request("GET", f"/mix/200/10/cl/{cmd[0]}", headers=AUTH)
                conn.getresponse().read()
            print(json.dumps(time.perf_counter() - t0), flush=True)
        elif cmd[0] == "bulk":
            timed = []
            for n in range(int(cmd[1])):
                i = rid()
                start()
                kept.request("GET", f"/mix/200/{2 * 1024 * 1024}/cl/bulk", headers={**AUTH, "X-Request-ID": i})
                kept.getresponse().read()
                timed.append([i, elapsed()])
            print(json.dumps(timed), flush=True)
        elif cmd[0] == "tls_events":
            print(json.dumps(tls_events), flush=True)
        elif cmd[0] == "exit":
            break


if __name__ == "__main__":
    main()
