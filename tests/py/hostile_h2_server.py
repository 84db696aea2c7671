"""An HTTP/2 server over TLS that attacks the reader of its responses, for
the agent's limit tests, and counts what it sent.

Usage: hostile_h2_server.py PORT CERT KEY. Prints "ready". Frames are written
by hand (no h2 library would send these); one request per connection, then
the connection is closed. By the request's :path:
  /flood/<MiB>          HEADERS (END_STREAM, no END_HEADERS) followed by <MiB>
                        MiB of CONTINUATION frames of 16 KiB, then an empty
                        CONTINUATION with END_HEADERS
  /table                a header block that starts with a dynamic table size
                        update to 2^28 (the client allowed 2^32-1)
  /huffman-frame/<KiB>  one HEADERS frame of <KiB> KiB of fields with a
                        one-byte Huffman-coded name and value each (the client
                        allowed frames of 16 MiB)
  /huffman-block/<KiB>  the same as a header block of <KiB> KiB in frames of 16 KiB
  /ok                   :status 200 and a 2-byte body
  /__counts             over HTTP/1.1 (no h2 in ALPN), from the test: JSON
                        {scenario: times served}
"""
import json
import socket
import ssl
import struct
import sys
import threading
from collections import Counter

from hpack import Decoder

HEADERS, SETTINGS, CONTINUATION, DATA = 1, 4, 9, 0
END_STREAM, END_HEADERS = 0x1, 0x4
FRAME = 16384
STATUS_200 = b"\x88"
# A literal field without indexing, name "a" and value "a", each Huffman-coded in one byte.
HUFFMAN_FIELD = b"\x00\x81\x1f\x81\x1f"

counts = Counter()
lock = threading.Lock()


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def read_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def request_path(sock):
    """Reads the client's preface and frames up to its first header block."""
    read_exactly(sock, 24)
    block, stream = b"", 0
    while True:
        head = read_exactly(sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        payload = read_exactly(sock, length)
        if kind in (HEADERS, CONTINUATION):
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            block += payload
            if flags & END_HEADERS:
                headers = dict(Decoder().decode(block))
                return headers[":path"], stream


def header_block_frames(stream, block, flags):
    """A header block in frames of at most 16 KiB."""
    pieces = [block[i:i + FRAME] for i in range(0, len(block), FRAME)] or [b""]
    out = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        kind = HEADERS if i == 0 else CONTINUATION
        out += frame(kind, (flags if i == 0 else 0) | (END_HEADERS if last else 0), stream, piece)
    return out


def huffman_block(kib):
    return STATUS_200 + HUFFMAN_FIELD * (kib * 1024 // len(HUFFMAN_FIELD))


def respond(sock, path, stream):
    parts = path.strip("/").split("/")
    scenario = parts[0]
    if scenario == "flood":
        sock.sendall(frame(HEADERS, END_STREAM, stream, STATUS_200))
        filler = frame(CONTINUATION, 0, stream, b"\x00" * FRAME)
        for _ in range(int(parts[1]) * 1024 * 1024 // FRAME):
            sock.sendall(filler)
        sock.sendall(frame(CONTINUATION, END_HEADERS, stream))
    elif scenario == "table":
        # 001xxxxx with a 5-bit prefix: 31, then 2^28 - 31 in 7-bit groups.
        update, rest = bytearray([0x3F]), (1 << 28) - 31
        while rest >= 128:
            update.append(rest % 128 | 0x80)
            rest //= 128
        update.append(rest)
        sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream, bytes(update) + STATUS_200))
    elif scenario == "huffman-frame":
        sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, stream, huffman_block(int(parts[1]))))
    elif scenario == "huffman-block":
        sock.sendall(header_block_frames(stream, huffman_block(int(parts[1])), END_STREAM))
    else:
        sock.sendall(frame(HEADERS, END_HEADERS, stream, STATUS_200) + frame(DATA, END_STREAM, stream, b"ok"))
    with lock:
        counts[scenario] += 1


def serve_h2(sock):
    sock.sendall(frame(SETTINGS, 0, 0))
    path, stream = request_path(sock)
    respond(sock, path, stream)


def serve_counts(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
    with lock:
        body = json.dumps(dict(counts)).encode()
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def handle(raw, ctx):
    try:
        with ctx.wrap_socket(raw, server_side=True) as sock:
            if sock.selected_alpn_protocol() == "h2":
                serve_h2(sock)
            else:
                serve_counts(sock)
    except (OSError, ssl.SSLError, ConnectionError):
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
