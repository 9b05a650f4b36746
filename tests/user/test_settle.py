"""The request/response path of user-backend sockets over loopback: the
engine's deferred ACK (``QuicConnection.settle``) is always processed, by the
next send or by the loop's settle before it sleeps (``IOLoop._unsettled``)."""

from __future__ import annotations

import threading
import time

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC
from pyquic.engine.connection import QuicConnection
from pyquic.user.loop import LOOP
from pyquic.user.socket import QuicSocket

from .test_socket import _handshake_pair, _send_stream

APP = 2
ROUNDS = 300


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory):
    from tests.conformance.conftest import make_cert

    return make_cert(str(tmp_path_factory.mktemp("user-settle-cert")))


def _wait_for(cond, timeout: float = 10.0) -> bool:
    """Poll ``cond`` (under the loop's lock) until it holds; bounded."""
    end = time.monotonic() + timeout
    while True:
        with LOOP.lock:
            if cond():
                return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.01)


def test_request_response_leaves_no_deferred_ack(cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many exchanges on one stream: every reply's ACK (deferred by the fast
    receive path) is processed, so the client's sent packets stay few; once
    idle no deferred ACK and no unsettled socket remain."""
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        c.settimeout(30)
        srv.settimeout(30)
        errors: list[BaseException] = []

        def echo() -> None:
            try:
                for _ in range(ROUNDS):
                    data = srv.recv(1000)
                    if not data:
                        return
                    _send_stream(srv, data, 0, 0)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        # stream 0 open both ways before the loop, so the exchanges take the
        # engine's fast receive path (ACK + in-order STREAM)
        _send_stream(c, b"open", 0, abi.StreamFlag.NEW)
        assert srv.recv(1000) == b"open"
        _send_stream(srv, b"ok", 0, 0)
        assert c.recv(1000) == b"ok"
        conn = c._conn
        settled: list[int] = []  # deferred ACKs the client's settle() processed
        orig = QuicConnection.settle

        def spy(self: QuicConnection) -> bool:
            if self is conn and self._ack_later is not None:
                settled.append(1)
            return orig(self)

        monkeypatch.setattr(QuicConnection, "settle", spy)
        t = threading.Thread(target=echo, daemon=True)
        t.start()
        most_sent = 0
        for i in range(ROUNDS):
            msg = b"m%05d" % i
            _send_stream(c, msg, 0, 0)
            got = b""
            for _ in range(100):  # a reply may come in pieces
                got += c.recv(1000)
                if len(got) >= len(msg):
                    break
            assert got == msg
            with LOOP.lock:
                most_sent = max(most_sent, len(conn.spaces[APP].sent))
        t.join(30)
        assert not t.is_alive() and not errors, errors
        # the replies' ACKs were deferred (the path under test was taken) ...
        assert len(settled) >= ROUNDS // 2, len(settled)
        # ... and processed: the client's sent packets did not pile up
        assert most_sent < 32, most_sent
        # idle: the loop settled the last one before sleeping
        assert _wait_for(lambda: conn._ack_later is None), conn._ack_later
        assert _wait_for(lambda: len(conn.spaces[APP].sent) <= 2), sorted(conn.spaces[APP].sent)
        assert _wait_for(lambda: not LOOP._unsettled), LOOP._unsettled
        assert _wait_for(lambda: srv._conn._ack_later is None)
        srv.close()
