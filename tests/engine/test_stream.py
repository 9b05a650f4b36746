"""Tests for pyquic.engine.stream: states, flow control, reassembly, kernel errnos."""

from __future__ import annotations

import errno
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from pyquic.engine import errors as E
from pyquic.engine.errors import QuicError
from pyquic.engine.stream import (
    QuicStreamTable,
    RangeSet,
    RecvStream,
    SendStream,
    stream_is_bidi,
    stream_is_client,
    stream_is_local,
    stream_is_uni,
)

try:
    from pyquic.abi import StreamFlag, StreamState
except ImportError:
    from pyquic.abi.constants import StreamFlag, StreamState

NEW = int(StreamFlag.NEW)
UNI = int(StreamFlag.UNI)
FIN = int(StreamFlag.FIN)
SNDBLOCK = int(StreamFlag.SNDBLOCK)
DONTWAIT = int(StreamFlag.DONTWAIT)


def drain(s: SendStream, max_bytes: int = 1000) -> list[tuple[int, bytes, bool]]:
    out = []
    for _ in range(10000):
        c = s.next_chunk(max_bytes)
        if c is None:
            break
        out.append(c)
    return out


# ------------------------------------------------------------------ helpers
def test_stream_id_helpers() -> None:
    assert stream_is_bidi(0) and stream_is_bidi(1) and not stream_is_bidi(2)
    assert stream_is_uni(2) and stream_is_uni(3) and not stream_is_uni(4)
    assert stream_is_client(0) and stream_is_client(2) and not stream_is_client(3)
    assert stream_is_local(0, True) and not stream_is_local(0, False)
    assert stream_is_local(3, False) and not stream_is_local(3, True)


def test_rangeset_add_subtract() -> None:
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    r.add(20, 30)  # touching merges
    assert list(r) == [(10, 40)]
    r.subtract(15, 25)
    assert list(r) == [(10, 15), (25, 40)]
    r.subtract(0, 12)
    assert list(r) == [(12, 15), (25, 40)]
    assert r.contains(26, 40) and not r.contains(14, 26)
    r.add(0, 100)
    assert list(r) == [(0, 100)]
    r.subtract(0, 100)
    assert not r


# --------------------------------------------------------------- SendStream
def test_send_states_and_chunks() -> None:
    s = SendStream(max_data=100)
    assert s.state == StreamState.SEND_READY
    assert s.write(b"hello") == 5
    assert s.state == StreamState.SEND_SEND
    assert s.write(b" world", fin=True) == 6
    assert s.state == StreamState.SEND_SENT
    with pytest.raises(OSError) as ei:
        s.write(b"x")
    assert ei.value.errno == errno.EINVAL
    chunks = drain(s, 4)
    assert b"".join(c[1] for c in chunks) == b"hello world"
    assert [c[0] for c in chunks] == [0, 4, 8]
    assert [c[2] for c in chunks] == [False, False, True]
    assert not s.has_data()
    assert s.on_acked(4, 4, False) is False
    assert s.on_acked(8, 3, True) is False
    assert s.state == StreamState.SEND_SENT
    assert s.on_acked(0, 4, False) is True
    assert s.state == StreamState.SEND_RECVD
    assert s.on_acked(0, 4, False) is False  # only once


def test_send_fin_only_and_zero_length() -> None:
    s = SendStream(max_data=10)
    assert s.write(b"", fin=True) == 0
    assert s.state == StreamState.SEND_SENT
    assert s.next_chunk(100) == (0, b"", True)
    assert s.next_chunk(100) is None
    s.on_lost(0, 0, True)
    assert s.next_chunk(100) == (0, b"", True)
    assert s.on_acked(0, 0, True)


def test_send_flow_control_bound_and_blocked() -> None:
    s = SendStream(max_data=10)
    assert s.write(b"a" * 25, fin=True) == 10
    assert s.state == StreamState.SEND_SEND  # FIN not taken: data did not fit
    assert s.credit() == 0
    assert s.take_data_blocked() == 10
    assert s.take_data_blocked() is None
    assert s.write(b"b") == 0
    assert s.take_data_blocked() is None  # once per limit value
    assert s.on_max_stream_data(5) is False  # never lowers
    assert s.on_max_stream_data(20) is True
    assert s.write(b"c" * 10, fin=True) == 10
    assert s.state == StreamState.SEND_SENT
    assert s.write_offset == 20


