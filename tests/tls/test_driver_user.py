"""The driver on the user backend's real QuicSocket over UDP on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pytest

user_socket = pytest.importorskip("pyquic.user.socket")

from pyquic import abi
from pyquic.tls import driver

_accepted: list[Any] = []


@pytest.fixture(autouse=True)
def _close_accepted():
    """Close the server-side sockets each test accepted, so none outlives it."""
    yield
    while _accepted:
        _accepted.pop().close()


def serve(listener: Any, n: int, results: list[Any], **kw: Any) -> threading.Thread:
    def run() -> None:
        for _ in range(n):
            try:
                s, _addr = listener.accept()
                _accepted.append(s)
                results.append((driver.server_handshake(s, timeout=5, **kw), s))
            except Exception as exc:  # noqa: BLE001 - reported by the test
                results.append((exc, None))
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


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


def _vn_relay(server: tuple, versions: list[int], stop: threading.Event,
              seen: dict[str, Any]) -> tuple[Any, threading.Thread]:
    """A UDP relay in front of ``server`` that answers the client's first Initial
    with a Version Negotiation listing ``versions`` and relays everything after."""
    import socket

    from pyquic.engine.packet import build_version_negotiation, parse_header

    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(0.05)
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.bind(("127.0.0.1", 0))
    up.settimeout(0.05)

    def run() -> None:
        client = None
        for _ in range(100_000):  # bounded; the test sets ``stop``
            if stop.is_set():
                break
            try:
                data, addr = relay.recvfrom(65535)
            except TimeoutError:
                data = b""
            if data:
                if client is None:
                    client = addr
                    hdr = parse_header(data, 0, 8)
                    seen["first_version"] = hdr.version
                    relay.sendto(build_version_negotiation(hdr.scid, hdr.dcid, versions), addr)
                else:
                    if data[0] & 0x80 and "second_version" not in seen:
                        seen["second_version"] = int.from_bytes(data[1:5], "big")
                    up.sendto(data, server)
            try:
                back, _ = up.recvfrom(65535)
            except TimeoutError:
                continue
            if client is not None:
                relay.sendto(back, client)
        relay.close()
        up.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return relay.getsockname(), t


def test_version_negotiation_restart(pki, listener):
    """A VN offering only v2 makes the client start over in v2 with a new
    ClientHello (version_information naming v2, RFC 9368 §4) and complete."""
    stop = threading.Event()
    seen: dict[str, Any] = {}
    relay_addr, rt = _vn_relay(listener.getsockname(), [abi.Version.V2], stop, seen)
    results: list[Any] = []
    t = serve(listener, 1, results, certfile=pki.server_cert, keyfile=pki.server_key)
    c = user_socket.QuicSocket()
    try:
        c.connect(relay_addr)
        r = driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=10)
        t.join(10)
        assert r.alpn == "h3"
        assert seen["first_version"] == abi.Version.V1
        assert seen["second_version"] == abi.Version.V2
        assert c._conn.version_negotiated and c._conn.version == abi.Version.V2
        res, srv = results[0]
        assert isinstance(res, driver.HandshakeResult), res
        assert srv._conn.version == abi.Version.V2
        srv.close()
    finally:
        stop.set()
        rt.join(5)
        c.close()


def test_version_negotiation_restart_signal_once(listener):
    """Without a driver the socket signals the restart once: an empty INITIAL
    handshake message, then the usual EAGAIN."""
    import errno
    import socket

    stop = threading.Event()
    seen: dict[str, Any] = {}
    relay_addr, rt = _vn_relay(listener.getsockname(), [abi.Version.V2], stop, seen)
    c = user_socket.QuicSocket()
    try:
        c.connect(relay_addr)
        c.sendmsg([b"\x01" + bytes(300)], [abi.handshake_info_cmsg(abi.CryptoLevel.INITIAL)])
        c.settimeout(10)
        data, anc, _flags, _ = c.recvmsg(4096, abi.HANDSHAKE_INFO_CMSG_SPACE)
        assert data == b""
        _s, hinfo = abi.parse_ancdata(anc)
        assert hinfo is not None and hinfo.crypto_level == abi.CryptoLevel.INITIAL
        assert c._conn.initial_restart_pending
        with pytest.raises(OSError) as info:
            c.recvmsg(4096, abi.HANDSHAKE_INFO_CMSG_SPACE, socket.MSG_DONTWAIT)
        assert info.value.errno == errno.EAGAIN
        c.sendmsg([b"\x01" + bytes(200)], [abi.handshake_info_cmsg(abi.CryptoLevel.INITIAL)])
        assert not c._conn.initial_restart_pending
    finally:
        stop.set()
        rt.join(5)
        c.close()


def test_certificate_cache_follows_file_changes(tmp_path, pki):
    """Chains are parsed once per (path, mtime, size) and reread after an edit."""
    import os
    import shutil

    calls: list[str] = []

    def loader(path: Any) -> list[str]:
        calls.append(str(path))
        with open(path, "rb") as f:
            return [f.read()[:16].decode("latin-1")]

    p = tmp_path / "chain.pem"
    shutil.copy(pki.server_cert, p)
    first = driver._cached_load("test", loader, p)
    again = driver._cached_load("test", loader, p)
    assert first == again and len(calls) == 1
    again.append("mutated")  # callers get a copy
    assert driver._cached_load("test", loader, p) == first
    p.write_bytes(b"X" * 40)
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = driver._cached_load("test", loader, p)
    assert changed == ["X" * 16] and len(calls) == 2
