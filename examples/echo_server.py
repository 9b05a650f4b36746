"""A QUIC echo server: every stream a client opens is sent back to it, then closed.

Usage::

    python examples/echo_server.py --cert cert.pem --key key.pem [--port 4433]

Without --cert/--key it makes a throwaway self-signed certificate for
"localhost" and prints its path (give it to the client with --ca). Works on
the kernel and the user backend alike: only the socket API is used
(socket/bind/listen/accept, the handshake driver, and recvmsg/sendmsg through
the typed helpers).
"""

from __future__ import annotations

import argparse
import socket
import threading
from typing import Any

from _common import throwaway_certificate

from pyquic.abi import SOL_QUIC, EventType, SockOpt, TransportParam
from pyquic.socket_api import socket as quic_socket
from pyquic.tls.driver import server_handshake

ALPN = "echo"


def serve(sock: Any, peer: tuple, cert: str, key: str) -> None:
    """Handshake, then echo each stream's bytes back with FIN once the client's FIN arrives."""
    try:
        server_handshake(sock, cert, key, alpns=[ALPN], timeout=10)
        sock.set_event(EventType.CONNECTION_CLOSE, True)
        pending: dict[int, bytearray] = {}
        while True:
            msg = sock.recv_message()
            if msg.is_event:  # the client closed the connection
                print(f"{peer[0]}:{peer[1]}: closed ({msg.event})")
                return
            if msg.stream_id is None:
                continue
            buf = pending.setdefault(msg.stream_id, bytearray())
            buf += msg.data
            if msg.fin:
                sock.send_stream(msg.stream_id, bytes(buf), fin=True)
                print(f"{peer[0]}:{peer[1]}: stream {msg.stream_id}: echoed {len(buf)} bytes",
                      flush=True)
                del pending[msg.stream_id]
    except OSError as exc:
        print(f"{peer[0]}:{peer[1]}: {exc}")
    finally:
        sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4433)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    cert, key = args.cert, args.key
    if cert is None:
        cert, key = throwaway_certificate("echo")  # prints its path, for the client's --ca

    listener = quic_socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(SOL_QUIC, SockOpt.ALPN, ALPN.encode())
    listener.setsockopt(SOL_QUIC, SockOpt.TRANSPORT_PARAM,
                        TransportParam(max_idle_timeout=30_000_000).pack())
    listener.bind((args.host, args.port))
    listener.listen()
    backend = getattr(listener, "backend", "kernel")
    print(f"echo server on {args.host}:{args.port} ({backend} backend)", flush=True)
    try:
        while True:
            conn, peer = listener.accept()
            threading.Thread(target=serve, args=(conn, peer, cert, key), daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
