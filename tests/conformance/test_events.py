"""Events (func_test.c do_client_notification_test) and close info
(do_client_close_test)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC

from .conftest import echo_server, free_port, join, qrecv, qsend, recv_event, sockaddr

O = abi.SockOpt
E = abi.EventType
S = abi.StreamState
NEW = abi.StreamFlag.NEW
FIN = abi.StreamFlag.FIN


def _event(sock, t: int, on: bool = True) -> None:  # type: ignore[no-untyped-def]
    sock.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, int(on)).pack())


def _data(sock) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    buf = b""
    for _ in range(1000):
        data, sid, flags = qrecv(sock)
        assert not flags & abi.MsgFlag.NOTIFICATION, abi.decode_event(data)
        buf += data
        if flags & FIN:
            return buf, sid
    raise AssertionError("no FIN")


def test_stream_update_states(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server)
    _event(c, E.STREAM_UPDATE)
    # the raw event bytes: type byte then struct quic_stream_update (25 bytes)
    qsend(c, b"quic event test2", 100, NEW | FIN)
    raw, _anc, mflags, _ = c.recvmsg(4096, 32)
    assert mflags & abi.MsgFlag.NOTIFICATION and mflags & socket.MSG_EOR
    assert raw[0] == E.STREAM_UPDATE and len(raw) == 25
    ev: Any = abi.decode_event(raw)
    assert (ev.id, ev.state) == (100, S.SEND_RECVD)
    ev = recv_event(c)
    assert (ev.id, ev.state) == (100, S.RECV_RECV)
    ev = recv_event(c)
    assert (ev.id, ev.state, ev.finalsz) == (100, S.RECV_RECVD, len(b"quic event test2"))
    assert _data(c) == (b"quic event test2", 100)
    # local reset: the peer acknowledges -> RESET_RECVD with our errcode
    qsend(c, b"client reset", 102, NEW)
    c.setsockopt(SOL_QUIC, O.STREAM_RESET, abi.ErrInfo(102, 1).pack())
    ev = recv_event(c)
    assert (ev.id, ev.state, ev.errcode) == (102, S.SEND_RESET_RECVD, 1)
    # peer STOP_SENDING: RESET_SENT then RESET_RECVD
    qsend(c, b"client stop_sending", 104, NEW)
    ev = recv_event(c)
    assert (ev.id, ev.state, ev.errcode) == (104, S.SEND_RESET_SENT, 1)
    ev = recv_event(c)
    assert (ev.id, ev.state, ev.errcode) == (104, S.SEND_RESET_RECVD, 1)
    # peer reset of its uni stream: RECV then RESET_RECVD
    qsend(c, b"client reset", 106, NEW | FIN)
    ev = recv_event(c)
    assert (ev.id, ev.state) == (106, S.SEND_RECVD)
    ev = recv_event(c)
    assert (ev.id, ev.state) == (107, S.RECV_RECV)
    # The data may be read before the peer's RESET_STREAM arrives (which then
    # discards the rest): a timing matter, on the kernel too.
    for _ in range(10):
        data, sid, flags = qrecv(c)
        if flags & abi.MsgFlag.NOTIFICATION:
            break
        assert sid == 107 and b"client reset".startswith(data)
    else:
        raise AssertionError("no event after the peer's data")
    ev = abi.decode_event(data)
    assert (ev.id, ev.state, ev.errcode) == (107, S.RECV_RESET_RECVD, 1)
    _event(c, E.STREAM_UPDATE, False)
    qsend(c, b"quiet", 108, NEW | FIN)
    assert _data(c) == (b"quiet", 108)
    pair.server.close()
    join(t, out)


def test_max_stream_event(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server)
    _event(c, E.STREAM_MAX_STREAM)
    # Finishing a bidi stream in both directions lets the peer raise MAX_STREAMS.
    qsend(c, b"bidi", 0, NEW | FIN)
    got = []
    for _ in range(3):
        data, _sid, flags = qrecv(c)
        if flags & abi.MsgFlag.NOTIFICATION:
            got.append(abi.decode_event(data))
            if got and isinstance(got[-1], abi.StreamMaxStreamEvent):
                break
    evs = [e for e in got if isinstance(e, abi.StreamMaxStreamEvent)]
    assert evs and evs[0].max_stream & 0x3 == 0 and (evs[0].max_stream >> 2) >= 100
    # uni: the peer's reply stream is closed at our side when read -> we raise
    # MAX_STREAMS(uni) to it; our own uni stream closing raises ours.
    qsend(c, b"uni", 2, NEW | FIN)
    deadline = time.monotonic() + 5
    uni = None
    while time.monotonic() < deadline and uni is None:
        data, _sid, flags = qrecv(c)
        if flags & abi.MsgFlag.NOTIFICATION:
            ev = abi.decode_event(data)
            if isinstance(ev, abi.StreamMaxStreamEvent) and ev.max_stream & 0x2:
                uni = ev
    assert uni is not None and uni.max_stream & 0x3 == 0x2
    pair.server.close()
    join(t, out)


def test_migration_events_local_and_peer(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server)
    _event(c, E.CONNECTION_MIGRATION)
    host = c.getsockname()[0]
    port = free_port(host)
    c.setsockopt(SOL_QUIC, O.CONNECTION_MIGRATION, sockaddr((host, port)))
    qsend(c, b"quic event test17", 108, NEW | FIN)
    ev = recv_event(c)
    assert isinstance(ev, abi.ConnectionMigrationEvent) and ev.local
    assert _data(c) == (b"quic event test17", 108)
    assert c.getsockname() == (host, port)
    old_peer = c.getpeername()
    time.sleep(0.5)  # let the path validation of our migration finish (func_test sleeps 1 s)
    qsend(c, b"client migration", 110, NEW | FIN)
    # The kernel queues the peer-migration event before the reply; the order
    # depends on when path validation ends, so accept either order here.
    ev = None
    data = b""
    for _ in range(10):
        d, sid, flags = qrecv(c)
        if flags & abi.MsgFlag.NOTIFICATION:
            ev = abi.decode_event(d)
        else:
            data += d
            assert sid == 111  # 110 is uni: the reply comes on 111
        if ev is not None and flags & FIN or (ev is not None and data.endswith(b"migration")):
            break
    assert isinstance(ev, abi.ConnectionMigrationEvent) and not ev.local
    assert data == b"client migration"
    assert c.getpeername() != old_peer
    assert c.getpeername() == pair.server.getsockname()
    pair.server.close()
    join(t, out)


def test_key_update_and_token_and_cid_events(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server)
    _event(c, E.KEY_UPDATE)
    c.setsockopt(SOL_QUIC, O.KEY_UPDATE, None, 0)  # local: no event
    qsend(c, b"quic event test21", 112, NEW | FIN)
    assert _data(c) == (b"quic event test21", 112)
    time.sleep(0.3)
    qsend(c, b"client key_update", 116, NEW | FIN)  # the peer updates: event
    ev = recv_event(c)
    assert isinstance(ev, abi.KeyUpdateEvent) and ev.phase == 0
    assert _data(c) == (b"client key_update", 116)
    _event(c, E.KEY_UPDATE, False)
    _event(c, E.NEW_TOKEN)
    qsend(c, b"client new_token", 120, NEW | FIN)
    ev = recv_event(c)
    assert isinstance(ev, abi.NewTokenEvent) and ev.token
    assert _data(c) == (b"client new_token", 120)
    _event(c, E.NEW_TOKEN, False)
    _event(c, E.CONNECTION_ID)
    for dest in (0, 1):
        raw = c.getsockopt(SOL_QUIC, O.CONNECTION_ID, abi.ConnectionIdInfo(dest, 0, 0).pack())
        info = abi.ConnectionIdInfo.unpack(raw)
        prior = info.prior_to + 1
        c.setsockopt(SOL_QUIC, O.CONNECTION_ID, abi.ConnectionIdInfo(dest, 0, prior).pack())
        ev = recv_event(c)
        assert isinstance(ev, abi.ConnectionIdEvent)
        assert bool(ev.dest) == bool(dest) and ev.prior_to == prior
    pair.server.close()
    join(t, out)


def test_peer_close_event_carries_close_info(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server)
    _event(c, E.CONNECTION_CLOSE)
    qsend(c, b"client close", 0, NEW | FIN)
    assert _data(c) == (b"client close", 0)
    ev = recv_event(c)
    assert isinstance(ev, abi.ConnectionCloseEvent)
    assert (ev.errcode, ev.frame, ev.phrase) == (10, 0, b"this is app err")
    join(t, out)
    # after the peer's close the socket reads as closed
    with pytest.raises(OSError):
        for _ in range(10):
            c.recvmsg(100)


def test_events_do_not_disturb_data_order(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(10)
    s.settimeout(10)
    _event(s, E.STREAM_UPDATE)
    for i in range(5):
        qsend(c, b"part%d" % i, 0, NEW if i == 0 else 0)
    qsend(c, b"end", 0, FIN)
    data = b""
    for _ in range(50):
        d, _sid, flags = qrecv(s)
        if flags & abi.MsgFlag.NOTIFICATION:
            continue
        data += d
        if flags & FIN:
            break
    assert data == b"part0part1part2part3part4end"
