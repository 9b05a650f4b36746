"""The driver on the user backend's real QuicSocket over UDP on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pytest

user_socket = pytest.importorskip("pyquic.user.socket")

from pyquic import abi
from pyquic.tls import driver


def serve(listener: Any, n: int, results: list[Any], **kw: Any) -> threading.Thread:
    def run() -> None:
        for _ in range(n):
            try:
                s, _addr = listener.accept()
                results.append((driver.server_handshake(s, timeout=5, **kw), s))
            except Exception as exc:  # noqa: BLE001 - reported by the test
                results.append((exc, None))
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture
def listener():
    ls = user_socket.QuicSocket()
    ls.bind(("127.0.0.1", 0))
    ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.ALPN, b"h3")
    ls.listen()
    yield ls
    ls.close()


def test_cert_handshake_then_resumption_with_0rtt(pki, listener):
    results: list[Any] = []
    t = serve(listener, 2, results, certfile=pki.server_cert, keyfile=pki.server_key)
    c = user_socket.QuicSocket()
    c.connect(listener.getsockname())
    r = driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=5)
    assert r.alpn == "h3" and not r.session_resumed
    data = r.get_session_data(timeout=3)
    assert data is not None

    c2 = user_socket.QuicSocket()
    c2.connect(listener.getsockname())
    driver.restore_session(c2, data)
    r2 = driver.client_handshake(c2, "localhost", "h3", cafile=pki.ca, session=data, timeout=5)
    t.join(10)
    assert not t.is_alive()
    assert r2.session_resumed and r2.early_data_accepted
    (s1, _), (s2, _) = results
    assert isinstance(s1, driver.HandshakeResult) and isinstance(s2, driver.HandshakeResult)
    assert s2.session_resumed and s2.early_data_accepted
    for sock in (c, c2):
        sock.close()


def test_chacha_via_config(pki, listener):
    results: list[Any] = []
    t = serve(listener, 1, results, certfile=pki.server_cert, keyfile=pki.server_key)
    c = user_socket.QuicSocket()
    c.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG,
                 abi.Config(payload_cipher_type=abi.TlsCipher.CHACHA20_POLY1305).pack())
    c.connect(listener.getsockname())
    r = driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=5)
    t.join(10)
    assert r.cipher == abi.TlsCipher.CHACHA20_POLY1305
    assert results[0][0].cipher == abi.TlsCipher.CHACHA20_POLY1305
    c.close()


@pytest.mark.xfail(
    reason="engine: a client drops the server's v2 Initial once a v1 Initial (the early ACK "
           "of its ClientHello) set peer_initial_scid (connection.py _receive_packet); the "
           "kernel follows a compatible-version Initial at any time (packet.c "
           "quic_packet_process: version != packet->version on an Initial -> version_change)",
    strict=False)
def test_compatible_upgrade_to_v2(pki):
    """A server configured for v2 upgrades a v1 client (RFC 9368); its
    version_information names v2 because the driver sets the client's parameters
    before it reads its own (libquic's order)."""
    from pyquic.engine.transport_param import TransportParameters

    ls = user_socket.QuicSocket()
    try:
        ls.bind(("127.0.0.1", 0))
        ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG, abi.Config(version=abi.Version.V2).pack())
        ls.listen()
        results: list[Any] = []
        t = serve(ls, 1, results, certfile=pki.server_cert, keyfile=pki.server_key)
        c = user_socket.QuicSocket()
        try:
            c.connect(ls.getsockname())
            r = driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=10)
            t.join(30)
            info = TransportParameters.decode(r.peer_transport_parameters, True).version_information
            assert info is not None and info.chosen_version == abi.Version.V2
            sres, srv = results[0]
            assert isinstance(sres, driver.HandshakeResult), sres
            c.send(b"over v2", abi.MSG_SYN | abi.MSG_FIN)
            srv.settimeout(30)
            assert srv.recv(100) == b"over v2"
            srv.close()
        finally:
            c.close()
    finally:
        ls.close()
