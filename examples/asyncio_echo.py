#!/usr/bin/env python3
"""An asyncio echo service over QUIC: one stream per message, many at once.

Server::

    python examples/asyncio_echo.py server --port 4433 [--cert cert.pem --key key.pem]

Client (prints each reply; messages travel on concurrent streams)::

    python examples/asyncio_echo.py client --port 4433 --cafile cert.pem hello world

Without ``--cert`` the server makes a throwaway self-signed certificate and
prints its path, for the client's ``--cafile``. ``--backend kernel|user``
picks the socket backend (default: the kernel module when it is loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from _common import ensure_certificate, example_parser, run

from pyquic import aio

ALPN = "echo"


async def handle(conn: aio.Connection) -> None:
    """Echo every stream the client opens, until the client closes the connection."""
    peer = conn.remote_address
    print(f"connection from {peer[0]}:{peer[1]} ({conn.backend} backend)", flush=True)
    tasks = []
    async for reader, writer in conn:
        async def echo(reader: aio.StreamReader, writer: aio.StreamWriter) -> None:
            async for line in reader:  # line by line, so long streams echo as they go
                writer.write(line)
                await writer.drain()
            writer.write_eof()
        tasks.append(asyncio.ensure_future(echo(reader, writer)))
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"connection from {peer[0]}:{peer[1]} closed", flush=True)


async def serve(args: argparse.Namespace) -> None:
    ensure_certificate(args, "echo")
    server = await aio.start_server(handle, args.host, args.port, alpns=ALPN,
                                    certfile=args.cert, keyfile=args.key, backend=args.backend)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def client(args: argparse.Namespace) -> int:
    conn = await aio.open_connection(args.host, args.port, alpns=ALPN, cafile=args.cafile,
                                     verify=not args.insecure, hostname=args.hostname,
                                     backend=args.backend)
    async with conn:
        async def one(message: str) -> bytes:
            reader, writer = await conn.open_stream()
            writer.write(message.encode() + b"\n")
            writer.write_eof()
            return await reader.read()

        replies = await asyncio.gather(*(one(m) for m in args.messages))
    for reply in replies:
        print(reply.decode().rstrip("\n"))
    return 0 if [r.rstrip(b"\n").decode() for r in replies] == args.messages else 1


def main(argv: list[str] | None = None) -> int:
    p, _, cli = example_parser(__doc__)
    cli.add_argument("messages", nargs="*", default=["hello", "QUIC"])
    args = p.parse_args(argv)
    return run(args, serve, client)


if __name__ == "__main__":
    sys.exit(main())
