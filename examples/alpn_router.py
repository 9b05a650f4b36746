#!/usr/bin/env python3
"""Route connections by ALPN: several services share one UDP port.

Server: one listening socket per service, all bound to the same port, each
with its own ALPN. The kernel (and the user backend, which reproduces it)
reads the ALPN list from the client's Initial packet and hands the connection
to the listener that registered a matching ALPN (the way SMB over QUIC and
HTTP/3 can share port 443)::

    python examples/alpn_router.py server --port 4433

Client: pick a service with ``--alpn`` (a comma-separated list is offered in
preference order)::

    python examples/alpn_router.py client --port 4433 --cafile cert.pem --alpn upper hi

Services: ``echo`` (as is), ``upper`` (upper-cased), ``reverse`` (reversed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from _common import ensure_certificate, example_parser, run

from pyquic import aio

SERVICES: dict[str, Callable[[bytes], bytes]] = {
    "echo": lambda data: data,
    "upper": bytes.upper,
    "reverse": lambda data: data[::-1],
}


def service(name: str) -> Callable[[aio.Connection], Awaitable[None]]:
    """The connection handler of one service."""
    transform = SERVICES[name]

    async def handle(conn: aio.Connection) -> None:
        print(f"{name}: connection (negotiated ALPN {conn.alpn!r})", flush=True)
        async for reader, writer in conn:
            writer.write(f"[{name}] ".encode() + transform(await reader.read()))
            writer.write_eof()

    return handle


async def serve(args: argparse.Namespace) -> None:
    ensure_certificate(args, "alpn")
    servers: list[aio.Server] = []
    port = args.port
    for name in SERVICES:  # the first listener fixes the port (0: any), the others share it
        srv = await aio.start_server(service(name), args.host, port, alpns=name,
                                     certfile=args.cert, keyfile=args.key,
                                     backend=args.backend)
        port = srv.port
        servers.append(srv)
    print(f"services {', '.join(SERVICES)}", flush=True)
    print(f"listening on {args.host}:{port}", flush=True)
    try:
        await asyncio.gather(*(s.serve_forever() for s in servers))
    finally:
        for s in servers:
            s.close()


async def client(args: argparse.Namespace) -> int:
    conn = await aio.open_connection(args.host, args.port, alpns=args.alpn, cafile=args.cafile,
                                     verify=not args.insecure, hostname=args.hostname,
                                     backend=args.backend, handshake_timeout=args.timeout)
    async with conn:
        reader, writer = await conn.open_stream()
        writer.write(" ".join(args.message).encode())
        writer.write_eof()
        reply = await reader.read()
    print(f"ALPN {conn.alpn}: {reply.decode()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p, _, cli = example_parser(__doc__)
    cli.add_argument("--alpn", default="echo", help="ALPN(s) to offer, comma-separated")
    cli.add_argument("--timeout", type=float, default=10.0, help="handshake timeout (s)")
    cli.add_argument("message", nargs="*", default=["hello"])
    args = p.parse_args(argv)
    return run(args, serve, client)


if __name__ == "__main__":
    sys.exit(main())
