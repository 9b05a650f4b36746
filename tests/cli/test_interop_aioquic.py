"""hq-interop between pyquic's CLI and aioquic (a test dependency), both directions.

Each direction is a real file transfer over loopback checked by sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import CipherSuite

from tests.cli.support import free_udp_port, run_cli
from tests.cli.support import sha256 as sha
from tests.netproxy import LinkConfig, NetProxy

SIZES = {"a.bin": 200_000, "b.bin": 1_000_003, "c.bin": 17}


def make_www(tmp_path: Path, sizes: dict[str, int]) -> tuple[Path, dict[str, bytes]]:
    """``tmp_path/www`` holding random files of these sizes; (the directory, the files)."""
    www = tmp_path / "www"
    www.mkdir()
    files = {n: os.urandom(s) for n, s in sizes.items()}
    for n, data in files.items():
        (www / n).write_bytes(data)
    return www, files


class HqClient(QuicConnectionProtocol):
    """aioquic side of an hq-interop client: GET on one stream per file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: dict[int, bytearray] = {}
        self.waiters: dict[int, asyncio.Future[bytes]] = {}

    async def get(self, path: str) -> bytes:
        sid = self._quic.get_next_available_stream_id()
        self.bodies[sid] = bytearray()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters[sid] = fut
        self._quic.send_stream_data(sid, f"GET {path}\r\n".encode(), end_stream=True)
        self.transmit()
        return await fut

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived) and event.stream_id in self.bodies:
            self.bodies[event.stream_id] += event.data
            if event.end_stream:
                self.waiters[event.stream_id].set_result(bytes(self.bodies[event.stream_id]))


class HqServer(QuicConnectionProtocol):
    """aioquic side of an hq-interop server serving ``ROOT``."""

    ROOT = Path(".")
    INSTANCES: ClassVar[list[HqServer]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reqs: dict[int, bytearray] = {}
        HqServer.INSTANCES.append(self)

    def recv_key_phase(self) -> int | None:
        """The key phase of the 1-RTT packets last received (RFC 9001 §6)."""
        pair = self._quic._cryptos.get(tls.Epoch.ONE_RTT)
        return None if pair is None else int(pair.recv.key_phase)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            buf = self.reqs.setdefault(event.stream_id, bytearray())
            buf += event.data
            if event.end_stream:
                path = bytes(buf).split()[1].decode().lstrip("/")
                body = (self.ROOT / path).read_bytes()
                self._quic.send_stream_data(event.stream_id, body, end_stream=True)
                self.transmit()


@pytest.mark.parametrize("testcase", ["transfer", "retry", "chacha20", "keyupdate", "v2"])
def test_aioquic_client_pyquic_server(tmp_path: Path, server_factory: type,
                                      certs: tuple[str, str], testcase: str) -> None:
    www, files = make_www(tmp_path, SIZES)
    port = free_udp_port()
    server_factory(["server", "--host", "127.0.0.1", "--port", str(port), "--www", str(www),
                    "--cert", certs[0], "--key", certs[1]], "hq server on",
                   TESTCASE=testcase)

    async def main() -> dict[str, bytes]:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["hq-interop"])
        cfg.verify_mode = ssl.CERT_NONE
        if testcase == "chacha20":
            cfg.cipher_suites = [CipherSuite.CHACHA20_POLY1305_SHA256]
        if testcase == "v2":
            cfg.original_version = QuicProtocolVersion.VERSION_1
            cfg.supported_versions = [QuicProtocolVersion.VERSION_2,
                                      QuicProtocolVersion.VERSION_1]
        async with connect("127.0.0.1", port, configuration=cfg,
                           create_protocol=HqClient) as client:
            assert isinstance(client, HqClient)
            first = await asyncio.wait_for(client.get("/c.bin"), 30)
            if testcase == "keyupdate":
                client.request_key_update()
            got = await asyncio.wait_for(
                asyncio.gather(*(client.get(f"/{n}") for n in files)), 30)
            assert first == got[list(files).index("c.bin")]
            state["version"] = client._quic._version
            state["retries"] = client._quic._retry_count
            state["cipher"] = client._quic.tls.key_schedule.cipher_suite  # type: ignore[union-attr]
            return dict(zip(files, got))

    state: dict[str, Any] = {}

    got = asyncio.run(main())
    for n, data in files.items():
        assert sha(got[n]) == sha(data), n
    if testcase == "v2":
        assert state["version"] == QuicProtocolVersion.VERSION_2
    if testcase == "retry":
        assert state["retries"] == 1  # the server validated the address (RFC 9000 §8.1.2)
    if testcase == "chacha20":
        assert state["cipher"] == CipherSuite.CHACHA20_POLY1305_SHA256


