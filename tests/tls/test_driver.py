"""The handshake driver over an in-memory socket pair (two threads)."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pyquic import abi
from pyquic.tls import driver
from pyquic.tls.messages import AlertDescription, TlsAlert
from pyquic.tls.session import SessionTicket

from .fakesock import FakeQuicSocket, socket_pair


def run_pair(
    client: Callable[[FakeQuicSocket], Any],
    server: Callable[[FakeQuicSocket], Any],
    csock: FakeQuicSocket,
    ssock: FakeQuicSocket,
    timeout: float = 10.0,
) -> tuple[Any, Any]:
    """Run both sides in threads; return (client_result, server_result), exceptions as values."""
    results: dict[str, Any] = {}

    def wrap(name: str, fn: Callable[[FakeQuicSocket], Any], sock: FakeQuicSocket) -> None:
        try:
            results[name] = fn(sock)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[name] = exc

    ts = [
        threading.Thread(target=wrap, args=("s", server, ssock), daemon=True),
        threading.Thread(target=wrap, args=("c", client, csock), daemon=True),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
        assert not t.is_alive(), "handshake thread hung"
    return results["c"], results["s"]


def test_cert_handshake_x25519_aes128_p256(pki, tmp_path):
    c, s = socket_pair()
    keylog = tmp_path / "keys.log"
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5,
                                          keylog=keylog),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c, s,
    )
    assert isinstance(cr, driver.HandshakeResult), cr
    assert isinstance(sr, driver.HandshakeResult), sr
    assert cr.alpn == sr.alpn == "h3"
    assert cr.cipher == sr.cipher == abi.TlsCipher.AES_GCM_128
    assert cr.group == 0x1D
    assert cr.peer_certificate is not None
    assert cr.peer_certificate.subject.rfc4514_string() == "CN=server"
    # transport parameters crossed over through TRANSPORT_PARAM_EXT
    assert c.state.peer_tp == s.tp and s.state.peer_tp == c.tp
    assert cr.peer_transport_parameters == s.tp
    # secrets: send before receive per level; each side's send = peer's receive
    for st in (c.state, s.state):
        pairs = [(x.level, x.send) for x in st.secrets]
        assert pairs.index((2, 1)) < pairs.index((2, 0))
        assert pairs.index((0, 1)) < pairs.index((0, 0))
    cs = {(x.level, x.send): x.secret for x in c.state.secrets}
    ss = {(x.level, x.send): x.secret for x in s.state.secrets}
    for lvl in (2, 0):
        assert cs[(lvl, 1)] == ss[(lvl, 0)] and cs[(lvl, 0)] == ss[(lvl, 1)]
    # flights: MSG_MORE on all but the last message of a flight
    import socket as _s
    server_flight = s.state.sent[:-1]
    assert server_flight and all(f & _s.MSG_MORE for _lvl, _n, f in server_flight[:-1])
    # one sendmsg per level of a flight: ServerHello at Initial, then
    # EncryptedExtensions..Finished together at Handshake
    assert [lvl for lvl, _n, _f in s.state.sent[:2]] == [abi.CryptoLevel.INITIAL,
                                                          abi.CryptoLevel.HANDSHAKE]
    assert abi.CryptoLevel.HANDSHAKE not in [lvl for lvl, _n, _f in s.state.sent[2:]]
    # negotiated ALPN stored on the socket
    assert c.state.alpn_set == b"h3"
    lines = keylog.read_text().splitlines()
    labels = {ln.split()[0] for ln in lines}
    assert labels == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                      "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    ap = next(ln for ln in lines if ln.startswith("CLIENT_TRAFFIC_SECRET_0"))
    assert bytes.fromhex(ap.split()[2]) == cs[(0, 1)][:32]


def test_alpn_from_socket_option(pki):
    c, s = socket_pair(client_alpn="smbd", server_alpn="smbd, h3, ksmbd")
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, timeout=5),
        c, s,
    )
    assert cr.alpn == sr.alpn == "smbd"


def test_alpn_mismatch_alert_and_close_info(pki):
    c, s = socket_pair()
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=2),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="smb",
                                          timeout=2),
        c, s,
    )
    assert isinstance(sr, TlsAlert) and sr.description == AlertDescription.no_application_protocol
    assert s.state.close is not None and s.state.close.errcode == 0x100 + 120
    assert isinstance(cr, TimeoutError)  # the fake does not carry CONNECTION_CLOSE


def test_wrong_host_is_a_clear_error(pki):
    c, s = socket_pair()
    cr, _sr = run_pair(
        lambda k: driver.client_handshake(k, "example.com", "h3", cafile=pki.ca, timeout=2),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=2),
        c, s,
    )
    assert isinstance(cr, TlsAlert) and cr.description == AlertDescription.bad_certificate
    assert "example.com" in str(cr)
    assert c.state.close is not None and c.state.close.errcode == 0x100 + 42


def test_timeout(pki):
    c, _s = socket_pair()
    with pytest.raises(TimeoutError) as ei:
        driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=0.2)
    assert ei.value.errno == errno.ETIMEDOUT


def test_psk_file_mode(tmp_path):
    psk = tmp_path / "psk.txt"
    psk.write_text("alice:" + "11" * 32 + "\nbob:" + "22" * 32 + "\n")
    c, s = socket_pair()
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, None, "h3", psk_file=psk, timeout=5),
        lambda k: driver.server_handshake(k, psk_file=psk, alpns="h3", timeout=5),
        c, s,
    )
    assert isinstance(cr, driver.HandshakeResult), cr
    assert cr.psk and sr.psk and cr.peer_certificate is None


def test_resumption_and_0rtt_through_socket_options(pki):
    c, s = socket_pair()
    cr, _sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c, s,
    )
    assert isinstance(cr, driver.HandshakeResult), cr
    data = cr.get_session_data(timeout=2)
    assert data is not None
    sess = SessionTicket.from_bytes(data)
    assert sess.max_early_data == 0xFFFFFFFF and sess.alpn == "h3"
    assert abi.TransportParam.unpack(sess.kernel_transport_param).max_data == 12345

    c2, s2 = socket_pair()
    cr2, sr2 = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, session=data,
                                          timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c2, s2,
    )
    assert isinstance(cr2, driver.HandshakeResult), cr2
    assert cr2.session_resumed and sr2.session_resumed
    assert cr2.early_data_accepted and sr2.early_data_accepted
    assert c2.state.remote_param == sess.kernel_transport_param
    early_c = [x for x in c2.state.secrets if x.level == abi.CryptoLevel.EARLY]
    early_s = [x for x in s2.state.secrets if x.level == abi.CryptoLevel.EARLY]
    assert [x.send for x in early_c] == [1] and [x.send for x in early_s] == [0]
    assert early_c[0].secret == early_s[0].secret


def test_resumption_with_other_ticket_key_falls_back(pki):
    c, s = socket_pair()
    cr, _ = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c, s,
    )
    data = cr.get_session_data(timeout=2)
    c2, s2 = socket_pair(server_ticket_key=b"\x55" * 64)
    cr2, _sr2 = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, session=data,
                                          timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c2, s2,
    )
    assert isinstance(cr2, driver.HandshakeResult), cr2
    assert not cr2.session_resumed and not cr2.early_data_accepted
    assert cr2.peer_certificate is not None


def test_config_cipher_and_receive_session_ticket(pki):
    conf = abi.Config(payload_cipher_type=abi.TlsCipher.CHACHA20_POLY1305, receive_session_ticket=1)
    c, s = socket_pair(client_config=conf)
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c, s,
    )
    assert cr.cipher == sr.cipher == abi.TlsCipher.CHACHA20_POLY1305
    # receive_session_ticket: the session data was stored back with SESSION_TICKET
    assert SessionTicket.from_bytes(c.session_ticket).cipher_suite == 0x1303


def test_client_certificate_required(pki):
    c, s = socket_pair()
    _cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca,
                                          certfile=pki.client_cert, keyfile=pki.client_key,
                                          timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          cafile=pki.ca, require_client_cert=True, timeout=5),
        c, s,
    )
    assert isinstance(sr, driver.HandshakeResult), sr
    assert sr.peer_certificate.subject.rfc4514_string() == "CN=client"


def test_client_certificate_missing_when_required(pki):
    c, s = socket_pair()
    _cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=2),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          cafile=pki.ca, require_client_cert=True, timeout=2),
        c, s,
    )
    assert isinstance(sr, TlsAlert) and sr.description == AlertDescription.certificate_required


def test_parse_alpns():
    assert driver.parse_alpns("smbd, h3 ,ksmbd") == ["smbd", "h3", "ksmbd"]
    assert driver.parse_alpns(["a", "b"]) == ["a", "b"]
    assert driver.parse_alpns(None) == []
    with pytest.raises(ValueError):
        driver.parse_alpns(["x" * 256])


def test_sslkeylogfile_env(pki, tmp_path, monkeypatch):
    path = tmp_path / "env.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    c, s = socket_pair()
    cr, _ = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5, keylog=lambda line: None),
        c, s,
    )
    assert isinstance(cr, driver.HandshakeResult)
    assert len(path.read_text().splitlines()) == 4


def test_package_exports():
    import pyquic.tls as t

    assert t.client_handshake is driver.client_handshake
    assert t.server_handshake is driver.server_handshake


class _UpgradingServer(FakeQuicSocket):
    """A server whose transport parameters change once the client's are set, as
    the engine's do after a compatible version upgrade (RFC 9368)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.log: list[str] = []

    def getsockopt(self, level, opt, buflen=None):
        if level == abi.SOL_QUIC and opt == abi.SockOpt.TRANSPORT_PARAM_EXT:
            self.log.append("get")
            self.tp = b"tp-v2" if self.state.peer_tp is not None else b"tp-v1"
        return super().getsockopt(level, opt, buflen)

    def setsockopt(self, level, opt, value) -> None:
        if level == abi.SOL_QUIC and opt == abi.SockOpt.TRANSPORT_PARAM_EXT:
            self.log.append("set")
        super().setsockopt(level, opt, value)


