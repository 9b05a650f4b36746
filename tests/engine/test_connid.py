"""Tests for pyquic.engine.connid: source/destination CID sets and kernel option rules."""

from __future__ import annotations

import errno
import itertools

import pytest

from pyquic.engine import errors as E
from pyquic.engine.connid import DestConnIdSet, SourceConnIdSet
from pyquic.engine.errors import QuicError


def counter_random() -> object:
    """Deterministic 'random' bytes: distinct values on every call."""
    c = itertools.count(1)

    def rnd(n: int) -> bytes:
        return next(c).to_bytes(n, "big")

    return rnd


def make_source(max_count: int = 4) -> SourceConnIdSet:
    src = SourceConnIdSet(random=counter_random(), cid_len=8)  # type: ignore[arg-type]
    src.add(b"\xaa" * 8)  # handshake SCID, seq 0
    src.max_count = max_count
    return src


# ------------------------------------------------------------------ source
def test_source_issue_up_to_limit() -> None:
    src = make_source(4)
    new = src.issue()
    assert [c.seq for c in new] == [1, 2, 3]
    assert all(len(c.cid) == 8 and len(c.token) == 16 for c in new)
    assert len({c.cid for c in new} | {b"\xaa" * 8}) == 4
    assert src.issue() == []
    assert src.active_seq == 0 and src.first_number == 0 and src.last_number == 3
    assert src.lookup(new[0].cid) is new[0]
    assert src.cids() == {c.cid for c in src}


def test_source_issue_capped_by_kernel_limit() -> None:
    src = make_source(1000)
    assert len(src.issue()) == 7  # 8 in total


def test_source_token_function() -> None:
    src = SourceConnIdSet(random=counter_random(), token_for=lambda cid: cid * 2)  # type: ignore[arg-type]
    e = src.add(b"12345678")
    assert e.token == b"12345678" * 2


def test_source_on_retire() -> None:
    src = make_source(3)
    src.issue()  # seqs 0, 1, 2
    repl = src.on_retire(0, packet_dcid_seq=1)
    assert [c.seq for c in repl] == [3]
    assert src.find(0) is None and src.active_seq == 1  # active moved up
    assert src.on_retire(0) == []  # already retired: nothing
    with pytest.raises(QuicError) as qe:
        src.on_retire(9)
    assert qe.value.error_code == E.PROTOCOL_VIOLATION
    with pytest.raises(QuicError) as qe:
        src.on_retire(2, packet_dcid_seq=2)
    assert qe.value.error_code == E.PROTOCOL_VIOLATION


def test_source_zero_length() -> None:
    src = SourceConnIdSet()
    src.add(b"")
    src.max_count = 4
    assert src.issue() == []
    with pytest.raises(QuicError) as qe:
        src.on_retire(0)
    assert qe.value.error_code == E.PROTOCOL_VIOLATION


def test_source_set_connection_id_option() -> None:
    src = make_source(4)
    src.issue()  # 0..3
    # retire IDs below 2: new IDs carry Retire Prior To 2
    new = src.set_connection_id(prior_to=2)
    assert [c.seq for c in new] == [4, 5]
    assert all(c.retire_prior_to == 2 for c in new)
    assert src.get_connection_id() == (0, 0)  # kept until the peer retires them
    src.on_retire(0)
    src.on_retire(1)
    assert src.get_connection_id() == (2, 2)
    for bad in (2, 1, 6, 100):  # <= first, or > last
        with pytest.raises(OSError) as ei:
            src.set_connection_id(prior_to=bad)
        assert ei.value.errno == errno.EINVAL
    src.set_connection_id(active=4)
    assert src.active_seq == 4
    for bad in (4, 3, 99):  # not higher, or unknown
        with pytest.raises(OSError) as ei:
            src.set_connection_id(active=bad)
        assert ei.value.errno == errno.EINVAL
    assert src.set_connection_id() == []


# ------------------------------------------------------------------- dest
def make_dest(limit: int = 4) -> DestConnIdSet:
    d = DestConnIdSet(max_count=limit)
    d.add(b"\x01" * 8, 0)
    return d


def tok(i: int) -> bytes:
    return bytes([i]) * 16