def test_send_limit_param_and_conn_credit() -> None:
    s = SendStream(max_data=100)
    assert s.write(b"x" * 50, limit=20) == 20
    assert s.next_chunk(100, conn_credit=5) == (0, b"x" * 5, False)
    assert s.next_chunk(100, conn_credit=0) is None
    assert s.next_chunk(100) == (5, b"x" * 15, False)


def test_send_retransmits_lost_first_without_acked_parts() -> None:
    s = SendStream(max_data=1000)
    s.write(bytes(range(100)))
    assert s.next_chunk(40) == (0, bytes(range(40)), False)
    assert s.next_chunk(40) == (40, bytes(range(40, 80)), False)
    s.write(b"Z" * 10, fin=True)
    s.on_acked(10, 10, False)  # a later retransmission acked part of it
    s.on_lost(0, 40, False)
    # lost parts first, minus the acked [10, 20)
    assert s.next_chunk(100) == (0, bytes(range(10)), False)
    assert s.next_chunk(100) == (20, bytes(range(20, 40)), False)
    # then new data, with FIN
    assert s.next_chunk(100) == (80, bytes(range(80, 100)) + b"Z" * 10, True)
    assert s.next_chunk(100) is None
    s.on_lost(80, 30, True)
    assert s.next_chunk(15) == (80, bytes(range(80, 95)), False)
    assert s.next_chunk(100) == (95, bytes(range(95, 100)) + b"Z" * 10, True)
    for off, ln in ((0, 10), (20, 20), (40, 40), (80, 30)):
        done = s.on_acked(off, ln, off == 80)
    assert done and s.state == StreamState.SEND_RECVD
    assert s.bytes_in_flight_or_buffered == 0


def test_send_buffer_chunks_slice_ack_and_retransmit() -> None:
    """The send buffer keeps written chunks: ranges spanning chunks, small
    writes, dropping acknowledged chunks and retransmitting still work."""
    rng = random.Random(7)
    data = b""
    s = SendStream(max_data=1 << 30)
    for _ in range(300):  # big and small writes, bytes and bytearray
        piece = rng.randbytes(rng.choice((1, 7, 500, 1500, 5000, 70000)))
        src = bytearray(piece) if rng.random() < 0.3 else piece
        assert s.write(src) == len(piece)
        if isinstance(src, bytearray):
            src[:] = b"\0" * len(src)  # the stream kept its own copy
        data += piece
    sent: list[tuple[int, int]] = []
    for _ in range(100_000):
        chunk = s.next_chunk(rng.choice((1, 100, 1200, 3000)))
        if chunk is None:
            break
        off, got, _fin = chunk
        assert got == data[off:off + len(got)]
        sent.append((off, len(got)))
        if rng.random() < 0.1:
            s.on_lost(off, len(got), False)  # comes back before new data
        elif rng.random() < 0.8:
            o, n = sent.pop(rng.randrange(len(sent)))
            s.on_acked(o, n, False)
        if rng.random() < 0.02 and sent:
            o, n = sent[rng.randrange(len(sent))]
            s.on_lost(o, n, False)
    for o, n in sent:
        s.on_acked(o, n, False)
    assert s.bytes_in_flight_or_buffered == 0
    assert s._head == len(s._chunks)  # every chunk released


def test_send_lost_after_ack_is_ignored() -> None:
    s = SendStream(max_data=100)
    s.write(b"abcdef")
    s.next_chunk(100)
    s.on_acked(0, 6, False)
    s.on_lost(0, 6, False)
    assert s.next_chunk(100) is None


def test_send_reset_and_stop_sending() -> None:
    s = SendStream(max_data=100)
    s.write(b"abc")
    assert s.reset(7) == 3
    assert s.state == StreamState.SEND_RESET_SENT and s.errcode == 7
    assert s.next_chunk(100) is None and not s.has_data()
    with pytest.raises(OSError) as ei:
        s.reset(1)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        s.write(b"x")
    assert s.on_stop_sending(9) is None
    assert s.on_reset_acked() is True
    assert s.state == StreamState.SEND_RESET_RECVD
    assert s.on_reset_acked() is False

    s2 = SendStream(max_data=100)
    s2.write(b"12345", fin=True)
    assert s2.on_stop_sending(4) == 5
    assert s2.state == StreamState.SEND_RESET_SENT and s2.errcode == 4

    s3 = SendStream(max_data=100)
    s3.write(b"1", fin=True)
    s3.next_chunk(10)
    s3.on_acked(0, 1, True)
    assert s3.state == StreamState.SEND_RECVD
    assert s3.on_stop_sending(4) is None
    with pytest.raises(OSError) as ei:
        s3.reset(1)
    assert ei.value.errno == errno.EINVAL


