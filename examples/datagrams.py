#!/usr/bin/env python3
"""Unreliable QUIC datagrams (RFC 9221): a ping service that measures RTT and loss.

Server (echoes every datagram)::

    python examples/datagrams.py server --port 4433

Client (sends ``--count`` numbered pings, ``--interval`` apart)::

    python examples/datagrams.py client --port 4433 --cafile cert.pem --count 20

Both ends allow datagrams with the transport parameter
``max_datagram_frame_size``; a datagram must fit in one packet (about 1200
bytes is always safe). Datagrams may be lost or reordered, never
retransmitted: the client reports what came back.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time

from _common import ensure_certificate, example_parser, run

from pyquic import aio

ALPN = "pyquic-ping"
MAX_DATAGRAM_FRAME_SIZE = 1400
PING = struct.Struct("!Id")  # sequence number, send time


async def handle(conn: aio.Connection) -> None:
    """Send every datagram straight back until the connection closes."""
    count = 0
    try:
        for _ in range(1 << 62):
            conn.send_datagram(await conn.recv_datagram())
            count += 1
    except aio.ConnectionClosed:
        pass
    print(f"echoed {count} datagrams", flush=True)


async def serve(args: argparse.Namespace) -> None:
    ensure_certificate(args, "dgram")
    server = await aio.start_server(handle, args.host, args.port, alpns=ALPN,
                                    certfile=args.cert, keyfile=args.key, backend=args.backend,
                                    max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def client(args: argparse.Namespace) -> int:
    conn = await aio.open_connection(args.host, args.port, alpns=ALPN, cafile=args.cafile,
                                     verify=not args.insecure, hostname=args.hostname,
                                     backend=args.backend,
                                     max_datagram_frame_size=MAX_DATAGRAM_FRAME_SIZE)
    rtts: dict[int, float] = {}
    padding = bytes(max(0, args.size - PING.size))

    async def receive() -> None:
        for _ in range(args.count):
            data = await conn.recv_datagram()
            seq, sent = PING.unpack_from(data)
            rtts[seq] = time.monotonic() - sent

    async with conn:
        receiver = asyncio.ensure_future(receive())
        for seq in range(args.count):
            conn.send_datagram(PING.pack(seq, time.monotonic()) + padding)
            await asyncio.sleep(args.interval)
        try:
            await asyncio.wait_for(receiver, args.wait)
        except asyncio.TimeoutError:
            pass  # lost datagrams stay lost
    for seq in sorted(rtts):
        print(f"ping {seq}: {rtts[seq] * 1000:.2f} ms")
    lost = args.count - len(rtts)
    print(f"{len(rtts)}/{args.count} datagrams came back ({100 * lost / args.count:.0f}% lost)")
    return 0 if rtts else 1


def main(argv: list[str] | None = None) -> int:
    p, _, cli = example_parser(__doc__)
    cli.add_argument("--count", type=int, default=10, help="datagrams to send")
    cli.add_argument("--interval", type=float, default=0.05, help="seconds between pings")
    cli.add_argument("--size", type=int, default=64, help="datagram size in bytes")
    cli.add_argument("--wait", type=float, default=2.0, help="seconds to wait for stragglers")
    args = p.parse_args(argv)
    if args.role == "client" and not PING.size <= args.size <= 1200:
        p.error(f"--size must be between {PING.size} and 1200")
    return run(args, serve, client)


if __name__ == "__main__":
    sys.exit(main())
