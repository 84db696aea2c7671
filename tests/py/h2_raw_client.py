"""The watched client of the hostile HTTP/2 tests: a minimal HTTP/2 client
over TLS (Python's ssl, so libssl, so the agent's TLS probes) that sends one
request per connection and reads whatever the server sends until it closes,
without judging it (a real client library would give up on the first
oversized frame, and the agent would never see the rest).

Usage: h2_raw_client.py PORT. Prints "ready", then per line on stdin:
  get PATH   a new connection, SETTINGS allowing a 2^32-1 byte HPACK table
             and 16 MiB frames, GET PATH; answers the bytes read
  exit       ends the process
Reads are paced (2 ms per 256 KiB) so the agent's ring never overflows:
the tests compare exact counts.
"""
import socket
import ssl
import struct
import sys
import time

from hpack import Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PORT = int(sys.argv[1])


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def get(path):
    ctx = ssl._create_unverified_context()
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", PORT)) as raw, ctx.wrap_socket(raw) as sock:
        # SETTINGS_HEADER_TABLE_SIZE = 2^32-1, SETTINGS_MAX_FRAME_SIZE = 2^24-1.
        settings = struct.pack(">HI", 1, 0xFFFFFFFF) + struct.pack(">HI", 5, 0xFFFFFF)
        block = Encoder().encode([(":method", "GET"), (":path", path), (":scheme", "https"),
                                  (":authority", "127.0.0.1")])
        sock.sendall(PREFACE + frame(4, 0, 0, settings) + frame(1, 0x5, 1, block))
        total, paced = 0, 0
        while True:
            data = sock.recv(65536)
            if not data:
                return total
            total += len(data)
            if total - paced >= 256 * 1024:
                paced = total
                time.sleep(0.002)


def main():
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "get":
            print(get(cmd[1]), flush=True)
        elif cmd[0] == "exit":
            return


if __name__ == "__main__":
    main()