def test_server_sets_peer_transport_params_before_reading_its_own(pki):
    c = FakeQuicSocket(False, b"client-tp")
    s = _UpgradingServer(True, b"")
    c.peer, s.peer = s, c
    cr, sr = run_pair(
        lambda k: driver.client_handshake(k, "localhost", "h3", cafile=pki.ca, timeout=5),
        lambda k: driver.server_handshake(k, pki.server_cert, pki.server_key, alpns="h3",
                                          timeout=5),
        c, s,
    )
    assert isinstance(cr, driver.HandshakeResult), cr
    assert isinstance(sr, driver.HandshakeResult), sr
    assert s.log == ["set", "get"]
    assert s.state.peer_tp == b"client-tp"
    assert c.state.peer_tp == b"tp-v2"  # the EncryptedExtensions carried the late value
    assert cr.peer_transport_parameters == b"tp-v2"


class _DyingSocket(FakeQuicSocket):
    """A client whose connection is closed by the peer while it waits."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.dead = False

    def kill(self) -> None:
        self.dead = True
        os.write(self._w, b"x")  # the kernel's poll reports a closed socket readable

    def recvmsg(self, bufsize, ancbufsize=0, flags=0):
        if self.dead:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return super().recvmsg(bufsize, ancbufsize, flags)

    def getsockopt(self, level, opt, buflen=None):
        if level == socket.SOL_SOCKET and opt == socket.SO_ERROR:
            return errno.ECONNRESET if self.dead else 0
        if level == abi.SOL_QUIC and opt == abi.SockOpt.CONNECTION_CLOSE:
            return abi.ConnectionClose(0x10A, 0, b"peer said no").pack()
        return super().getsockopt(level, opt, buflen)


def test_connection_closed_during_handshake_fails_fast_with_its_errno(pki):
    c = _DyingSocket(False, b"ctp")
    s = FakeQuicSocket(True, b"stp")
    c.peer, s.peer = s, c
    s.tamper = lambda level, data: None  # the server's flight never arrives
    timer = threading.Timer(0.3, c.kill)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ConnectionResetError) as ei:
            driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=30)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 15  # woken by readiness, not by the 30 s timeout
    assert ei.value.errno == errno.ECONNRESET
    assert "0x10a" in str(ei.value) and "peer said no" in str(ei.value)


def test_coalesce_joins_runs_of_one_level():
    out = [(1, b"sh"), (2, b"ee"), (2, b"cert"), (2, b"fin"), (0, b"nst")]
    assert driver._coalesce(out) == [(1, b"sh"), (2, b"eecertfin"), (0, b"nst")]
    assert driver._coalesce([(2, b"a"), (1, b"b"), (2, b"c")]) == [(2, b"a"), (1, b"b"), (2, b"c")]
    assert driver._coalesce([]) == []
    assert driver._coalesce([(2, b"x")]) == [(2, b"x")]
