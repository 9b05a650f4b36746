#!/usr/bin/env python3
"""Session resumption and 0-RTT: reconnect with a session ticket and send data early.

Server (an upper-casing echo that reports how each client connected)::

    python examples/resumption.py server --port 4433

Client: a full handshake first, then a resumed one that sends its request as
0-RTT data (RFC 9001 §4.6), before the handshake completes::

    python examples/resumption.py client --port 4433 --cafile cert.pem

``--session-file`` keeps the session between runs: the first run stores it,
the next ones resume from it. A server accepts 0-RTT only with a ticket it
issued itself (the kernel derives the ticket key from the client's address).
Early data may be replayed by an attacker: send only requests that are safe to
repeat (RFC 8446 §8).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import ensure_certificate, example_parser, run

from pyquic import aio

ALPN = "pyquic-resume"


async def handle(conn: aio.Connection) -> None:
    hs = conn.handshake
    print(f"connection: resumed={hs.session_resumed} early_data={hs.early_data_accepted}",
          flush=True)
    async for reader, writer in conn:
        writer.write((await reader.read()).upper())
        writer.write_eof()


async def serve(args: argparse.Namespace) -> None:
    ensure_certificate(args, "resume")
    server = await aio.start_server(handle, args.host, args.port, alpns=ALPN,
                                    certfile=args.cert, keyfile=args.key, backend=args.backend)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def client(args: argparse.Namespace) -> int:
    common = {"alpns": ALPN, "cafile": args.cafile, "verify": not args.insecure,
              "hostname": args.hostname, "backend": args.backend}
    session_file = Path(args.session_file) if args.session_file else None
    session = session_file.read_bytes() if session_file and session_file.exists() else None

    if session is None:
        conn = await aio.open_connection(args.host, args.port, **common)
        async with conn:
            reader, writer = await conn.open_stream()
            writer.write(b"full handshake")
            writer.write_eof()
            print(f"1st connection: {(await reader.read()).decode()}")
            # The ticket arrives after the handshake; session_data() waits for it.
            session = await conn.session_data(timeout=5.0)
        if not session:
            print("the server sent no session ticket", file=sys.stderr)
            return 1
        if session_file:
            session_file.write_bytes(session)

    conn = await aio.open_connection(args.host, args.port, session=session,
                                     early_data=args.message.encode(), **common)
    async with conn:
        hs = conn.handshake
        print(f"2nd connection: resumed={hs.session_resumed} "
              f"0-RTT accepted={hs.early_data_accepted}")
        assert conn.early_stream is not None
        reader, writer = conn.early_stream
        writer.write_eof()
        reply = await reader.read()
        print(f"2nd connection: {reply.decode()}")
        if session_file:  # keep the newest ticket for the next run
            newer = await conn.session_data(timeout=2.0)
            if newer:
                session_file.write_bytes(newer)
    return 0 if hs.session_resumed and reply == args.message.upper().encode() else 1


def main(argv: list[str] | None = None) -> int:
    p, _, cli = example_parser(__doc__)
    cli.add_argument("--session-file", help="load/store the session here")
    cli.add_argument("--message", default="sent as 0-RTT data", help="the early request")
    args = p.parse_args(argv)
    return run(args, serve, client)


if __name__ == "__main__":
    sys.exit(main())