def test_dest_new_connection_id_and_limit() -> None:
    d = make_dest(3)
    d.set_token(0, tok(100))
    assert d.on_new_connection_id(1, 0, b"\x02" * 8, tok(1)) == []
    assert d.on_new_connection_id(2, 0, b"\x03" * 8, tok(2)) == []
    # duplicate frame: ignored
    assert d.on_new_connection_id(2, 0, b"\x03" * 8, tok(2)) == []
    with pytest.raises(QuicError) as qe:
        d.on_new_connection_id(3, 0, b"\x04" * 8, tok(3))
    assert qe.value.error_code == E.CONNECTION_ID_LIMIT_ERROR
    # with Retire Prior To the excess is allowed (RFC 9000 §5.1.1)
    assert d.on_new_connection_id(3, 1, b"\x04" * 8, tok(3)) == [0]
    assert d.active_seq == 1 and d.first_number == 1 and d.last_number == 3
    assert d.is_stateless_reset(tok(3))
    assert not d.is_stateless_reset(tok(100))  # retired with seq 0
    assert not d.is_stateless_reset(b"short")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((1, 2, b"\x02" * 8, tok(1)), E.FRAME_ENCODING_ERROR),  # prior > seq
        ((1, 0, b"", tok(1)), E.FRAME_ENCODING_ERROR),
        ((1, 0, b"\x02" * 21, tok(1)), E.FRAME_ENCODING_ERROR),
        ((0, 0, b"\x09" * 8, tok(1)), E.PROTOCOL_VIOLATION),  # seq reused, other cid
        ((5, 0, b"\x01" * 8, tok(1)), E.PROTOCOL_VIOLATION),  # cid reused, other seq
    ],
)
def test_dest_new_connection_id_errors(args: tuple[int, int, bytes, bytes], code: int) -> None:
    d = make_dest(4)
    with pytest.raises(QuicError) as qe:
        d.on_new_connection_id(*args, frame_type=0x18)
    assert qe.value.error_code == code and qe.value.frame_type == 0x18


def test_dest_token_mismatch_and_zero_length() -> None:
    d = make_dest(4)
    d.on_new_connection_id(1, 0, b"\x02" * 8, tok(1))
    with pytest.raises(QuicError) as qe:
        d.on_new_connection_id(1, 0, b"\x02" * 8, tok(2))
    assert qe.value.error_code == E.PROTOCOL_VIOLATION
    z = DestConnIdSet()
    z.add(b"")
    with pytest.raises(QuicError) as qe:
        z.on_new_connection_id(1, 0, b"\x02" * 8, tok(1))
    assert qe.value.error_code == E.PROTOCOL_VIOLATION


def test_dest_late_id_below_retire_prior_to_is_retired() -> None:
    d = make_dest(4)
    assert d.on_new_connection_id(3, 2, b"\x04" * 8, tok(3)) == [0]
    # seq 1 arrives late, already below Retire Prior To 2
    assert d.on_new_connection_id(1, 0, b"\x02" * 8, tok(1)) == [1]
    assert d.find(1) is None and d.active_seq == 3


def test_dest_set_connection_id_option() -> None:
    d = make_dest(8)
    for i in range(1, 6):
        d.on_new_connection_id(i, 0, bytes([i + 1]) * 8, tok(i))
    assert d.set_connection_id(prior_to=2) == [0, 1]
    assert d.get_connection_id() == (2, 2)
    for bad in (2, 1, 6):  # already retired, or all of them
        with pytest.raises(OSError) as ei:
            d.set_connection_id(prior_to=bad)
        assert ei.value.errno == errno.EINVAL
    assert d.set_connection_id(prior_to=5) == [2, 3, 4]  # up to max-1
    assert d.active_seq == 5 and len(d) == 1
    d.on_new_connection_id(6, 0, b"\x20" * 8, tok(6))
    d.set_connection_id(active=6)
    assert d.active_seq == 6
    with pytest.raises(OSError) as ei:
        d.set_connection_id(active=5)
    assert ei.value.errno == errno.EINVAL
    assert d.retire(5) is True and d.retire(6) is False  # never the last one
    # migration in progress: EAGAIN
    d.on_new_connection_id(7, 0, b"\x21" * 8, tok(7))
    assert d.select_alt() and d.alt is not None and d.alt.seq == 7
    with pytest.raises(OSError) as ei:
        d.set_connection_id(prior_to=7)
    assert ei.value.errno == errno.EAGAIN
    d.swap_active()
    assert d.active_seq == 7 and d.alt is not None and d.alt.seq == 6
    d.clear_alt()
    assert d.set_connection_id(prior_to=7) == [6]


def test_dest_select_alt_rules() -> None:
    d = make_dest(4)
    assert d.select_alt() and d.alt is d.active  # only one: reuse it
    d.clear_alt()
    assert d.select_alt(nat_rebinding=True) and d.alt is d.active
    d.clear_alt()
    d.on_new_connection_id(1, 0, b"\x02" * 8, tok(1))
    d.set_connection_id(active=1)
    # active is the last and not the first: nothing to pick
    assert d.select_alt() is False and d.alt is None
