"""Writes the seed corpora of the fuzz targets (agent/fuzz/seeds/<target>/),
each in its target's input format, from real protocol bytes: HTTP/1 and
HTTP/2 sessions as the `h2`/`hpack` libraries write them (the ones the
tests' peers use). Run with the test virtualenv's Python:

    .venv/bin/python agent/fuzz/seeds/make_seeds.py
"""
import os

import h2.config
import h2.connection
import h2.events
from hpack import Encoder

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(bytes(data))


def h2_session(paths, statuses):
    """(from_client, bytes) of one HTTP/2 connection, preface included."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    out = []

    def pump():
        moved = True
        while moved:
            moved = False
            c = client.data_to_send()
            if c:
                out.append((True, c))
                server.receive_data(c)
                moved = True
            s = server.data_to_send()
            if s:
                out.append((False, s))
                client.receive_data(s)
                moved = True

    pump()
    for i, (path, status) in enumerate(zip(paths, statuses)):
        sid = 1 + 2 * i
        method = "POST" if i % 2 else "GET"
        headers = [(":method", method), (":path", path), (":scheme", "https"), (":authority", "wats"),
                   ("authorization", "Basic c2VjcmV0"), ("x-request-id", f"r-{i}")]
        client.send_headers(sid, headers, end_stream=method == "GET")
        if method == "POST":
            client.send_data(sid, b'{"report": 1}', end_stream=True)
        pump()
        server.send_headers(sid, [(":status", str(status)), ("content-type", "application/json")])
        server.send_data(sid, b'{"ok": true}', end_stream=True)
        pump()
    return out


def steps(chunks, take, direction_bit):
    """The http1/http2 targets' step encoding: a step byte whose low bits
    give the piece length (`take(step)`), bit 7 the direction."""
    sizes = sorted({take(s) for s in range(64)}, reverse=True)
    out = []
    for bit, data in chunks:
        while data:
            n = next(n for n in sizes if n <= len(data))
            step = next(s for s in range(64) if take(s) == n)
            out.append(step | (0x80 if bit == direction_bit else 0))
            out.extend(data[:n])
            data = data[n:]
    return out


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PATHS = ["/api/App/Version", "/api/Report/WSJF", "/api/Report/Wsjf/7f3e2a10-aaaa-bbbb-cccc-0123456789ab?detail=1"]
STATUSES = [200, 500, 404]


def strip_preface(session):
    first = session[0][1]
    assert first.startswith(PREFACE)
    return [(True, first[len(PREFACE):])] + session[1:]


def main():
    session = strip_preface(h2_session(PATHS, STATUSES))
    h2_take = lambda s: s * 4 + 1
    # http2 (client role): bit 7 set = the client (the target) writes.
    write("http2", "session", [0] + steps(session, h2_take, True))
    # http2_server: the target reads the requests; bit 7 set = it writes responses.
    write("http2_server", "session", [0] + steps(session, h2_take, False))
    write("http2_server", "session_socket", [8] + steps(session, h2_take, False))

    h1 = [(True, b"POST /api/Report/WSJF HTTP/1.1\r\nHost: wats\r\nContent-Length: 2\r\n\r\n{}"),
          (False, b"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nerr"),
          (True, b"GET /api/App/Version?x=1 HTTP/1.1\r\nHost: wats\r\n\r\n"),
          (False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")]
    write("http1", "session", [0] + steps(h1, lambda s: s + 1, True))

    enc = Encoder()
    enc.header_table_size = 8192
    blocks = [enc.encode([(":method", "GET"), (":path", p), (":scheme", "https"), ("x-request-id", f"r-{i}"),
                          ("user-agent", "python-httpx/0.28.1")], huffman=bool(i % 2)) for i, p in enumerate(PATHS)]
    blocks += [enc.encode([(":status", str(s)), ("content-type", "application/json")], huffman=True) for s in STATUSES]
    write("hpack", "blocks", [8] + [b for block in blocks for b in len(block).to_bytes(2, "little") + block])

    paths = [b"\x00/api/Report/Wsjf/123?x=1", b"\x01/orders/12345/items/9", b"\x00http://wats:8080/api/App/Version",
             b"\x00/custom/line-7/status", b"\x01/u/550e8400-e29b-41d4-a716-446655440000/raw"]
    write("endpoint", "paths", b"\xff".join(paths))

    # net_pipeline: connect conn 0 (the target a client), its requests and
    # responses, close; then an HTTP/2 session over libssl on conn 2, closed.
    def io(op, data):
        out = []
        while data:
            out += [op, len(data[:255])] + list(data[:255])
            data = data[255:]
        return out

    # The failed POST twice: the second is a retry.
    ops = [0x00]
    for egress, data in h1[:2] + h1:
        ops += io(0x03 if egress else 0x04, data)
    ops += [0x02]
    ops += io(0x25, PREFACE)
    for from_client, data in session:
        ops += io(0x25 if from_client else 0x26, data)
    ops += [0xa2]
    write("net_pipeline", "sessions", ops)


if __name__ == "__main__":
    main()
