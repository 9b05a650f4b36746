#!/usr/bin/env python3
"""Upload files over QUIC with progress: one stream per file, checked by SHA-256.

Server (stores uploads in a directory)::

    python examples/file_transfer.py server --port 4433 --output-dir uploads

Client (any number of files at once, each on its own stream)::

    python examples/file_transfer.py client --port 4433 --cafile cert.pem a.iso b.tar
    python examples/file_transfer.py client --port 4433 --cafile cert.pem --random 50000000

On a stream the client sends ``PUT <name> <size>\\n`` then the bytes and FIN;
the server answers ``OK <size> <sha256>\\n`` (or ``ERR <reason>\\n``).
``StreamWriter.drain()`` keeps the client from buffering more than the QUIC
flow-control windows let through. Without ``--cert`` the server makes a
throwaway self-signed certificate and prints its path.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path

from _common import ensure_certificate, example_parser, run

from pyquic import aio

ALPN = "pyquic-ft"
CHUNK = 64 * 1024


async def receive_file(out_dir: Path, reader: aio.StreamReader,
                       writer: aio.StreamWriter) -> None:
    """Store one upload and answer with its size and digest."""
    try:
        header = (await reader.readline()).decode().split()
        if len(header) != 3 or header[0] != "PUT":
            raise ValueError(f"bad request {header!r}")
        name, size = Path(header[1]).name, int(header[2])  # never leave out_dir
        if not name or name.startswith("."):
            raise ValueError(f"bad file name {header[1]!r}")
        digest = hashlib.sha256()
        received = 0
        # Local disk writes are short; a real server might hand them to a thread.
        with open(out_dir / name, "wb") as f:  # noqa: ASYNC230
            for _ in range(size + 2):  # each round reads at least one byte, then EOF
                chunk = await reader.read(CHUNK * 4)
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if received != size:
            raise ValueError(f"expected {size} bytes, got {received}")
        writer.write(f"OK {received} {digest.hexdigest()}\n".encode())
        print(f"stored {name}: {received} bytes", flush=True)
    except (ValueError, OSError) as exc:
        writer.write(f"ERR {exc}\n".encode())
        print(f"upload failed: {exc}", flush=True)
    writer.write_eof()


async def serve(args: argparse.Namespace) -> None:
    ensure_certificate(args, "ft")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    async def handle(conn: aio.Connection) -> None:
        tasks = [asyncio.ensure_future(receive_file(out_dir, r, w)) async for r, w in conn]
        await asyncio.gather(*tasks, return_exceptions=True)

    server = await aio.start_server(handle, args.host, args.port, alpns=ALPN,
                                    certfile=args.cert, keyfile=args.key, backend=args.backend)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


class Progress:
    """Prints ``name: 42% 12.3 MB/s`` at most every ``interval`` seconds (to stderr)."""

    def __init__(self, name: str, total: int, interval: float = 0.5) -> None:
        self.name, self.total, self.interval = name, total, interval
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-6) / 1e6
            pct = 100 * self.done // max(self.total, 1)
            print(f"{self.name}: {pct}% {rate:.1f} MB/s", file=sys.stderr, flush=True)


async def send_file(conn: aio.Connection, name: str, data: bytes) -> bool:
    """Upload ``data`` as ``name``; True when the server's digest matches."""
    reader, writer = await conn.open_stream()
    writer.write(f"PUT {name} {len(data)}\n".encode())
    progress = Progress(name, len(data))
    view = memoryview(data)
    for off in range(0, len(data), CHUNK):
        piece = view[off:off + CHUNK]
        writer.write(piece)
        await writer.drain()  # backpressure: wait while the socket is full
        progress.update(len(piece))
    writer.write_eof()
    reply = (await reader.readline()).decode().split()
    expected = ["OK", str(len(data)), hashlib.sha256(data).hexdigest()]
    ok = reply == expected
    print(f"{name}: {'verified' if ok else 'FAILED ' + ' '.join(reply)}", flush=True)
    return ok


async def client(args: argparse.Namespace) -> int:
    uploads: list[tuple[str, bytes]] = [(Path(f).name, Path(f).read_bytes()) for f in args.files]
    if args.random:
        uploads.append((f"random-{args.random}.bin", os.urandom(args.random)))
    if not uploads:
        print("nothing to send: give files or --random SIZE", file=sys.stderr)
        return 2
    conn = await aio.open_connection(args.host, args.port, alpns=ALPN, cafile=args.cafile,
                                     verify=not args.insecure, hostname=args.hostname,
                                     backend=args.backend)
    async with conn:
        start = time.monotonic()
        results = await asyncio.gather(*(send_file(conn, n, d) for n, d in uploads))
        elapsed = time.monotonic() - start
    total = sum(len(d) for _, d in uploads)
    print(f"sent {total} bytes in {elapsed:.2f} s ({total / max(elapsed, 1e-6) / 1e6:.1f} MB/s)")
    return 0 if all(results) else 1


def main(argv: list[str] | None = None) -> int:
    p, srv, cli = example_parser(__doc__)
    srv.add_argument("--output-dir", default="uploads", help="where uploads are stored")
    cli.add_argument("--random", type=int, default=0, metavar="SIZE",
                     help="also upload SIZE random bytes")
    cli.add_argument("files", nargs="*")
    args = p.parse_args(argv)
    return run(args, serve, client)


if __name__ == "__main__":
    sys.exit(main())
