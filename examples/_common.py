"""Scaffolding shared by the examples, so that each one shows only its own feature.

Not part of pyquic: a throwaway certificate for servers started without one,
the ``server``/``client`` command line every example has, and the asyncio
entry point. The QUIC calls themselves stay in the examples.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


def throwaway_certificate(prefix: str) -> tuple[str, str]:
    """Write a fresh self-signed certificate for localhost to a new temporary
    directory (``/tmp/pyquic-PREFIX-*``); return the certificate and key paths."""
    from pyquic.tls.x509 import generate_self_signed

    cert, key = generate_self_signed("localhost", names=("localhost", "127.0.0.1", "::1"))
    d = Path(tempfile.mkdtemp(prefix=f"pyquic-{prefix}-"))
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    print(f"certificate: {d / 'cert.pem'}", flush=True)  # for the client's --cafile
    return str(d / "cert.pem"), str(d / "key.pem")


def ensure_certificate(args: argparse.Namespace, prefix: str) -> None:
    """Fill ``args.cert``/``args.key`` with a throwaway pair when none was given."""
    if not args.cert:
        args.cert, args.key = throwaway_certificate(prefix)


def example_parser(doc: str | None) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser,
                                             argparse.ArgumentParser]:
    """The command line of an example: ``server`` and ``client`` subcommands with the
    options they all share. Returns (main parser, server parser, client parser) so an
    example can add its own options."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    sub = p.add_subparsers(dest="role", required=True)
    roles = {}
    for name in ("server", "client"):
        s = roles[name] = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=4433)
        s.add_argument("--backend", choices=["kernel", "user"], default=None,
                       help="socket backend (default: the kernel module when loaded)")
    srv, cli = roles["server"], roles["client"]
    srv.add_argument("--cert", help="PEM certificate chain (default: a throwaway self-signed one)")
    srv.add_argument("--key", help="PEM private key")
    cli.add_argument("--cafile", help="trust these certificates (default: the system store)")
    cli.add_argument("--hostname", default="localhost", help="name to verify and send as SNI")
    cli.add_argument("--insecure", action="store_true", help="do not verify the server")
    return p, srv, cli


def run(args: argparse.Namespace,
        serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
        client: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> int:
    """Run ``serve(args)`` or ``client(args)`` as ``args.role`` says; the exit status."""
    try:
        if args.role == "server":
            asyncio.run(serve(args))
            return 0
        return asyncio.run(client(args))
    except KeyboardInterrupt:
        return 130
