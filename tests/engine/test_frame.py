"""Tests for pyquic.engine.frame: encode/parse of every frame, errors, Table 3."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyquic.engine.errors import FRAME_ENCODING_ERROR, PROTOCOL_VIOLATION, QuicError
from pyquic.engine.frame import (
    AckFrame,
    ConnectionCloseFrame,
    CryptoFrame,
    DataBlockedFrame,
    DatagramFrame,
    Frame,
    FrameType,
    HandshakeDoneFrame,
    MaxDataFrame,
    MaxStreamDataFrame,
    MaxStreamsFrame,
    NewConnectionIdFrame,
    NewTokenFrame,
    PaddingFrame,
    PathChallengeFrame,
    PathResponseFrame,
    PingFrame,
    ResetStreamFrame,
    RetireConnectionIdFrame,
    StopSendingFrame,
    StreamDataBlockedFrame,
    StreamFrame,
    StreamsBlockedFrame,
    crypto_frame_overhead,
    is_ack_eliciting,
    parse_frames,
    stream_frame_overhead,
)
from pyquic.engine.packet import PacketType

I, Z, H, O = PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE, PacketType.ONE_RTT

# (frame, packet types that may carry it: RFC 9000 §12.4 Table 3, RFC 9221 §4)
SAMPLES: list[tuple[Frame, str]] = [
    (PingFrame(), "IH01"),
    (AckFrame([(5, 10)], ack_delay=3), "IH1"),
    (AckFrame([(90, 100), (50, 80), (0, 0)], ack_delay=1000, ecn=(1, 2, 3)), "IH1"),
    (ResetStreamFrame(4, 0x10, 1000), "01"),
    (StopSendingFrame(5, 77), "01"),
    (CryptoFrame(0, b"hello"), "IH1"),
    (CryptoFrame(70000, b"x" * 300), "IH1"),
    (NewTokenFrame(b"token"), "1"),
    (StreamFrame(0, 0, b"data", fin=False), "01"),
    (StreamFrame(4, 1 << 40, b"data", fin=True), "01"),
    (StreamFrame(8, 0, b"", fin=True), "01"),
    (StreamFrame(9, 5, b"tail", fin=False, has_length=False), "01"),
    (MaxDataFrame(1 << 50), "01"),
    (MaxStreamDataFrame(3, 123456), "01"),
    (MaxStreamsFrame(100, uni=False), "01"),
    (MaxStreamsFrame(1 << 60, uni=True), "01"),
    (DataBlockedFrame(99), "01"),
    (StreamDataBlockedFrame(7, 8), "01"),
    (StreamsBlockedFrame(3, uni=False), "01"),
    (StreamsBlockedFrame(4, uni=True), "01"),
    (NewConnectionIdFrame(5, 2, b"\x01" * 8, b"\x02" * 16), "01"),
    (RetireConnectionIdFrame(3), "01"),
    (PathChallengeFrame(b"12345678"), "01"),
    (PathResponseFrame(b"abcdefgh"), "1"),
    (ConnectionCloseFrame(0x0A, 0x08, b"bad"), "IH01"),
    (ConnectionCloseFrame(0x1234, 0, b"app", application=True), "01"),
    (HandshakeDoneFrame(), "1"),
    (DatagramFrame(b"dgram"), "01"),
    (DatagramFrame(b"dgram-nolen", has_length=False), "01"),
]
LETTER = {"I": I, "0": Z, "H": H, "1": O}


@pytest.mark.parametrize(("frame", "allowed"), SAMPLES)
def test_roundtrip_and_permissions(frame: Frame, allowed: str) -> None:
    data = frame.encode()
    assert data[0] == frame.type
    for letter, ptype in LETTER.items():
        if letter in allowed:
            assert parse_frames(data, ptype) == [frame]
        else:
            with pytest.raises(QuicError) as ei:
                parse_frames(data, ptype)
            assert ei.value.error_code == PROTOCOL_VIOLATION
            assert ei.value.frame_type == frame.type


@pytest.mark.parametrize(("frame", "allowed"), SAMPLES)
def test_every_truncation_is_frame_encoding_error(frame: Frame, allowed: str) -> None:
    data = frame.encode()
    ptype = LETTER[allowed[-1]]
    for n in range(1, len(data)):
        cut = data[:n]
        if isinstance(frame, (StreamFrame, DatagramFrame)) and not frame.has_length:
            # without a Length field any prefix after the header is valid
            try:
                parse_frames(cut, ptype)
            except QuicError as e:
                assert e.error_code == FRAME_ENCODING_ERROR
            continue
        with pytest.raises(QuicError) as ei:
            parse_frames(cut, ptype)
        assert ei.value.error_code == FRAME_ENCODING_ERROR, (frame, n)


def test_stream_frame_bits() -> None:
    assert StreamFrame(0, 0, b"x").type == 0x0A
    assert StreamFrame(0, 1, b"x", fin=True).type == 0x0F
    assert StreamFrame(0, 0, b"x", has_length=False).type == 0x08
    # OFF bit set with offset 0 is valid on the wire
    [f] = parse_frames(bytes([0x0E, 0x04, 0x00, 0x02]) + b"ab", O)
    assert isinstance(f, StreamFrame) and (f.stream_id, f.offset, f.data) == (4, 0, b"ab")


def test_multiple_frames_and_padding_runs() -> None:
    payload = (
        PingFrame().encode()
        + bytes(10)
        + CryptoFrame(0, b"abc").encode()
        + AckFrame([(0, 3)]).encode()
        + bytes(5)
    )
    frames = parse_frames(payload, I)
    assert frames == [
        PingFrame(),
        PaddingFrame(10),
        CryptoFrame(0, b"abc"),
        AckFrame([(0, 3)]),
        PaddingFrame(5),
    ]
    assert PaddingFrame(3).encode() == b"\x00\x00\x00"
    assert is_ack_eliciting(frames)
    assert not is_ack_eliciting([PaddingFrame(1), AckFrame([(0, 0)]),
                                 ConnectionCloseFrame(0)])


def test_ack_ranges_encoding() -> None:
    # ranges highest first: [90..100], [50..80], [0..0]
    f = AckFrame([(90, 100), (50, 80), (0, 0)], ack_delay=7)
    data = f.encode()
    # largest 100 (0x4064), delay 7, 2 ranges, first range 10,
    # gap 90-80-2=8, len 30, gap 50-0-2=48, len 0
    assert data == bytes.fromhex("02406407020a081e3000")
    assert f.largest == 100


@pytest.mark.parametrize(
    "hexdata",
    [
        "0205000206",  # first range larger than largest
        "020500010300ff",  # truncated range
        "02050001020304",  # second range goes below zero
        "0700",  # empty NEW_TOKEN
        "12800000",  # truncated 4-byte varint
        "12c0000000000000",  # truncated 8-byte varint
        "180102" "08" + "00" * 8 + "00" * 16,  # retire_prior_to > seq
        "18010015" + "00" * 21 + "00" * 16,  # cid length 21
        "18010000" + "00" * 16,  # cid length 0
        "1a0102",  # PATH_CHALLENGE short
        "1c0a08ff",  # reason length beyond the frame
        "ff",  # truncated frame type varint
        "21",  # unknown frame type
        "40ff",  # unknown 2-byte frame type
        "3f",
    ],
)
def test_malformed_frames(hexdata: str) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(QuicError) as ei:
        parse_frames(data, O)
    assert ei.value.error_code == FRAME_ENCODING_ERROR


def test_limits() -> None:
    too_many = (1 << 60) + 1
    for t in (0x12, 0x13, 0x16, 0x17):
        data = bytes([t]) + (too_many | (0xC0 << 56)).to_bytes(8, "big")
        with pytest.raises(QuicError) as ei:
            parse_frames(data, O)
        assert ei.value.error_code == FRAME_ENCODING_ERROR and ei.value.frame_type == t
    # STREAM offset + length beyond 2^62 - 1
    big = ((1 << 62) - 2) | (0xC0 << 56)
    data = bytes([0x0E, 0x00]) + big.to_bytes(8, "big") + b"\x02ab"
    with pytest.raises(QuicError) as ei:
        parse_frames(data, O)
    assert ei.value.error_code == FRAME_ENCODING_ERROR
    data = bytes([0x06]) + big.to_bytes(8, "big") + b"\x02ab"
    with pytest.raises(QuicError):
        parse_frames(data, O)


def test_non_minimal_frame_type_and_empty_payload() -> None:
    with pytest.raises(QuicError) as ei:
        parse_frames(b"\x40\x01", O)  # PING encoded in 2 bytes
    assert ei.value.error_code == PROTOCOL_VIOLATION
    with pytest.raises(QuicError) as ei:
        parse_frames(b"", O)
    assert ei.value.error_code == PROTOCOL_VIOLATION


def test_overheads() -> None:
    f = StreamFrame(4, 1000, b"z" * 500)
    assert stream_frame_overhead(4, 1000, 500) == len(f.encode()) - 500
    assert stream_frame_overhead(4, 0, 5) == len(StreamFrame(4, 0, b"12345").encode()) - 5
    c = CryptoFrame(100, b"y" * 70)
    assert crypto_frame_overhead(100, 70) == len(c.encode()) - 70


def test_frame_type_enum() -> None:
    assert FrameType.DATAGRAM == 0x30 and FrameType.DATAGRAM_LEN == 0x31
    assert FrameType.HANDSHAKE_DONE == 0x1E and FrameType.CONNECTION_CLOSE_APP == 0x1D


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.sampled_from([I, Z, H, O]))
def test_random_bytes_only_raise_quic_error(data: bytes, ptype: PacketType) -> None:
    try:
        frames = parse_frames(data, ptype)
    except QuicError as e:
        assert e.error_code in (FRAME_ENCODING_ERROR, PROTOCOL_VIOLATION)
    else:
        # whatever parsed must re-encode to a parseable payload
        again = b"".join(f.encode() for f in frames)
        assert parse_frames(again, ptype) == frames


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([f for f, _ in SAMPLES]), st.binary(max_size=8), st.integers(0, 40))
def test_mutated_frames_only_raise_quic_error(frame: Frame, junk: bytes, cut: int) -> None:
    data = frame.encode()
    data = data[: max(1, len(data) - cut)] + junk
    try:
        parse_frames(data, O)
    except QuicError:
        pass
