"""An unwatched TLS loop through the system libssl, for `cargo xtask bench`'s host tax.

Usage: bench_tls_loop.py CERT KEY N. A TLS client and server in this one process,
joined by memory BIOs (ssl.SSLObject, as asyncio does TLS), shake hands, then
N times: the client writes a 64-byte record (SSL_write_ex) and the server reads
it (SSL_read_ex). Prints {"iterations": N, "cpu_ns": ...}: the process's CPU
time (time.process_time_ns) over the N iterations, handshake excluded.
"""
import json
import ssl
import sys
import time


def pump(src, dst):
    data = src.read()
    if data:
        dst.write(data)


def main():
    cert, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl._create_unverified_context()
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        pump(c_out, s_in)
        pump(s_out, c_in)
    # TLS 1.3 tickets arrive after the handshake: let the client read them.
    server.write(b"x")
    pump(s_out, c_in)
    client.read(1)
    payload = b"r" * 64
    cpu = time.process_time_ns()
    for _ in range(n):
        client.write(payload)
        s_in.write(c_out.read())
        server.read(64)
    cpu = time.process_time_ns() - cpu
    print(json.dumps({"iterations": n, "cpu_ns": cpu}))


if __name__ == "__main__":
    main()