# --------------------------------------------------------------- RecvStream
def test_recv_in_order_states() -> None:
    r = RecvStream(max_data=100)
    assert r.state == StreamState.RECV_RECV
    assert r.on_data(0, b"abc", False) == 3
    assert r.read() == (b"abc", False)
    assert r.on_data(3, b"de", True) == 2
    assert r.state == StreamState.RECV_RECVD
    assert r.final_size == 5
    assert r.read(1) == (b"d", False)
    assert r.read() == (b"e", True)
    assert r.state == StreamState.RECV_READ
    assert r.read() == (b"", False)


def test_recv_out_of_order_overlap_duplicate() -> None:
    r = RecvStream(max_data=100)
    assert r.on_data(10, b"KLMNO", False) == 15
    assert r.readable() == 0
    assert r.on_data(5, b"FGHIJKL", False) == 0  # overlaps the held piece
    assert r.on_data(12, b"MN", False) == 0  # duplicate inside a piece
    assert r.on_data(20, b"UV", True) == 7
    assert r.state == StreamState.RECV_SIZE_KNOWN
    assert r.on_data(0, b"ABCDEFG", False) == 0
    assert r.read() == (b"ABCDEFGHIJKLMNO", False)
    assert r.on_data(14, b"OPQRSTU", False) == 0
    assert r.state == StreamState.RECV_RECVD
    assert r.read() == (b"PQRSTUV", True)
    # duplicates after everything arrived are ignored
    assert r.on_data(0, b"ABC", False) == 0


def test_recv_piece_spanning_several_gaps() -> None:
    r = RecvStream(max_data=100)
    r.on_data(2, b"c", False)
    r.on_data(5, b"f", False)
    r.on_data(8, b"i", False)
    r.on_data(1, b"bcdefghij", False)
    r.on_data(0, b"a", False)
    assert r.read() == (b"abcdefghij", False)


def test_recv_flow_control_errors() -> None:
    r = RecvStream(max_data=10)
    r.on_data(0, b"x" * 10, False)
    with pytest.raises(QuicError) as ei:
        r.on_data(10, b"y", False)
    assert ei.value.error_code == E.FLOW_CONTROL_ERROR
    r2 = RecvStream(max_data=100)
    with pytest.raises(QuicError) as ei:
        r2.on_data(0, b"x" * 10, False, conn_credit=9)
    assert ei.value.error_code == E.FLOW_CONTROL_ERROR
    assert r2.on_data(0, b"x" * 10, False, conn_credit=10) == 10


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((0, b"abcde", True), (0, b"abcd", True)),  # final size shrinks
        ((0, b"abcde", True), (0, b"abcdef", True)),  # final size grows
        ((0, b"abcde", True), (5, b"f", False)),  # data beyond the final size
        ((0, b"abcdef", False), (0, b"abc", True)),  # FIN below received data
    ],
)
def test_recv_final_size_errors(first: tuple[int, bytes, bool],
                                second: tuple[int, bytes, bool]) -> None:
    r = RecvStream(max_data=100)
    r.on_data(*first)
    with pytest.raises(QuicError) as ei:
        r.on_data(*second)
    assert ei.value.error_code == E.FINAL_SIZE_ERROR


