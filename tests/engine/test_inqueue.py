"""Tests for pyquic.engine.inqueue: the kernel's receive ordering."""

from __future__ import annotations

from pyquic.engine.inqueue import (
    MSG_EOR,
    MSG_QUIC_DATAGRAM,
    MSG_QUIC_NOTIFICATION,
    STREAM_FIN,
    InQueue,
)


def test_handshake_before_events_before_data() -> None:
    q = InQueue()
    q.events = 1 << 1
    q.push_stream(0, b"data", False)
    q.push_event(1, b"\x01evt")
    q.push_handshake(2, b"hs")
    item, _ = q.recv(100)
    assert item is not None and item.level == 2 and item.msg_flags & MSG_EOR
    item, _ = q.recv(100)
    assert item is not None and item.msg_flags == MSG_QUIC_NOTIFICATION | MSG_EOR
    item, freed = q.recv(100)
    assert item is not None and item.data == b"data" and item.stream_id == 0 and freed == 4
    assert q.recv(100) == (None, 0)


def test_disabled_event_not_queued() -> None:
    q = InQueue()
    assert not q.push_event(3, b"\x03")
    assert not q.readable()


def test_one_stream_per_read_and_fin() -> None:
    q = InQueue()
    q.push_stream(0, b"ab", False)
    q.push_stream(0, b"cd", True)
    q.push_stream(4, b"xy", False)
    item, _ = q.recv(100)
    assert item is not None
    assert (item.data, item.stream_id, item.stream_flags) == (b"abcd", 0, STREAM_FIN)
    item, _ = q.recv(100)
    assert item is not None and (item.data, item.stream_id) == (b"xy", 4)


def test_partial_stream_read_and_peek() -> None:
    q = InQueue()
    q.push_stream(0, b"abcdef", True)
    item, freed = q.recv(4, peek=True)
    assert item is not None and item.data == b"abcd" and freed == 0
    item, freed = q.recv(4)
    assert item is not None and item.data == b"abcd" and item.stream_flags == 0 and freed == 4
    item, _ = q.recv(4)
    assert item is not None and item.data == b"ef" and item.stream_flags == STREAM_FIN


def test_datagram_partial_read_keeps_rest() -> None:
    q = InQueue()
    q.push_datagram(b"0123456789")
    item, _ = q.recv(4)
    assert item is not None and item.data == b"0123"
    assert item.msg_flags == MSG_QUIC_DATAGRAM  # no EOR yet
    item, _ = q.recv(100)
    assert item is not None and item.data == b"456789"
    assert item.msg_flags == MSG_QUIC_DATAGRAM | MSG_EOR


def test_empty_fin_chunk() -> None:
    q = InQueue()
    q.push_stream(8, b"", True)
    item, _ = q.recv(10)
    assert item is not None and item.data == b"" and item.stream_flags == STREAM_FIN


def test_early_data_held_until_released() -> None:
    q = InQueue()
    q.push_stream(0, b"early", False, early=True)
    assert not q.readable()
    q.release_early()
    item, _ = q.recv(10)
    assert item is not None and item.data == b"early"


def test_drop_stream() -> None:
    q = InQueue()
    q.push_stream(0, b"aa", False)
    q.push_stream(4, b"bb", False)
    q.drop_stream(0)
    item, _ = q.recv(10)
    assert item is not None and item.stream_id == 4 and q.data_bytes == 0


def test_msg_flag_constants_are_plain_ints() -> None:
    """recvmsg's msg_flags is a plain int, as a kernel socket's (socket.MSG_EOR
    is an IntFlag member, whose | and & are slow and would leak into it)."""
    from pyquic.engine import inqueue

    assert type(inqueue.MSG_EOR) is int and type(inqueue.MSG_TRUNC) is int
