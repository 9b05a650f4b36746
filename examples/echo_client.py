"""A QUIC echo client: sends each argument on its own stream and prints the echoes.

Usage::

    python examples/echo_client.py --ca /tmp/pyquic-echo-xxxx/cert.pem hello world [--port 4433]

Pairs with examples/echo_server.py. The streams are opened and written
before any echo is read, so the server handles them in parallel.
"""

from __future__ import annotations

import argparse
import socket

from pyquic.socket_api import socket as quic_socket
from pyquic.tls.driver import client_handshake

ALPN = "echo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4433)
    ap.add_argument("--ca", help="the server's certificate (or its CA)")
    ap.add_argument("messages", nargs="*", default=["hello", "QUIC"])
    args = ap.parse_args()

    sock = quic_socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    sock.connect((args.host, args.port))
    result = client_handshake(sock, "localhost", [ALPN], cafile=args.ca,
                              verify=args.ca is not None, timeout=10)
    print(f"connected, ALPN {result.alpn}")

    sent: dict[int, bytes] = {}
    for text in args.messages:
        sid = sock.open_stream()
        sent[sid] = text.encode()
        sock.send_stream(sid, sent[sid], fin=True)

    echoes: dict[int, bytearray] = {}
    done: set[int] = set()
    for _ in range(10_000):  # bounded: each turn reads one message
        if done == set(sent):
            break
        msg = sock.recv_message()
        if msg.stream_id in sent:
            echoes.setdefault(msg.stream_id, bytearray()).extend(msg.data)
            if msg.fin:
                done.add(msg.stream_id)
    for sid, data in sorted(echoes.items()):
        ok = "ok" if bytes(data) == sent[sid] else "MISMATCH"
        print(f"stream {sid}: {bytes(data).decode(errors='replace')!r} ({ok})")

    sock.set_close_info(0, b"bye")
    sock.close()


if __name__ == "__main__":
    main()
