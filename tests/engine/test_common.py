"""Tests for pyquic.engine.common (RFC 9000 §16 varints, Buffer, Writer)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyquic.engine.common import (
    VARINT_MAX,
    Buffer,
    BufferReadError,
    Writer,
    decode_varint,
    encode_varint,
    encode_varint_len,
    varint_size,
)

# RFC 9000 §A.1 sample varints
RFC_SAMPLES = [
    ("c2197c5eff14e88c", 151288809941952652),
    ("9d7f3e7d", 494878333),
    ("7bbd", 15293),
    ("25", 37),
]


@pytest.mark.parametrize(("hexstr", "value"), RFC_SAMPLES)
def test_rfc_samples(hexstr: str, value: int) -> None:
    data = bytes.fromhex(hexstr)
    assert decode_varint(data, 0) == (value, len(data))
    assert Buffer(data).pull_varint() == value
    assert encode_varint(value) == data
    assert varint_size(value) == len(data)


def test_non_minimal_decodes() -> None:
    # RFC 9000 §A.1: 0x4025 also decodes to 37
    assert decode_varint(bytes.fromhex("4025")) == (37, 2)
    assert encode_varint_len(37, 2) == bytes.fromhex("4025")
    assert encode_varint_len(37, 8) == bytes.fromhex("c000000000000025")
    with pytest.raises(ValueError):
        encode_varint_len(64, 1)
    with pytest.raises(ValueError):
        encode_varint_len(1, 3)


def test_bounds() -> None:
    for v, n in [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4), ((1 << 30) - 1, 4),
                 (1 << 30, 8), (VARINT_MAX, 8)]:
        assert len(encode_varint(v)) == n == varint_size(v)
        assert decode_varint(encode_varint(v)) == (v, n)
    with pytest.raises(ValueError):
        encode_varint(VARINT_MAX + 1)
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        varint_size(VARINT_MAX + 1)


def test_truncation() -> None:
    for hexstr, _ in RFC_SAMPLES:
        data = bytes.fromhex(hexstr)
        for n in range(len(data)):
            with pytest.raises(BufferReadError):
                decode_varint(data[:n])
            with pytest.raises(BufferReadError):
                Buffer(data[:n]).pull_varint()
    assert issubclass(BufferReadError, ValueError)


def test_buffer_fixed_ints_and_bytes() -> None:
    data = bytes(range(1, 20))
    b = Buffer(data)
    assert b.pull_uint8() == 1
    assert b.pull_uint16() == 0x0203
    assert b.pull_uint32() == 0x04050607
    assert b.pull_uint64() == 0x08090A0B0C0D0E0F
    assert b.tell() == 15
    assert b.remaining() == 4
    assert b.pull_bytes(2) == bytes([16, 17])
    assert not b.eof()
    with pytest.raises(BufferReadError):
        b.pull_uint32()
    assert b.tell() == 17  # a failed read does not move
    assert b.pull_rest() == bytes([18, 19])
    assert b.eof()
    for fn in (b.pull_uint8, b.pull_uint16, b.pull_uint64, b.pull_varint):
        with pytest.raises(BufferReadError):
            fn()
    with pytest.raises(BufferReadError):
        b.pull_bytes(1)
    b.seek(0)
    assert b.pull_uint8() == 1
    with pytest.raises(BufferReadError):
        b.seek(100)
    with pytest.raises(BufferReadError):
        b.pull_bytes(-1)


def test_buffer_window() -> None:
    b = Buffer(b"abcdef", 1, 4)
    assert b.pull_bytes(3) == b"bcd"
    assert b.eof()
    with pytest.raises(BufferReadError):
        b.pull_uint8()
    with pytest.raises(BufferReadError):
        Buffer(b"abc", 0, 5)


def test_writer() -> None:
    w = Writer()
    w.push_uint8(1)
    w.push_uint16(0x0203)
    w.push_uint32(0x04050607)
    w.push_uint64(0x08)
    w.push_varint(15293)
    w.push_bytes(b"xy")
    assert w.tell() == 1 + 2 + 4 + 8 + 2 + 2
    b = Buffer(w.getvalue())
    assert (b.pull_uint8(), b.pull_uint16(), b.pull_uint32(), b.pull_uint64()) == (
        1, 0x0203, 0x04050607, 8)
    assert b.pull_varint() == 15293 and b.pull_bytes(2) == b"xy"


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=VARINT_MAX))
def test_varint_roundtrip(v: int) -> None:
    enc = encode_varint(v)
    assert decode_varint(b"\xff" + enc, 1) == (v, 1 + len(enc))
    assert Buffer(enc).pull_varint() == v
