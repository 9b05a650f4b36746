"""The request/response path of user-backend sockets over loopback: the
engine's deferred ACK (``QuicConnection.settle``) is always processed, by the
next send or by the loop's settle before it sleeps (``IOLoop._unsettled``)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC
from pyquic.engine.connection import QuicConnection
from pyquic.user.loop import LOOP
from pyquic.user.socket import QuicSocket

from .test_socket import _connected, _handshake_pair, _send_stream

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
    with _connected(cert) as (c, srv):
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


def test_settled_ack_event_reaches_the_waiting_reader(
        cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ACK on a reply packet (ACK + in-order STREAM: the fast receive path
    defers it to ``settle``) acknowledges the request that finished the
    client's send side with FIN: settling it queues a STREAM_UPDATE
    (SEND_RECVD) without any new datagram.  A client blocked in recvmsg must
    get that event, not sleep in select with it queued until an unrelated
    timer or datagram (8696f77: the leader checks ``done()`` after
    ``_timeout`` settled, and ``_io_settle`` wakes a waiter).

    The reply carries no FIN (the fast path leaves a FIN to the general path,
    which processes the ACK at once); the client's max_ack_delay is 10 s so
    that no timer of its own ends such a sleep; the server is silent after
    its reply."""
    E = abi.EventType
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        # the client's ACK of the reply waits 10 s (its only timer, with the
        # 30 s idle timeout), and the server's PTO includes those 10 s
        c.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM,
                     abi.TransportParam(max_ack_delay=10_000_000).pack())
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        c.settimeout(30)
        srv.settimeout(30)
        # stream 0 open both ways and data received on it by the client: the
        # reply then takes the fast receive path (not for a new stream or FIN)
        _send_stream(c, b"open", 0, abi.StreamFlag.NEW)
        assert srv.recv(1000) == b"open"
        _send_stream(srv, b"ok", 0, 0)
        assert c.recv(1000) == b"ok"
        c.setsockopt(SOL_QUIC, abi.SockOpt.EVENT,
                     abi.EventOption(E.STREAM_UPDATE, 1).pack())
        conn = c._conn
        send = conn.streams.streams[0].send
        # the loop's settle of the client processed the deferred ACK of the
        # request, and that completed the stream: (deferred, state before, after)
        settles: list[tuple[bool, int, int]] = []
        orig_settle = c._io_settle

        def io_settle(now: float) -> None:
            before = (conn._ack_later is not None, int(send.state))
            orig_settle(now)
            settles.append((*before, int(send.state)))

        monkeypatch.setattr(c, "_io_settle", io_settle)
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                data, anc, _flags, _ = srv.recvmsg(1000, 64)
                assert data == b"request", data
                sinfo, _ = abi.parse_ancdata(anc)
                assert sinfo is not None and sinfo.stream_id == 0, anc
                assert sinfo.stream_flags & abi.StreamFlag.FIN, sinfo
                # reply once the client polls for it (its own recvmsg leads),
                # so that the client's batch, not another poller, gets it
                assert _wait_for(lambda: LOOP._leader_obj is c and LOOP._polling)
                _send_stream(srv, b"reply", 0, 0)  # ACK + STREAM, no FIN
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        items: list[tuple[bytes, list[tuple[int, int, bytes]], int, Any]] = []

        def read() -> None:  # the reply and the event, nothing else
            try:
                for _ in range(2):
                    items.append(c.recvmsg(4096, 64))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        _send_stream(c, b"request", 0, abi.StreamFlag.FIN)
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # The server is silent after its reply: no datagram brings the event,
        # and no timer of the client is due within 10 s.  A reader still
        # blocked after 2 s sleeps with the event queued (a socket timeout
        # would hide the bug: the leader's wait ends at the deadline, and it
        # then finds the event).
        reader.join(2)
        assert not reader.is_alive(), f"reader asleep with the event queued: {items}"
        t.join(30)
        assert not t.is_alive() and not errors, errors
        events = [i for i in items if i[2] & abi.MsgFlag.NOTIFICATION]
        assert len(events) == 1, items
        data = [i for i in items if not i[2] & abi.MsgFlag.NOTIFICATION]
        assert data[0][0] == b"reply", items
        raw, anc, mflags, _ = events[0]
        assert mflags & socket.MSG_EOR and anc == [], events
        # kernel layout: type byte, then struct quic_stream_update (25 bytes);
        # the ACK of a stream's data sets only id and state (frame.c)
        assert raw[0] == E.STREAM_UPDATE and len(raw) == 25, raw
        ev: Any = abi.decode_event(raw)
        assert (ev.id, ev.state, ev.errcode, ev.finalsz) == \
            (0, abi.StreamState.SEND_RECVD, 0, 0), ev
        # the path under test was taken: the reply's ACK was deferred past the
        # batch and the loop's settle processed it, completing the stream
        recvd = int(abi.StreamState.SEND_RECVD)
        assert (True, int(abi.StreamState.SEND_SENT), recvd) in settles, settles
        with pytest.raises(BlockingIOError):  # nothing else was queued
            c.recvmsg(4096, 64, socket.MSG_DONTWAIT)
        srv.close()
