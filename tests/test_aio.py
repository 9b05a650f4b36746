"""pyquic.aio on loopback, on every available backend.

Each test runs one asyncio program bounded by ``TIMEOUT`` seconds: a server
from ``start_server`` and a client from ``open_connection`` talking over
127.0.0.1 with a self-signed certificate.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pyquic import aio
from pyquic.abi.constants import EventType, StreamState
from pyquic.abi.events import ConnectionCloseEvent, StreamUpdateEvent

TIMEOUT = 20.0
ALPN = "aio-test"


@pytest.fixture(params=["user", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel":
        from pyquic.kernel.available import kernel_available

        if not kernel_available():
            pytest.skip("the IPPROTO_QUIC kernel module is not loaded")
    return str(request.param)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from pyquic.tls.x509 import generate_self_signed

    cert, key = generate_self_signed("localhost", names=("localhost", "127.0.0.1"))
    d = tmp_path_factory.mktemp("aio-certs")
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    return str(d / "cert.pem"), str(d / "key.pem")


def run(coro: Awaitable[Any], timeout: float = TIMEOUT) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


Handler = Callable[[aio.Connection], Awaitable[None]]


async def pair(backend: str, certs: tuple[str, str], handler: Handler,
               server_kw: dict[str, Any] | None = None,
               client_kw: dict[str, Any] | None = None) -> tuple[aio.Server, aio.Connection]:
    cert, key = certs
    server = await aio.start_server(handler, "127.0.0.1", 0, alpns=ALPN, certfile=cert,
                                    keyfile=key, backend=backend, handshake_timeout=10,
                                    **(server_kw or {}))
    conn = await aio.open_connection("127.0.0.1", server.port, alpns=ALPN, cafile=cert,
                                     hostname="localhost", backend=backend,
                                     handshake_timeout=10, **(client_kw or {}))
    return server, conn


async def echo_upper(conn: aio.Connection) -> None:
    async for reader, writer in conn:
        data = await reader.read()
        if writer.is_closing():  # the peer's unidirectional stream
            continue
        writer.write(data.upper())
        writer.write_eof()


def test_stream_round_trip_and_alpn(backend: str, certs: tuple[str, str]) -> None:
    async def main() -> None:
        server, conn = await pair(backend, certs, echo_upper)
        async with server, conn:
            assert conn.alpn == ALPN
            assert conn.backend == backend
            results = []
            for i in range(3):
                reader, writer = await conn.open_stream()
                assert reader.stream_id == writer.stream_id == 4 * i  # RFC 9000 §2.1
                writer.write(b"hello %d" % i)
                writer.write_eof()
                results.append(await reader.read())
                assert reader.at_eof()
                await writer.wait_closed()  # the peer acknowledged our FIN
            assert results == [b"HELLO 0", b"HELLO 1", b"HELLO 2"]
    run(main())


def test_concurrent_streams_large_transfer(backend: str, certs: tuple[str, str]) -> None:
    size = 1_500_000

    async def one(conn: aio.Connection, seed: int) -> None:
        payload = hashlib.sha256(bytes([seed])).digest() * (size // 32)
        reader, writer = await conn.open_stream()

        async def send() -> None:
            for off in range(0, len(payload), 50_000):
                writer.write(payload[off:off + 50_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        got = await reader.read()
        await sender
        assert got == payload.upper()

    async def main() -> None:
        server, conn = await pair(backend, certs, echo_upper)
        async with server, conn:
            await asyncio.gather(*(one(conn, s) for s in range(3)))
    run(main(), 60)


def test_reader_helpers(backend: str, certs: tuple[str, str]) -> None:
    async def handler(conn: aio.Connection) -> None:
        reader, writer = await conn.accept_stream()
        await reader.read()
        writer.writelines([b"line one\n", b"line two\n", b"12345", b"tail"])
        writer.write_eof()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler)
        async with server, conn:
            reader, writer = await conn.open_stream()
            writer.write_eof()  # a FIN alone opens the stream for the peer
            assert await reader.readline() == b"line one\n"
            assert await reader.readuntil(b"two") == b"line two"
            assert await reader.readexactly(2) == b"\n1"
            assert await reader.read(3) == b"234"
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(100)
            assert info.value.partial == b"5tail"
            assert reader.at_eof()
            assert await reader.read() == b""
    run(main())


def test_server_opens_streams_and_uni(backend: str, certs: tuple[str, str]) -> None:
    results: dict[str, bytes] = {}

    async def handler(conn: aio.Connection) -> None:
        r, w = await conn.open_stream(uni=True)
        assert r.at_eof()  # nothing can arrive on our own unidirectional stream
        w.write(b"from server, uni")
        w.write_eof()
        r2, w2 = await conn.open_stream()
        w2.write(b"question?")
        w2.write_eof()
        results["answer"] = await r2.read()
        r3, w3 = await conn.accept_stream()
        assert w3.is_closing()  # the client's unidirectional stream cannot be written
        results["uni"] = await r3.read()
        await conn.wait_closed()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler)
        async with server, conn:
            got: dict[int, bytes] = {}
            for _ in range(2):
                reader, writer = await conn.accept_stream()
                if reader.stream_id & 0x2:  # server-initiated unidirectional: id 3
                    assert reader.stream_id == 3
                    with pytest.raises(OSError):
                        writer.write(b"x")
                    got[3] = await reader.read()
                else:
                    assert reader.stream_id == 1  # server-initiated bidirectional
                    got[1] = await reader.read()
                    writer.write(b"answer")
                    writer.write_eof()
            assert got == {3: b"from server, uni", 1: b"question?"}
            _r, w = await conn.open_stream(uni=True)
            assert w.stream_id == 2
            w.write(b"client uni")
            w.write_eof()
            await w.wait_closed()
            for _ in range(100):
                if "uni" in results:
                    break
                await asyncio.sleep(0.05)
    run(main())
    assert results == {"answer": b"answer", "uni": b"client uni"}


def test_datagrams(backend: str, certs: tuple[str, str]) -> None:
    async def handler(conn: aio.Connection) -> None:
        for _ in range(1000):
            data = await conn.recv_datagram()
            conn.send_datagram(data[::-1])
            if data == b"last":
                break
        await conn.wait_closed()

    async def main() -> None:
        kw = {"max_datagram_frame_size": 1400}
        server, conn = await pair(backend, certs, handler, kw, kw)
        async with server, conn:
            echoed = []
            for i in range(5):  # datagrams are unreliable: resend until one comes back
                for _ in range(20):
                    conn.send_datagram(b"dgram %d" % i)
                    try:
                        echoed.append(await asyncio.wait_for(conn.recv_datagram(), 1.0))
                        break
                    except asyncio.TimeoutError:
                        continue
            assert echoed == [(b"dgram %d" % i)[::-1] for i in range(5)]
            with pytest.raises(OSError):
                conn.send_datagram(b"x" * 5000)  # larger than one packet: EMSGSIZE
            conn.send_datagram(b"last")
    run(main())


def test_close_event_and_wait_closed(backend: str, certs: tuple[str, str]) -> None:
    seen: list[Any] = []

    async def handler(conn: aio.Connection) -> None:
        reader, writer = await conn.accept_stream()
        assert await reader.read() == b"hi"
        writer.write(b"ok")
        writer.write_eof()
        ev = await conn.next_event()
        seen.append(ev)
        with pytest.raises(aio.ConnectionClosed):
            await conn.next_event()
        with pytest.raises(aio.ConnectionClosed):
            await conn.accept_stream()
        await conn.wait_closed()
        assert conn.is_closed
        seen.append("closed")

    async def main() -> None:
        server, conn = await pair(backend, certs, handler,
                                  {"events": [EventType.CONNECTION_CLOSE]})
        async with server:
            reader, writer = await conn.open_stream()
            writer.write(b"hi")
            writer.write_eof()
            # The answer proves the server's callback runs (its handshake thread is
            # done and its events are enabled) before we close.
            assert await reader.read() == b"ok"
            conn.close(errcode=7, reason="bye")
            assert conn.is_closed
            with pytest.raises(aio.ConnectionClosed):
                await conn.open_stream()
            for _ in range(200):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.05)
    run(main())
    assert len(seen) == 2
    ev = seen[0]
    assert isinstance(ev, ConnectionCloseEvent)
    assert ev.errcode == 7
    assert ev.phrase == b"bye"


def test_reset_and_stop_sending(backend: str, certs: tuple[str, str]) -> None:
    errors: dict[str, BaseException] = {}
    got_partial = asyncio.Event()

    async def handler(conn: aio.Connection) -> None:
        r1, _w1 = await conn.accept_stream()
        assert await r1.readexactly(7) == b"partial"
        got_partial.set()
        try:
            await r1.read()
        except aio.StreamResetError as exc:
            errors["reset"] = exc
        r2, _w2 = await conn.accept_stream()
        await r2.readexactly(5)
        r2.stop_sending(42)
        await conn.wait_closed()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler)
        async with server, conn:
            _r, w = await conn.open_stream()
            w.write(b"partial")
            await got_partial.wait()
            w.reset(99)
            with pytest.raises(aio.StreamResetError):
                w.write(b"more")
            _r2, w2 = await conn.open_stream()
            w2.write(b"12345")
            with pytest.raises(aio.StreamResetError) as info:
                for _ in range(400):  # keep writing until the peer's STOP_SENDING lands
                    w2.write(b"x" * 1000)
                    await w2.drain()
                    await asyncio.sleep(0.01)
            errors["stop"] = info.value
    run(main())
    assert isinstance(errors["reset"], aio.StreamResetError)
    assert errors["reset"].errcode == 99
    assert errors["stop"].errcode == 42  # type: ignore[attr-defined]


def test_receive_backpressure(backend: str, certs: tuple[str, str]) -> None:
    """With a small read_limit, an unread stream stops the sender; reading resumes it."""
    total = 8_000_000
    state: dict[str, Any] = {}

    async def handler(conn: aio.Connection) -> None:
        reader, _writer = await conn.accept_stream()
        state["reader"] = reader
        await conn.wait_closed()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler, {"read_limit": 64 * 1024})
        async with server, conn:
            _r, w = await conn.open_stream()
            payload = os.urandom(total)
            w.write(payload)
            w.write_eof()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(w.flush(), 1.5)  # flow control holds the data back
            assert w.buffered > 0
            for _ in range(100):
                if "reader" in state:
                    break
                await asyncio.sleep(0.05)
            got = await state["reader"].read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            await w.flush()
            assert w.buffered == 0
    run(main(), 60)


def test_handshake_failure_untrusted(backend: str, certs: tuple[str, str],
                                     tmp_path: Path) -> None:
    from pyquic.tls.x509 import generate_self_signed

    other, _ = generate_self_signed("localhost", names=("localhost",))
    (tmp_path / "other.pem").write_bytes(other)

    async def handler(conn: aio.Connection) -> None:
        raise AssertionError("no connection should reach the callback")

    async def main() -> None:
        cert, key = certs
        server = await aio.start_server(handler, "127.0.0.1", 0, alpns=ALPN, certfile=cert,
                                        keyfile=key, backend=backend, handshake_timeout=5)
        async with server:
            with pytest.raises(Exception) as info:
                await aio.open_connection("127.0.0.1", server.port, alpns=ALPN,
                                          cafile=str(tmp_path / "other.pem"),
                                          hostname="localhost", backend=backend,
                                          handshake_timeout=5)
            assert not isinstance(info.value, AssertionError)
    run(main())


def test_resumption_and_early_data(backend: str, certs: tuple[str, str]) -> None:
    async def main() -> None:
        server, conn = await pair(backend, certs, echo_upper)
        async with server:
            async with conn:
                r, w = await conn.open_stream()
                w.write(b"first")
                w.write_eof()
                assert await r.read() == b"FIRST"
                session = await conn.session_data(timeout=5.0)
            assert session
            cert, _ = certs
            conn2 = await aio.open_connection(
                "127.0.0.1", server.port, alpns=ALPN, cafile=cert, hostname="localhost",
                backend=backend, session=session, early_data=b"early bird")
            async with conn2:
                assert conn2.handshake.session_resumed
                assert conn2.early_stream is not None
                r2, w2 = conn2.early_stream
                w2.write(b", then more")
                w2.write_eof()
                assert await r2.read() == b"EARLY BIRD, THEN MORE"
    run(main())


def test_idle_connection_does_not_spin(backend: str, certs: tuple[str, str]) -> None:
    """Readiness-driven: an idle connection costs (almost) no CPU."""
    async def handler(conn: aio.Connection) -> None:
        await conn.wait_closed()

    async def main() -> float:
        server, conn = await pair(backend, certs, handler)
        async with server, conn:
            await asyncio.sleep(0.2)
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(1.0)
            return (time.process_time() - cpu0) / (time.monotonic() - wall0)
    share = run(main())
    assert share < 0.3, f"an idle connection used {share:.0%} of a CPU"


def test_stream_reader_concurrent_read_refused(backend: str, certs: tuple[str, str]) -> None:
    async def handler(conn: aio.Connection) -> None:
        await conn.wait_closed()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler)
        async with server, conn:
            reader, writer = await conn.open_stream()
            first = asyncio.ensure_future(reader.read(10))
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError):
                await reader.read(10)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            # after the connection closes, a blocked read fails with ConnectionClosed
            pending = asyncio.ensure_future(reader.read(10))
            await asyncio.sleep(0.05)
            conn.close()
            with pytest.raises(aio.ConnectionClosed):
                await pending
            with pytest.raises(aio.ConnectionClosed):
                writer.write(b"late")
    run(main())


def test_open_stream_waits_for_stream_credit(backend: str, certs: tuple[str, str]) -> None:
    """With the server allowing 2 bidirectional streams, a 3rd open waits for
    MAX_STREAMS (RFC 9000 §4.6), which comes once earlier streams are done."""
    from pyquic.abi.structs import TransportParam

    async def main() -> None:
        server, conn = await pair(backend, certs, echo_upper,
                                  {"transport_param": TransportParam(max_streams_bidi=2)})
        async with server, conn:
            r1, w1 = await conn.open_stream()
            _r2, _w2 = await conn.open_stream()
            third = asyncio.ensure_future(conn.open_stream())
            await asyncio.sleep(0.3)
            assert not third.done()  # the peer's limit holds it back
            w1.write(b"one")
            w1.write_eof()
            assert await r1.read() == b"ONE"
            r3, w3 = await asyncio.wait_for(third, 10)
            assert w3.stream_id == 8
            w3.write(b"three")
            w3.write_eof()
            assert await r3.read() == b"THREE"
    run(main())


def test_psk_handshake(backend: str, tmp_path: Path) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("client1:" + os.urandom(32).hex() + "\n")

    async def main() -> None:
        server = await aio.start_server(echo_upper, "127.0.0.1", 0, alpns=ALPN,
                                        psk_file=str(psk), backend=backend)
        async with server:
            conn = await aio.open_connection("127.0.0.1", server.port, alpns=ALPN,
                                             psk_file=str(psk), backend=backend)
            async with conn:
                assert conn.handshake.psk
                r, w = await conn.open_stream()
                w.write(b"psk")
                w.write_eof()
                assert await r.read() == b"PSK"
    run(main())


def test_subscribed_stream_events_and_readuntil_limit(backend: str,
                                                     certs: tuple[str, str]) -> None:
    async def handler(conn: aio.Connection) -> None:
        reader, writer = await conn.accept_stream()
        await reader.readexactly(2)
        writer.write(b"x" * 5000)  # no separator anywhere, and no FIN yet
        await reader.read()
        writer.write_eof()
        await conn.wait_closed()

    async def main() -> None:
        server, conn = await pair(backend, certs, handler,
                                  client_kw={"events": [EventType.STREAM_UPDATE],
                                             "read_limit": 4096})
        async with server, conn:
            reader, writer = await conn.open_stream()
            writer.write(b"go")
            with pytest.raises(asyncio.LimitOverrunError):
                await reader.readuntil(b"\n")
            writer.write_eof()
            assert len(await reader.read()) == 5000  # the data stayed buffered
            await writer.wait_closed()
            states = set()
            for _ in range(20):
                ev = await asyncio.wait_for(conn.next_event(), 5)
                assert isinstance(ev, StreamUpdateEvent)
                assert ev.id == 0
                states.add(ev.state)
                if StreamState.SEND_RECVD in states:
                    break
            assert StreamState.SEND_RECVD in states  # our FIN was acknowledged
    run(main())


def test_leaving_the_server_block_releases_accepted_sockets(backend: str,
                                                           certs: tuple[str, str]) -> None:
    """A callback that returns leaves its connection open; ``async with server``
    closes it on exit (as asyncio's close_clients), also after the peer closed."""
    accepted: list[aio.Connection] = []

    async def handler(conn: aio.Connection) -> None:
        accepted.append(conn)

    async def main() -> None:
        server, conn = await pair(backend, certs, handler)
        async with server:
            async with conn:
                _r, w = await conn.open_stream()
                w.write_eof()
            for _ in range(500):  # bounded: until the server saw the peer's close
                if accepted and accepted[0].is_closed:
                    break
                await asyncio.sleep(0.01)
            assert accepted and accepted[0].socket.fileno() != -1
        assert accepted[0].socket.fileno() == -1
    run(main())