@pytest.mark.parametrize("testcase", ["resumption", "zerortt"])
def test_aioquic_client_pyquic_server_resumption(tmp_path: Path, server_factory: type,
                                                 certs: tuple[str, str], testcase: str) -> None:
    """aioquic's client resumes with the pyquic server's ticket (certificate mode);
    with zerortt it sends its requests as 0-RTT before the handshake completes."""
    www, files = make_www(tmp_path, SIZES)
    port = free_udp_port()
    server_factory(["server", "--host", "127.0.0.1", "--port", str(port), "--www", str(www),
                    "--cert", certs[0], "--key", certs[1]], "hq server on",
                   TESTCASE=testcase)
    tickets: list[tls.SessionTicket] = []
    state: dict[str, Any] = {}

    def config() -> QuicConfiguration:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["hq-interop"],
                                server_name="localhost")
        cfg.load_verify_locations(certs[0])
        return cfg

    async def main() -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        async with connect("127.0.0.1", port, configuration=config(), create_protocol=HqClient,
                           session_ticket_handler=tickets.append) as first:
            assert isinstance(first, HqClient)
            got["c.bin"] = await asyncio.wait_for(first.get("/c.bin"), 30)
            for _ in range(300):  # the ticket follows the handshake
                if tickets:
                    break
                await asyncio.sleep(0.1)
            state["first_resumed"] = first._quic.tls.session_resumed
        assert tickets, "the pyquic server sent no session ticket"
        cfg = config()
        cfg.session_ticket = tickets[-1]
        zero = testcase == "zerortt"
        async with connect("127.0.0.1", port, configuration=cfg, create_protocol=HqClient,
                           wait_connected=not zero) as second:
            assert isinstance(second, HqClient)
            # with wait_connected=False the GETs leave in 0-RTT packets
            rest = [n for n in files if n != "c.bin"]
            bodies = await asyncio.wait_for(
                asyncio.gather(*(second.get(f"/{n}") for n in rest)), 30)
            got.update(zip(rest, bodies))
            t = second._quic.tls
            state["resumed"] = t.session_resumed
            state["early"] = t.early_data_accepted
        return got

    got = asyncio.run(main())
    assert set(got) == set(files)
    for n, data in files.items():
        assert sha(got[n]) == sha(data), n
    assert state["first_resumed"] is False
    assert state["resumed"] is True
    if testcase == "zerortt":
        assert tickets[-1].max_early_data_size, "the ticket does not allow 0-RTT"
        assert state["early"] is True


@contextlib.contextmanager
def aioquic_server(root: Path, cert: str, key: str, port: int,
                   retry: bool = False) -> Iterator[list[HqServer]]:
    """An aioquic hq-interop server on 127.0.0.1:``port`` in a thread, serving ``root``;
    yields the list of its connections (HqServer instances)."""
    HqServer.ROOT = root
    HqServer.INSTANCES.clear()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["hq-interop"])
        cfg.load_cert_chain(cert, key)
        tickets: dict[bytes, Any] = {}
        state["server"] = await serve("127.0.0.1", port, configuration=cfg,
                                      create_protocol=HqServer,
                                      session_ticket_fetcher=tickets.pop,
                                      retry=retry,
                                      session_ticket_handler=lambda t: tickets.__setitem__(
                                          t.ticket, t))
        started.set()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run_loop, daemon=True, name="aioquic-server")
    t.start()
    assert started.wait(10), "the aioquic server did not start"
    try:
        yield HqServer.INSTANCES
    finally:
        loop.call_soon_threadsafe(state["server"].close)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


