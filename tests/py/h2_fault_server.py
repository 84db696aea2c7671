"""An HTTP/2 server (the `h2` library over TLS) that misbehaves on purpose,
for the RST_STREAM and GOAWAY tests, and counts what it did.

Usage: h2_fault_server.py PORT CERT KEY. Prints "ready".
  /rst/<tag>      the stream is reset (RST_STREAM INTERNAL_ERROR), no response
  /goaway/<tag>   the first time: GOAWAY naming the stream before it as the last
                  processed, so this one is unanswered (clients retry it on a new
                  connection); again: 200
  /mix/<code>/<size>/<tag>   <code> with a <size>-byte body
  /__counts       over HTTP/1.1 (no h2 in ALPN), from the test: JSON
                  [method, path, outcome, n] with outcome a code, "rst" or "goaway"
"""
import json
import socket
import ssl
import sys
import threading
from collections import Counter

import h2.config
import h2.connection
import h2.events

counts = Counter()
goaway_sent = set()
lock = threading.Lock()


def count(method, path, outcome):
    with lock:
        counts[(method, path, outcome)] += 1


def serve_h2(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    pending = {}
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                pending[event.stream_id] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if isinstance(event, (h2.events.StreamEnded, h2.events.RequestReceived)) and event.stream_id in pending:
                headers = pending[event.stream_id]
                if isinstance(event, h2.events.RequestReceived) and not event.stream_ended:
                    continue
                del pending[event.stream_id]
                respond(conn, event.stream_id, headers[":method"], headers[":path"])
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
            return


def respond(conn, stream_id, method, path):
    parts = path.split("?")[0].split("/")
    if parts[1] == "rst":
        count(method, path, "rst")
        conn.reset_stream(stream_id, error_code=2)
        return
    if parts[1] == "goaway":
        with lock:
            first = path not in goaway_sent
            goaway_sent.add(path)
        if first:
            count(method, path, "goaway")
            conn.close_connection(error_code=0, last_stream_id=max(stream_id - 2, 0))
            return
        code, size = 200, 2
    else:
        code, size = int(parts[2]), int(parts[3])
    count(method, path, str(code))
    conn.send_headers(stream_id, [(":status", str(code)), ("content-length", str(size))])
    conn.send_data(stream_id, b"x" * size, end_stream=True)


def serve_h1(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
    with lock:
        body = json.dumps({"counts": [[m, p, o, n] for (m, p, o), n in sorted(counts.items())]}).encode()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def handle(raw, ctx):
    try:
        with ctx.wrap_socket(raw, server_side=True) as sock:
            if sock.selected_alpn_protocol() == "h2":
                serve_h2(sock)
            else:
                serve_h1(sock)
    except (OSError, ssl.SSLError):
        pass


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=handle, args=(raw, ctx), daemon=True).start()


if __name__ == "__main__":
    main()
