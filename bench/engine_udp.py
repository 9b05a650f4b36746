"""pyquic's engine in a request/response ping-pong over plain UDP sockets.

The same exchange as ``bench/run.py``'s round-trip figure (one stream,
64-byte request, 64-byte echo, two processes on loopback, each sleeping in
``epoll`` until the other's datagram arrives), but each process drives a
:class:`~pyquic.engine.connection.QuicConnection` directly: ``recvfrom``,
``receive_datagram``, ``recv``, ``send_stream``, ``datagrams_to_send_from``,
``sendto``.  No socket API, no I/O loop, no threads, no cmsg.  The two
connections complete their TLS handshake in memory first
(``bench/engine_micro.py``'s setup).

Between ``bench/floor.py`` (UDP and AES-GCM, no QUIC) and ``bench/phases.py``
(the user backend's socket API), it separates the cost of the engine from
the cost of the socket layer above it: what pyquic's socket API adds to a
round trip is this figure's round trip subtracted from run.py's.

    python bench/engine_udp.py --round-trips 20000
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from engine_micro import _NEW, _setup
from floor import wait_datagram

from pyquic.engine.connection import QuicConnection
from tests.engine.netsim import CLIENT_ADDR, SERVER_ADDR

_MSG = bytes(64)


def _side(conn: QuicConnection, sock: socket.socket, peer: tuple[str, int], count: int,
          client: bool, base: float, busy: float) -> tuple[float, float]:
    """``count`` exchanges, each wait polling for up to ``busy`` seconds before
    it sleeps; returns (wall seconds, mean microseconds from the
    wake-up with the peer's datagram to the ``sendto`` of the answer, the
    echoing side only)."""
    me, them = (CLIENT_ADDR, SERVER_ADDR) if client else (SERVER_ADDR, CLIENT_ADDR)
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    ns = time.perf_counter_ns
    critical = 0

    def send(now: float) -> None:
        for datagram, _dst, _src in conn.datagrams_to_send_from(now):
            sock.sendto(datagram, peer)

    def timers(now: float) -> None:  # after the send, off the round trip's path
        due = conn.next_timer()
        if due is not None and due <= now:
            conn.handle_timer(now)
            send(now)

    t0 = time.perf_counter()
    for i in range(count):
        if client:
            now = base + time.monotonic()
            conn.send_stream(0, _MSG, _NEW if i == 0 else 0, True)
            send(now)
            timers(now)
        got = 0
        for _ in range(1000):  # datagrams per exchange (one, unless a timer sent more)
            wait_datagram(ep, busy)
            woke = ns()
            data = sock.recvfrom(65536)[0]
            now = base + time.monotonic()
            conn.receive_datagram(data, them, me, now)
            item = conn.recv(65536)
            if item is not None:
                got += len(item.data)
            if got >= len(_MSG):
                break
        else:
            raise SystemExit("no answer in 1000 datagrams")
        if not client:
            conn.send_stream(0, _MSG, 0, True)
            send(now)
            critical += ns() - woke
        timers(now)
    return time.perf_counter() - t0, critical / count / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    ap.add_argument("--busy-poll", type=float, default=0.0, metavar="US",
                    help="poll without sleeping for up to US microseconds before each "
                         "wait, as the user backend does (PYQUIC_BUSY_POLL); default 0")
    args = ap.parse_args()
    busy = args.busy_poll * 1e-6
    cli, srv = _setup(1200)
    base = max(cli._now, srv._now) - time.monotonic()  # the engines' clock goes on
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echoing side
        try:
            _dt, crit = _side(srv, b, a.getsockname(), args.round_trips, False, base, busy)
            os.write(wfd, f"{crit:.1f}".encode())
        finally:
            os._exit(0)
    try:
        dt, _ = _side(cli, a, b.getsockname(), args.round_trips, True, base, busy)
    finally:
        os.waitpid(pid, 0)
    echo_us = os.read(rfd, 64).decode() or "?"
    print(f"engine over UDP: {args.round_trips / dt:,.0f} round trips/s "
          f"({dt / args.round_trips * 1e6:.1f} us each); echoing side from wake-up "
          f"to its answer's sendto return: {echo_us} us")


if __name__ == "__main__":
    main()
