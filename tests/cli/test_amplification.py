"""Interop runner "amplificationlimit": a pyquic hq server with a large certificate chain
must not send more than three times what it received from an unvalidated client
(RFC 9000 §8.1), with pyquic and with aioquic as the client.

The client's traffic passes a proxy that, once the server has started to answer,
drops every further client datagram: the server cannot validate the address and
its first flight (about 9 KB of certificates) does not fit in its 3x budget.
After ``BLOCKED`` seconds the client's datagrams go through again, and the
handshake and a file transfer complete, checked by sha256.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from tests.cli.support import (
    Background,
    cli_env,
    free_udp_port,
    sha256,
    write_large_chain,
)
from tests.cli.test_interop_aioquic import HqClient
from tests.netproxy import NetProxy

BLOCKED = 3.0  # seconds: the server's first flight and at least one PTO (RFC 9002 §6.2)
FACTOR = 3  # RFC 9000 §8.1


class Gate:
    """A NetProxy ``mutate`` hook: client datagrams pass until the server has answered,
    then are dropped until :meth:`open`."""

    def __init__(self) -> None:
        self.answered = False
        self.opened = threading.Event()

    def __call__(self, data: bytes, direction: str) -> bytes | None:
        if direction == "s2c":
            self.answered = True
            return data
        if self.answered and not self.opened.is_set():
            return None
        return data

    def open(self) -> None:
        self.opened.set()


def start_server(server_factory: type, tmp_path: Path) -> tuple[int, str, bytes, int]:
    """An hq server with a ~9 KB chain; (port, root CA path, the served file, chain size)."""
    chain, key, root, size = write_large_chain(tmp_path / "chain", names=170)
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(150_000)
    (www / "f.bin").write_bytes(body)
    port = free_udp_port()
    server_factory(["server", "--host", "127.0.0.1", "--port", str(port), "--www", str(www),
                    "--cert", chain, "--key", key], "hq server on",
                   TESTCASE="amplificationlimit")
    return port, root, body, size


def check_budget(stats: dict[str, Any], chain_size: int) -> None:
    """What the server sent (s2c bytes in) against what reached it (c2s bytes out)."""
    got, sent = stats["c2s"]["bytes_out"], stats["s2c"]["bytes_in"]
    assert 8000 <= chain_size <= 12_000, chain_size
    assert got >= 1200, stats  # the client's Initial is padded (RFC 9000 §14.1)
    assert sent > 0, "the server sent nothing"
    assert sent <= FACTOR * got, f"server sent {sent} B after receiving {got} B: {stats}"
    assert sent < chain_size, "the whole chain left before the address was validated"


def test_pyquic_client(tmp_path: Path, server_factory: type) -> None:
    port, root, body, size = start_server(server_factory, tmp_path)
    gate = Gate()
    with NetProxy(("127.0.0.1", port), mutate=gate, lifetime=120) as proxy:
        dl = tmp_path / "dl"
        client = Background([sys.executable, "-m", "pyquic", "client", "--downloads", str(dl),
                             "--ca", root, "--timeout", "60",
                             f"https://localhost:{proxy.address[1]}/f.bin"],
                            tmp_path / "client.log", cli_env(TESTCASE="amplificationlimit"))
        try:
            time.sleep(BLOCKED)
            blocked = proxy.stats()
            gate.open()
            rc = client.wait(60)
        finally:
            out = client.stop()
    check_budget(blocked, size)
    assert blocked["c2s"]["dropped"] > 0, blocked  # the client did retransmit meanwhile
    assert rc == 0, out
    assert sha256(dl / "f.bin") == sha256(body)


def test_aioquic_client(tmp_path: Path, server_factory: type) -> None:
    port, root, body, size = start_server(server_factory, tmp_path)
    gate = Gate()
    state: dict[str, Any] = {}

    async def fetch(proxy_port: int) -> bytes:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["hq-interop"],
                                server_name="localhost")
        cfg.load_verify_locations(root)
        cfg.verify_mode = ssl.CERT_REQUIRED
        async with connect("127.0.0.1", proxy_port, configuration=cfg,
                           create_protocol=HqClient) as client:
            assert isinstance(client, HqClient)
            return await client.get("/f.bin")

    async def main(proxy: NetProxy) -> bytes:
        task = asyncio.ensure_future(fetch(proxy.address[1]))
        await asyncio.sleep(BLOCKED)
        assert not task.done(), "the handshake completed while the client was cut off"
        state["blocked"] = proxy.stats()
        gate.open()
        return await asyncio.wait_for(task, 60)

    with NetProxy(("127.0.0.1", port), mutate=gate, lifetime=120) as proxy:
        got = asyncio.run(main(proxy))
    check_budget(state["blocked"], size)
    assert sha256(got) == sha256(body)
