"""Streams (func_test.c do_client_stream_test) over a handshaken pair."""

from __future__ import annotations

import errno

import pytest

from pyquic import abi
from pyquic.abi.constants import MSG_FIN, MSG_SYN, SOL_QUIC

from .conftest import echo_server, join, qrecv, qsend, recv_message, set_tp

O = abi.SockOpt
NEW = abi.StreamFlag.NEW
FIN = abi.StreamFlag.FIN
UNI = abi.StreamFlag.UNI
DONTWAIT = abi.StreamFlag.DONTWAIT


def _open(sock, sid: int, flags: int = 0) -> int:  # type: ignore[no-untyped-def]
    raw = sock.getsockopt(SOL_QUIC, O.STREAM_OPEN, abi.StreamInfo(sid, flags).pack())
    return abi.StreamInfo.unpack(raw).stream_id


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def test_stream_sequence(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    t, out = echo_server(pair.server, stop_after=8)
    c.settimeout(10)
    # send(MSG_SYN) opens stream 0; a second MSG_SYN while it is open is refused
    assert c.send(b"quic ", MSG_SYN) == 5
    assert _errno(c.send, b"test1", MSG_SYN) == errno.EINVAL
    c.send(b"test2", MSG_FIN)
    assert recv_message(c)[:2] == (b"quic test2", 0)
    # next uni stream (2) then next bidi stream (4)
    c.send(b"quic test3", MSG_SYN | MSG_FIN | UNI)
    data, sid, _ = recv_message(c)
    assert data == b"quic test3" and sid == 3
    c.send(b"quic test4", MSG_SYN | MSG_FIN)
    assert recv_message(c)[:2] == (b"quic test4", 4)
    # STREAM_OPEN: a closed id fails, a given id, the next bidi, the next uni
    assert _errno(_open, c, 0) in (errno.EINVAL, errno.ENOSTR)
    assert _open(c, 6) == 6
    c.send(b"quic test6", MSG_FIN)
    assert recv_message(c)[:2] == (b"quic test6", 7)  # 6 is a client uni stream
    assert _open(c, -1) == 8
    c.send(b"quic test7", MSG_FIN)
    assert recv_message(c)[:2] == (b"quic test7", 8)
    assert _open(c, -1, UNI) == 10
    c.send(b"quic test8", MSG_FIN)
    assert recv_message(c)[:2] == (b"quic test8", 11)
    # sendmsg(NEW) on a closed stream, and opening a stream twice, fail
    assert _errno(qsend, c, b"quic ", 0, NEW) in (errno.EINVAL, errno.ENOSTR)
    assert qsend(c, b"quic ", 12, NEW) == 5
    assert _errno(qsend, c, b"test10", 12, NEW) == errno.EINVAL
    qsend(c, b"test11", 12, FIN)
    assert recv_message(c)[:2] == (b"quic test11", 12)
    # sid -1 with NEW|UNI opens the next uni stream (14); again while open fails
    assert qsend(c, b"quic ", -1, NEW | UNI) == 5
    assert _errno(qsend, c, b"test12", -1, NEW | UNI) == errno.EINVAL
    qsend(c, b"test13", -1, FIN)
    assert recv_message(c)[:2] == (b"quic test13", 15)
    assert join(t, out) == 8


def test_several_streams_any_order(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    t, out = echo_server(pair.server, stop_after=3)
    c.settimeout(10)
    for sid in (16, 20, 24):
        assert _open(c, sid) == sid
    qsend(c, b"c-", 24, 0)
    qsend(c, b"a-", 16, 0)
    qsend(c, b"b-", 20, 0)
    qsend(c, b"B", 20, FIN)
    qsend(c, b"A", 16, FIN)
    qsend(c, b"C", 24, FIN)
    got = {}
    for _ in range(3):
        data, sid, _ = recv_message(c)
        got[sid] = data
    assert got == {16: b"a-A", 20: b"b-B", 24: b"c-C"}
    assert join(t, out) == 3


def test_stream_limit_dontwait_eagain_then_max_streams(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(server_setup=lambda s: set_tp(s, max_streams_bidi=2))
    c, s = pair.client, pair.server
    c.settimeout(10)
    s.settimeout(10)
    assert _open(c, 0) == 0
    assert _open(c, 4) == 4
    # beyond the peer's initial limit: EAGAIN with DONTWAIT
    assert _errno(_open, c, 8, DONTWAIT) == errno.EAGAIN
    # the same for sendmsg with the stream DONTWAIT flag (socket.c
    # quic_wait_for_stream); with a socket timeout set this must still be
    # EAGAIN at once, not a wait for POLLOUT ending in a timeout
    assert _errno(qsend, c, b"x", 8, NEW | DONTWAIT) == errno.EAGAIN
    # finishing streams on both sides lets the server raise MAX_STREAMS
    for sid in (0, 4):
        qsend(c, b"done", sid, FIN)
        data, rsid, _ = recv_message(s)
        assert data == b"done" and rsid == sid
        qsend(s, b"ok", sid, FIN)
        assert recv_message(c)[:2] == (b"ok", sid)
    c.settimeout(None)
    assert _open(c, 8) == 8  # blocks until MAX_STREAMS arrives
    qsend(c, b"late", 8, FIN)
    assert recv_message(s)[:2] == (b"late", 8)


def test_reset_rules_and_send_after_reset(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(10)
    s.settimeout(10)
    # reset of a never-opened (peer-initiated, not yet existing) or closed stream fails
    qsend(c, b"x", 0, NEW | FIN)
    assert recv_message(s)[:2] == (b"x", 0)
    qsend(s, b"y", 0, FIN)
    assert recv_message(c)[:2] == (b"y", 0)
    assert _errno(c.setsockopt, SOL_QUIC, O.STREAM_RESET, abi.ErrInfo(0, 1).pack()) in (
        errno.EINVAL, errno.ENOSTR)
    assert _errno(c.setsockopt, SOL_QUIC, O.STREAM_RESET, abi.ErrInfo(1, 1).pack()) in (
        errno.EINVAL, errno.ENOSTR)
    # local reset then send (with and without FIN) fails
    assert _open(c, 4) == 4
    qsend(c, b"a", 4, 0)
    c.setsockopt(SOL_QUIC, O.STREAM_RESET, abi.ErrInfo(4, 1).pack())
    assert _errno(qsend, c, b"b", 4, 0) in (errno.EINVAL, errno.ENOSTR)
    assert _errno(qsend, c, b"b", 4, FIN) in (errno.EINVAL, errno.ENOSTR)


def test_stop_sending_then_send_fails(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(10)
    s.settimeout(10)
    s.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(abi.EventType.STREAM_UPDATE, 1).pack())
    c.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(abi.EventType.STREAM_UPDATE, 1).pack())
    qsend(c, b"client stop_sending", 0, NEW)
    # events come ahead of stream data (inqueue.c quic_inq_event_recv): the
    # first data of stream 0 raises STREAM_UPDATE RECV_RECV on the server
    for _ in range(10):
        data, sid, flags = qrecv(s)
        if not flags & abi.MsgFlag.NOTIFICATION:
            break
        ev = abi.decode_event(data)
        assert isinstance(ev, abi.StreamUpdateEvent) and ev.id == 0
        assert ev.state == abi.StreamState.RECV_RECV
    assert sid == 0 and data and b"client stop_sending".startswith(data)
    s.setsockopt(SOL_QUIC, O.STREAM_STOP_SENDING, abi.ErrInfo(0, 1).pack())
    # the client learns the stream was reset on its side (STREAM_UPDATE RESET_SENT)
    for _ in range(10):
        data, _anc, mflags, _ = c.recvmsg(4096, 32)
        if mflags & abi.MsgFlag.NOTIFICATION:
            ev = abi.decode_event(data)
            if isinstance(ev, abi.StreamUpdateEvent) and ev.id == 0:
                break
    else:
        raise AssertionError("no STREAM_UPDATE on the client")
    assert _errno(qsend, c, b"more", 0, 0) in (errno.EINVAL, errno.ENOSTR)
    assert _errno(qsend, c, b"more", 0, FIN) in (errno.EINVAL, errno.ENOSTR)


def test_zero_length_send_needs_fin(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    s.settimeout(10)
    assert _errno(qsend, c, b"", 0, NEW) == errno.EMSGSIZE
    assert qsend(c, b"abc", 0, NEW) == 3
    assert qsend(c, b"", 0, FIN) == 0
    assert recv_message(s)[:2] == (b"abc", 0)


def test_large_transfer_and_fin_in_msg_flags(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(20)
    s.settimeout(20)
    blob = bytes(range(256)) * 4096  # 1 MiB, more than the initial flow-control window
    t_out: dict = {}

    import threading

    def reader() -> None:
        buf = b""
        for _ in range(100000):
            data, _anc, mflags, _ = s.recvmsg(65536, 0)  # no cmsg room: FIN in msg_flags
            buf += data
            if mflags & FIN:
                break
        t_out["data"] = buf

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    # open the stream first: sendall repeats its flags on every partial send,
    # and NEW on an open stream is EINVAL (socket.c quic_sock_send_stream);
    # without a STREAM_INFO cmsg the send goes to the last opened stream
    assert _open(c, -1) == 0
    c.sendall(blob)
    c.send(b"", MSG_FIN)
    t.join(20)
    assert t_out.get("data") == blob


def test_fileno_readiness_with_select_and_asyncio(make_pair) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import select

    pair = make_pair()
    c, s = pair.client, pair.server
    r, w, _ = select.select([c], [c], [], 0)
    assert r == [] and w == [c]  # established, nothing queued, room to send
    qsend(s, b"ping", 1, NEW | FIN)  # a server bidi stream
    r, _, _ = select.select([c], [], [], 5.0)
    assert r == [c]
    assert recv_message(c)[:2] == (b"ping", 1)
    r, _, _ = select.select([c], [], [], 0)
    assert r == []  # level-triggered: cleared once the queue is empty

    async def wait_readable() -> bytes:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(c.fileno(), ready)
        try:
            qsend(s, b"pong", 5, NEW | FIN)
            await asyncio.wait_for(fut, 5.0)
        finally:
            loop.remove_reader(c.fileno())
        return recv_message(c)[0]

    assert asyncio.run(wait_readable()) == b"pong"