def test_recv_reset() -> None:
    r = RecvStream(max_data=100)
    r.on_data(0, b"abc", False)
    assert r.on_reset(5, 10) == 7
    assert r.state == StreamState.RECV_RESET_RECVD
    assert (r.errcode, r.final_size) == (5, 10)
    assert r.read() == (b"", False)
    r.reset_read()
    assert r.state == StreamState.RECV_RESET_READ
    with pytest.raises(QuicError) as ei:
        r.on_data(8, b"abc", False)  # beyond the final size from the reset
    assert ei.value.error_code == E.FINAL_SIZE_ERROR

    for final, code in ((2, E.FINAL_SIZE_ERROR), (101, E.FLOW_CONTROL_ERROR)):
        r2 = RecvStream(max_data=100)
        r2.on_data(0, b"abc", False)
        with pytest.raises(QuicError) as ei:
            r2.on_reset(1, final)
        assert ei.value.error_code == code
    r3 = RecvStream(max_data=100)
    r3.on_data(0, b"abc", True)
    with pytest.raises(QuicError) as ei:
        r3.on_data(0, b"abcd", True)
    r4 = RecvStream(max_data=100)
    r4.on_data(5, b"abc", True)
    with pytest.raises(QuicError) as ei:
        r4.on_reset(1, 9)
    assert ei.value.error_code == E.FINAL_SIZE_ERROR
    # reset after all data arrived is ignored (kernel)
    r5 = RecvStream(max_data=100)
    r5.on_data(0, b"abc", True)
    assert r5.on_reset(1, 3) == 0 and r5.state == StreamState.RECV_RECVD


def test_recv_window_updates() -> None:
    r = RecvStream(max_data=160)
    assert r.should_send_max_stream_data() is None
    r.on_data(0, b"x" * 100, False)
    assert r.should_send_max_stream_data() is None  # nothing consumed yet
    r.read(9)
    assert r.should_send_max_stream_data() is None  # 9 < 160/16
    r.read(1)
    assert r.should_send_max_stream_data() == 170
    assert r.max_data == 170
    assert r.should_send_max_stream_data() is None
    data, _ = r.read(50, consume=False)
    assert len(data) == 50 and r.should_send_max_stream_data() is None
    r.consume(50)
    assert r.should_send_max_stream_data() == 220
    assert r.on_data_blocked() is None
    r.read(40)
    assert r.on_data_blocked() == 260
    r.on_data(100, b"", True)
    r.read()
    assert r.should_send_max_stream_data() is None  # final size known


def test_recv_stop_sending() -> None:
    r = RecvStream(max_data=100)
    r.on_data(0, b"abc", False)
    r.on_data(10, b"k", False)
    r.stop_sending(3)
    assert r.stop_sent and r.consumed == 11 and r.readable() == 0
    with pytest.raises(OSError) as ei:
        r.stop_sending(3)
    assert ei.value.errno == errno.EAGAIN
    assert r.on_data(11, b"xyz", True) == 3
    assert r.readable() == 0
    assert r.state == StreamState.RECV_READ
    r2 = RecvStream(max_data=100)
    r2.on_data(0, b"abc", True)
    with pytest.raises(OSError) as ei:
        r2.stop_sending(3)
    assert ei.value.errno == errno.EINVAL


@settings(max_examples=200, deadline=None)
@given(
    payload=hst.binary(min_size=0, max_size=2000),
    cuts=hst.lists(hst.integers(min_value=0, max_value=2000), max_size=30),
    seed=hst.integers(min_value=0, max_value=2**32 - 1),
    dups=hst.integers(min_value=0, max_value=10),
)
def test_recv_random_reassembly(payload: bytes, cuts: list[int], seed: int, dups: int) -> None:
    rng = random.Random(seed)
    points = sorted({0, len(payload), *[c % (len(payload) + 1) for c in cuts]})
    chunks = [(a, payload[a:b], b == len(payload)) for a, b in itertools.pairwise(points)]
    if not chunks:
        chunks = [(0, b"", True)]
    # add overlapping duplicates built from random sub-ranges
    for _ in range(dups):
        if not payload:
            break
        a = rng.randrange(len(payload))
        b = rng.randrange(a, len(payload)) + 1
        chunks.append((a, payload[a:b], b == len(payload)))
    rng.shuffle(chunks)
    r = RecvStream(max_data=len(payload))
    out = bytearray()
    fin = False
    for off, data, f in chunks:
        r.on_data(off, data, f)
        got, f2 = r.read(rng.randrange(1, 500))
        out += got
        fin = fin or f2
    for _ in range(len(payload) + 2):
        got, f2 = r.read()
        out += got
        fin = fin or f2
        if not got:
            break
    assert bytes(out) == payload
    assert fin and r.state == StreamState.RECV_READ