@pytest.mark.parametrize("testcase", ["transfer", "keyupdate", "chacha20", "multiplexing",
                                      "resumption", "zerortt", "multiconnect", "retry"])
def test_pyquic_client_aioquic_server(tmp_path: Path, certs: tuple[str, str],
                                      testcase: str) -> None:
    www, files = make_www(tmp_path, SIZES)
    port = free_udp_port()
    with aioquic_server(www, *certs, port, retry=testcase == "retry") as conns:
        dl = tmp_path / "dl"
        urls = [f"https://127.0.0.1:{port}/{n}" for n in files]
        r = run_cli("client", "--downloads", str(dl), *urls, "--timeout", "30", "-v",
                    timeout=90, TESTCASE=testcase)
        assert r.returncode == 0, r.stderr
        if testcase == "zerortt":
            assert "resumed, 0-RTT accepted" in r.stdout
        if testcase == "retry":  # aioquic's server only accepts after a valid Retry token
            assert conns and all(p._quic._retry_source_connection_id is not None
                                 for p in conns)
        phases = [p.recv_key_phase() for p in conns]
        # keyupdate: the client's packets moved to key phase 1; otherwise they stay in 0
        assert phases == [1 if testcase == "keyupdate" else 0] * len(phases), phases
        for n, data in files.items():
            assert sha((dl / n).read_bytes()) == sha(data), n


# ---------------------------------------------------------------- through a lossy link


def test_aioquic_client_pyquic_server_handshakeloss(tmp_path: Path, server_factory: type,
                                                    certs: tuple[str, str]) -> None:
    """Interop runner "handshakeloss": 30% loss both ways, one connection per (small) file."""
    www, files = make_www(tmp_path, {f"h{i}": 1000 + i for i in range(6)})
    port = free_udp_port()
    server_factory(["server", "--host", "127.0.0.1", "--port", str(port), "--www", str(www),
                    "--cert", certs[0], "--key", certs[1]], "hq server on",
                   TESTCASE="handshakeloss")

    async def fetch(proxy_port: int, name: str) -> bytes:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["hq-interop"],
                                idle_timeout=30.0)
        cfg.verify_mode = ssl.CERT_NONE
        async with connect("127.0.0.1", proxy_port, configuration=cfg,
                           create_protocol=HqClient) as client:
            assert isinstance(client, HqClient)
            return await client.get(f"/{name}")

    async def main(proxy_port: int) -> dict[str, bytes]:
        got = {}
        for name in files:  # one after another, as the runner's client does
            got[name] = await asyncio.wait_for(fetch(proxy_port, name), 60)
        return got

    with NetProxy(("127.0.0.1", port), c2s=LinkConfig(loss=0.3), s2c=LinkConfig(loss=0.3),
                  seed=11, lifetime=400) as proxy:
        got = asyncio.run(main(proxy.address[1]))
        stats = proxy.stats()
    for n, data in files.items():
        assert sha(got[n]) == sha(data), n
    assert stats["c2s"]["dropped"] > 0 and stats["s2c"]["dropped"] > 0, stats


def test_pyquic_client_aioquic_server_transferloss(tmp_path: Path,
                                                   certs: tuple[str, str]) -> None:
    """Interop runner "transferloss": 2% loss both ways during a multi-file download."""
    www, files = make_www(tmp_path, {"t1": 700_000, "t2": 300_001, "t3": 5})
    port = free_udp_port()
    with aioquic_server(www, *certs, port), \
            NetProxy(("127.0.0.1", port), c2s=LinkConfig(loss=0.02),
                     s2c=LinkConfig(loss=0.02), seed=5, lifetime=200) as proxy:
        dl = tmp_path / "dl"
        urls = [f"https://127.0.0.1:{proxy.address[1]}/{n}" for n in files]
        r = run_cli("client", "--downloads", str(dl), *urls, "--timeout", "90",
                    timeout=150, TESTCASE="transferloss")
        stats = proxy.stats()
    assert r.returncode == 0, r.stderr
    for n, data in files.items():
        assert sha((dl / n).read_bytes()) == sha(data), n
    assert stats["s2c"]["dropped"] > 0, stats
