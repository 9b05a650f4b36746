"""Tests of pyquic.user.alpn against Initials built by aioquic (an independent stack)."""

from __future__ import annotations

import pytest

aioquic = pytest.importorskip("aioquic")

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioConnection
from aioquic.quic.events import ConnectionTerminated

from pyquic.user import alpn

SERVER = ("127.0.0.1", 4433)


def _client(alpns: list[str] | None, version: int = alpn.VERSION_1) -> tuple[AioConnection, bytes]:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=alpns, server_name="localhost")
    cfg.supported_versions = [version]
    conn = AioConnection(configuration=cfg)
    conn.connect(SERVER, now=0.0)
    datagrams = conn.datagrams_to_send(now=0.0)
    return conn, datagrams[0][0]


@pytest.mark.parametrize("version", [alpn.VERSION_1, alpn.VERSION_2])
def test_initial_alpns(version: int) -> None:
    _, data = _client(["smbd", "h3", "ksmbd"], version)
    hdr = alpn.parse_long_header(data)
    assert alpn.is_initial(hdr)
    assert hdr.version == version
    assert alpn.initial_alpns(data) == [b"smbd", b"h3", b"ksmbd"]


def test_initial_without_alpn() -> None:
    _, data = _client(None)
    assert alpn.initial_alpns(data) is None


def test_corrupted_initial_is_rejected() -> None:
    _, data = _client(["h3"])
    bad = bytearray(data)
    bad[100] ^= 0xFF  # inside the first (Initial) packet
    with pytest.raises(alpn.InitialError):
        alpn.initial_alpns(bytes(bad))


def test_not_a_long_header() -> None:
    with pytest.raises(alpn.InitialError):
        alpn.parse_long_header(b"\x40" + bytes(30))


def test_client_hello_truncated_extension_means_no_alpn() -> None:
    # ClientHello whose only extension claims more bytes than present.
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += b"\x00\x08" + b"\x00\x10\x00\x20" + b"\x00\x02"
    hello = b"\x01" + len(body).to_bytes(3, "big") + body
    assert alpn.client_hello_alpns(hello) is None


def test_refuse_closes_the_client() -> None:
    conn, data = _client(["h3"])
    refuse = alpn.build_refuse(data)
    conn.receive_datagram(refuse, SERVER, now=0.01)
    timer = conn.get_timer()
    assert timer is not None
    conn.handle_timer(timer)  # the draining period ends
    events = []
    for _ in range(10):
        ev = conn.next_event()
        if ev is None:
            break
        events.append(ev)
    closes = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert closes and closes[0].error_code == alpn.CONNECTION_REFUSED