@settings(max_examples=100, deadline=None)
@given(
    payload=hst.binary(min_size=1, max_size=3000),
    seed=hst.integers(min_value=0, max_value=2**32 - 1),
)
def test_send_to_recv_with_random_loss(payload: bytes, seed: int) -> None:
    rng = random.Random(seed)
    s = SendStream(max_data=len(payload))
    r = RecvStream(max_data=len(payload))
    assert s.write(payload, fin=True) == len(payload)
    for _ in range(2000):
        c = s.next_chunk(rng.randrange(1, 400))
        if c is None:
            if s.state == StreamState.SEND_RECVD:
                break
            continue
        off, data, fin = c
        if rng.random() < 0.3:
            s.on_lost(off, len(data), fin)
            continue
        r.on_data(off, data, fin)
        s.on_acked(off, len(data), fin)
    assert s.state == StreamState.SEND_RECVD
    data, fin = r.read()
    assert data == payload and fin


# ------------------------------------------------------------ QuicStreamTable
def make_pair(limit_bidi: int = 100, limit_uni: int = 100, max_data: int = 10**6,
              msd: int = 10**5) -> tuple[QuicStreamTable, QuicStreamTable]:
    c, s = QuicStreamTable(is_client=True), QuicStreamTable(is_client=False)
    params = {"max_data": max_data, "max_stream_data_bidi_local": msd,
                  "max_stream_data_bidi_remote": msd, "max_stream_data_uni": msd,
                  "max_streams_bidi": limit_bidi, "max_streams_uni": limit_uni}
    for t in (c, s):
        t.set_params(False, **params)
        t.set_params(True, **params)
    return c, s


def test_table_open_ids() -> None:
    c, s = make_pair()
    assert c.open_local().id == 0
    assert c.open_local(uni=True).id == 2
    assert c.stream_open(-1, 0) == 4
    assert c.stream_open(-1, UNI) == 6
    assert s.open_local().id == 1
    assert s.open_local(uni=True).id == 3
    st = c.get(0)
    assert st is not None and st.send is not None and st.recv is not None
    uni = c.get(2)
    assert uni is not None and uni.send is not None and uni.recv is None
    with pytest.raises(OSError) as ei:
        c.stream_open(-1, 0x1)  # unknown flag
    assert ei.value.errno == errno.EINVAL


def test_table_open_twice_and_closed() -> None:
    c, s = make_pair()
    c.stream_open(0, 0)
    assert c.stream_open(0, 0) == 0  # still READY: the kernel accepts it
    stream = c.send_stream(0, 0)
    c.write(stream, b"hi")
    with pytest.raises(OSError) as ei:
        c.stream_open(0, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.send_stream(0, NEW)
    assert ei.value.errno == errno.EINVAL
    # not opened, no NEW flag: EINVAL
    with pytest.raises(OSError) as ei:
        c.send_stream(8, 0)
    assert ei.value.errno == errno.EINVAL
    # finish both directions, then the id is closed: ENOSTR
    c.write(stream, b"", fin=True)
    with pytest.raises(OSError) as ei:
        c.send_stream(0, 0)
    assert ei.value.errno == errno.EINVAL  # finished stream
    off, data, fin = stream.send.next_chunk(100)  # type: ignore[union-attr,misc]
    assert c.on_stream_acked(0, off, len(data), fin)
    assert c.get(0) is not None  # receive half still open
    s.on_stream_frame(0, 0, b"hi", True)
    c.on_stream_frame(0, 0, b"yo", True)
    assert c.read(0) == (b"yo", True)
    assert c.get(0) is None and c.is_closed(0)
    for call in (lambda: c.stream_open(0, 0), lambda: c.send_stream(0, NEW),
                 lambda: c.reset_stream(0, 1), lambda: c.stop_sending(0, 1)):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.ENOSTR
    # frames for the closed stream are ignored
    assert c.on_stream_frame(0, 0, b"yo", True) is None


def test_table_stream_limit_eagain_and_max_streams() -> None:
    c, _s = make_pair(limit_bidi=2)
    c.stream_open(4, 0)  # implicitly opens 0
    assert c.get(0) is not None and c.open_streams[0] == 2
    with pytest.raises(OSError) as ei:
        c.stream_open(8, DONTWAIT)
    assert ei.value.errno == errno.EAGAIN
    with pytest.raises(OSError) as ei:
        c.stream_open(8, 0, app_keys_ready=False)
    assert ei.value.errno == errno.EINVAL
    assert c.on_max_streams(False, 1) is None  # not an increase
    assert c.on_max_streams(False, 5) == 16
    # kernel rule: concurrency still bounded by the peer's initial max_streams
    with pytest.raises(OSError) as ei:
        c.stream_open(8, 0)
    assert ei.value.errno == errno.EAGAIN
    st0 = c.get(0)
    assert st0 is not None and st0.send is not None
    c.write(st0, b"", fin=True)
    st0.send.next_chunk(10)
    c.on_stream_acked(0, 0, 0, True)
    c.on_stream_frame(0, 0, b"", True)
    assert c.read(0) == (b"", True)
    assert c.get(0) is None
    assert c.stream_open(8, 0) == 8
    with pytest.raises(QuicError) as qe:
        c.on_max_streams(True, (1 << 60) + 1)
    assert qe.value.error_code == E.FRAME_ENCODING_ERROR


def test_table_streams_blocked_with_sndblock() -> None:
    c, _ = make_pair(limit_uni=1)
    c.stream_open(-1, UNI)
    for _ in range(2):
        with pytest.raises(OSError):
            c.stream_open(-1, UNI | SNDBLOCK)
    assert c.take_streams_blocked() == [(True, 1)]
    assert c.take_streams_blocked() == []
    c.on_streams_blocked_acked(True)
    with pytest.raises(OSError):
        c.stream_open(-1, UNI | SNDBLOCK)
    assert c.take_streams_blocked() == [(True, 1)]


def test_table_active_stream_resolution() -> None:
    c, s = make_pair()
    assert c.resolve_send_id(-1, 0) == 0
    assert c.resolve_send_id(-1, UNI) == 2
    st = c.send_stream(c.resolve_send_id(-1, NEW), NEW)
    assert st.id == 0 and c.active_stream_id == 0
    c.write(st, b"req")
    assert c.resolve_send_id(-1, NEW) == 0  # NEW on it now fails: the kernel's test1
    with pytest.raises(OSError):
        c.send_stream(0, NEW)
    c.write(st, b"", fin=True)
    assert c.active_stream_id == -1
    assert c.resolve_send_id(-1, 0) == 4
    # server: a new peer bidi stream becomes the active one for replies
    s.on_stream_frame(0, 0, b"req", True)
    assert s.active_stream_id == 0 and s.resolve_send_id(-1, 0) == 0
    s.on_stream_frame(2, 0, b"uni", False)
    assert s.active_stream_id == 0


def test_table_reset_and_stop_sending_errnos() -> None:
    c, _s = make_pair()
    with pytest.raises(OSError) as ei:
        c.reset_stream(0, 1)  # never opened
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.reset_stream(1, 1)  # peer stream not opened
    assert ei.value.errno == errno.EINVAL
    st = c.open_local()
    c.write(st, b"abc")
    assert c.reset_stream(0, 5) == 3
    with pytest.raises(OSError) as ei:
        c.send_stream(0, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.reset_stream(0, 5)
    assert ei.value.errno == errno.EINVAL
    u = c.open_local(uni=True)
    with pytest.raises(OSError) as ei:
        c.stop_sending(u.id, 1)  # our send-only stream
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.stop_sending(3, 1)  # peer uni not opened
    assert ei.value.errno == errno.EINVAL
    c.stop_sending(0, 9)
    with pytest.raises(OSError) as ei:
        c.stop_sending(0, 9)
    assert ei.value.errno == errno.EAGAIN
    # peer STOP_SENDING: reset with its code
    st4 = c.open_local()
    c.write(st4, b"12345")
    assert c.on_stop_sending(4, 77) == 5
    assert st4.send is not None and st4.send.state == StreamState.SEND_RESET_SENT
    with pytest.raises(OSError) as ei:
        c.send_stream(4, 0)
    assert ei.value.errno == errno.EINVAL
    assert c.on_stop_sending(4, 77) is None


def test_table_peer_frame_errors() -> None:
    _c, s = make_pair(limit_bidi=2, limit_uni=1)
    # STREAM for the server's own uni stream (send-only there): STREAM_STATE_ERROR
    with pytest.raises(QuicError) as qe:
        s.on_stream_frame(3, 0, b"x", False, frame_type=0x08)
    assert qe.value.error_code == E.STREAM_STATE_ERROR and qe.value.frame_type == 0x08
    # STREAM for a local stream never opened
    with pytest.raises(QuicError) as qe:
        s.on_stream_frame(1, 0, b"x", False)
    assert qe.value.error_code == E.STREAM_STATE_ERROR
    # STOP_SENDING for a receive-only (peer uni) stream
    s.on_stream_frame(2, 0, b"x", False)
    with pytest.raises(QuicError) as qe:
        s.on_stop_sending(2, 1)
    assert qe.value.error_code == E.STREAM_STATE_ERROR
    # MAX_STREAM_DATA for a local stream not yet opened
    with pytest.raises(QuicError) as qe:
        s.on_max_stream_data(5, 100)
    assert qe.value.error_code == E.STREAM_STATE_ERROR
    # beyond the limit we granted
    with pytest.raises(QuicError) as qe:
        s.on_stream_frame(8, 0, b"x", False)
    assert qe.value.error_code == E.STREAM_LIMIT_ERROR
    with pytest.raises(QuicError) as qe:
        s.on_stream_frame(6, 0, b"x", False)
    assert qe.value.error_code == E.STREAM_LIMIT_ERROR
    # implicit opening of lower streams (RFC 9000 §3.2)
    assert s.on_stream_frame(4, 0, b"x", False) is not None
    assert s.get(0) is not None and s.open_streams[2] == 2
    # a peer bidi stream can be opened by MAX_STREAM_DATA / STOP_SENDING too
    _c2, s2 = make_pair()
    assert s2.on_max_stream_data(0, 10**6) is True
    assert s2.get(0) is not None
    with pytest.raises(QuicError):
        s2.on_stream_frame(0, 2**62 - 2, b"abc", False)


def test_table_max_streams_credit() -> None:
    _c, s = make_pair(limit_bidi=2, limit_uni=2)
    assert s.max_streams_update() == (None, None)
    s.on_stream_frame(0, 0, b"a", True)
    s.on_stream_frame(2, 0, b"b", True)
    assert s.read(2) == (b"b", True)  # uni: released when read
    assert s.max_streams_update() == (3, None)
    assert s.max_streams_update() == (None, None)
    assert s.read(0) == (b"a", True)
    assert s.max_streams_update() == (None, None)  # our half still open
    st = s.get(0)
    assert st is not None and st.send is not None
    s.write(st, b"r", fin=True)
    off, data, fin = st.send.next_chunk(100)  # type: ignore[misc]
    s.on_stream_acked(0, off, len(data), fin)
    assert s.get(0) is None
    assert s.max_streams_update() == (None, 3)
    # the peer may now use ids up to the new limit
    s.on_stream_frame(8, 0, b"x", False)
    with pytest.raises(QuicError):
        s.on_stream_frame(12, 0, b"x", False)
    assert s.on_streams_blocked(False, 3) == 3
    assert s.on_streams_blocked(False, 4) is None


def test_table_connection_flow_control() -> None:
    c, s = make_pair(max_data=100, msd=80)
    a = c.open_local()
    b = c.open_local()
    assert c.write(a, b"x" * 80) == 80
    assert c.send_credit(b) == 20
    assert c.write(b, b"y" * 50) == 20
    assert c.take_data_blocked() == 100
    assert c.take_data_blocked() is None
    assert c.on_max_data(90) is False
    assert c.on_max_data(200) is True
    assert c.write(b, b"y" * 30) == 30
    assert c.data_sent == 130
    # receiving side: sum of highest offsets bounded by our MAX_DATA
    s.on_stream_frame(0, 0, b"x" * 80, False)
    with pytest.raises(QuicError) as qe:
        s.on_stream_frame(4, 0, b"y" * 21, False)
    assert qe.value.error_code == E.FLOW_CONTROL_ERROR
    s.on_stream_frame(4, 0, b"y" * 20, False)
    assert s.recv_highest == 100
    assert s.should_send_max_data() is None
    s.read(0, 10)
    assert s.should_send_max_data() == 110
    data, _ = s.read(4, consume=False)
    assert len(data) == 20 and s.should_send_max_data() is None
    s.consume(4, 20)
    assert s.should_send_max_data() == 130
    assert s.on_data_blocked(130) is None


def test_table_reset_stream_credit() -> None:
    _c, s = make_pair(max_data=100, msd=100)
    s.on_stream_frame(0, 0, b"abc", False)
    st = s.on_reset_stream(0, 4, 50)
    assert st is not None and st.recv is not None
    assert st.recv.state == StreamState.RECV_RESET_RECVD and st.recv.errcode == 4
    assert s.recv_highest == 50 and s.recv_consumed == 50
    assert s.on_reset_stream(0, 4, 50) is None  # duplicate: ignored
    with pytest.raises(QuicError) as qe:
        s.on_reset_stream(4, 1, 51)  # 50 + 51 > MAX_DATA
    assert qe.value.error_code == E.FLOW_CONTROL_ERROR


def test_table_sendable_round_robin() -> None:
    c, _ = make_pair()
    streams = [c.open_local() for _ in range(3)]
    for st in streams:
        c.write(st, b"x" * 30)
    order = []
    for _ in range(6):
        for st in c.sendable():
            assert st.send is not None
            st.send.next_chunk(10)
            order.append(st.id)
            break
    assert order == [0, 4, 8, 0, 4, 8]
    # everything sent: nothing left
    for st in list(c.sendable()):
        assert st.send is not None
        while st.send.next_chunk(100):
            pass
    assert list(c.sendable()) == []
    c.on_stream_lost(4, 0, 10, False)
    assert [st.id for st in c.sendable()] == [4]


def test_table_peer_params_raise_existing_limits() -> None:
    c = QuicStreamTable(is_client=True)
    c.set_params(True, max_streams_bidi=1, max_stream_data_bidi_remote=10, max_data=10)
    st = c.open_local()
    assert st.send is not None and st.send.max_data == 10
    c.set_params(True, max_stream_data_bidi_remote=50, max_data=50)
    assert st.send.max_data == 50 and c.max_data_peer == 50
    assert c.get_params(True)["max_stream_data_bidi_remote"] == 50
    assert c.get_params(False)["max_streams_bidi"] == 0


def test_send_slice_exact_chunk_is_the_chunk_itself() -> None:
    """_slice: a range that is exactly one written chunk comes back as that
    very object (no copy); sub-ranges and ranges spanning chunks are the
    right bytes, in any order of calls (the cached chunk index moves)."""
    a = bytes(range(256)) * 8  # >= 1024 bytes: each write is its own chunk
    b = b"B" * 3000
    c = bytes(range(255, -1, -1)) * 6
    s = SendStream(max_data=1 << 20)
    for piece in (a, b, c):
        assert s.write(piece) == len(piece)
    assert len(s._chunks) == 3
    data = a + b + c
    la, lb = len(a), len(b)
    assert s._slice(0, la) is a
    assert s._slice(la, la + lb) is b
    assert s._slice(la + lb, len(data)) is c
    assert s._slice(la, la + lb) is b  # again, from the cached index
    cases = [(0, 1), (1, la - 1), (la - 1, la), (la - 1, la + 1), (la, la + 1),
             (la + lb - 1, la + lb + 1), (10, la + lb + 10), (0, len(data)),
             (la + 5, la + lb - 5), (len(data) - 1, len(data)), (la + lb, la + lb + 7)]
    for start, end in cases + cases[::-1]:
        assert s._slice(start, end) == data[start:end], (start, end)
    rng = random.Random(11)
    for _ in range(500):
        start = rng.randrange(len(data))
        end = rng.randrange(start + 1, len(data) + 1)
        assert s._slice(start, end) == data[start:end], (start, end)
    # once the first chunk is acknowledged and released, the rest still slices
    s.next_chunk(len(data))
    assert s.on_acked(0, la, False) is False
    assert s._slice(la, la + lb) is b
    assert s._slice(la + 3, la + lb + 3) == data[la + 3:la + lb + 3]


def test_send_slice_small_writes_joined_into_one_chunk() -> None:
    """Small writes are joined (one chunk): slices inside it are still right."""
    s = SendStream(max_data=1 << 20)
    parts = [bytes([i]) * 10 for i in range(50)]
    for p in parts:
        s.write(p)
    data = b"".join(parts)
    assert len(s._chunks) == 1
    assert s._slice(0, len(data)) == data
    assert s._slice(15, 37) == data[15:37]
    assert drain(s, 64)[0] == (0, data[:64], False)
