"""QUIC frames (RFC 9000 §19, DATAGRAM RFC 9221 §4): dataclasses, encode, parse.

Public API (stable):

- ``FrameType(IntEnum)``: PADDING=0x00, PING, ACK=0x02, ACK_ECN=0x03,
  RESET_STREAM, STOP_SENDING, CRYPTO, NEW_TOKEN, STREAM=0x08 (..0x0f with
  OFF=0x04, LEN=0x02, FIN=0x01 bits), MAX_DATA=0x10, MAX_STREAM_DATA,
  MAX_STREAMS_BIDI, MAX_STREAMS_UNI, DATA_BLOCKED, STREAM_DATA_BLOCKED,
  STREAMS_BLOCKED_BIDI, STREAMS_BLOCKED_UNI, NEW_CONNECTION_ID,
  RETIRE_CONNECTION_ID, PATH_CHALLENGE, PATH_RESPONSE, CONNECTION_CLOSE=0x1c,
  CONNECTION_CLOSE_APP=0x1d, HANDSHAKE_DONE=0x1e, DATAGRAM=0x30,
  DATAGRAM_LEN=0x31.
- One dataclass per frame, each with ``encode() -> bytes`` and the property
  ``type`` (the exact wire type, e.g. 0x0e for a STREAM frame with OFF|LEN):
  ``PaddingFrame(length=1)`` (a run of PADDING bytes),
  ``PingFrame()``,
  ``AckFrame(ranges, ack_delay=0, ecn=None)``: ``ranges`` is a list of
  inclusive ``(first, last)`` pairs, highest first, non-adjacent;
  ``ack_delay`` is the raw encoded field (scale it by the peer's
  ack_delay_exponent yourself); ``ecn`` is (ect0, ect1, ce) or None;
  property ``largest``.
  ``ResetStreamFrame(stream_id, error_code, final_size)``,
  ``StopSendingFrame(stream_id, error_code)``,
  ``CryptoFrame(offset, data)``, ``NewTokenFrame(token)``,
  ``StreamFrame(stream_id, offset=0, data=b"", fin=False, has_length=True)``
  (``has_length=False`` omits Length: the frame runs to the end of the packet),
  ``MaxDataFrame(max_data)``, ``MaxStreamDataFrame(stream_id, max_data)``,
  ``MaxStreamsFrame(max_streams, uni)``, ``DataBlockedFrame(limit)``,
  ``StreamDataBlockedFrame(stream_id, limit)``,
  ``StreamsBlockedFrame(limit, uni)``,
  ``NewConnectionIdFrame(seq, retire_prior_to, connection_id,
  stateless_reset_token)``, ``RetireConnectionIdFrame(seq)``,
  ``PathChallengeFrame(data)``, ``PathResponseFrame(data)`` (8 bytes),
  ``ConnectionCloseFrame(error_code, frame_type=0, reason=b"",
  application=False)`` (0x1d when ``application``; ``frame_type`` unused
  then), ``HandshakeDoneFrame()``, ``DatagramFrame(data, has_length=True)``.
- ``Frame``: the union of those classes.
- ``parse_frames(payload: bytes, packet_type: int) -> list[Frame]``:
  ``packet_type`` is a ``packet.PacketType`` value (INITIAL=0, ZERO_RTT=1,
  HANDSHAKE=2, ONE_RTT=5).  Raises QuicError(FRAME_ENCODING_ERROR, ftype) for
  malformed/truncated/unknown frames and QuicError(PROTOCOL_VIOLATION, ftype)
  for frames not allowed in the packet type (RFC 9000 §12.4 Table 3), for a
  non-minimally encoded frame type, or for an empty payload.  Never raises
  anything else.  Role checks (e.g. HANDSHAKE_DONE or NEW_TOKEN received by a
  server) are left to the connection.
- ``is_ack_eliciting(frames) -> bool`` (RFC 9002 §2),
  ``ACK_ELICITING_EXEMPT`` (frame classes that are not ack-eliciting).
- ``stream_frame_overhead(stream_id, offset, length) -> int`` and
  ``crypto_frame_overhead(offset, length) -> int``: header bytes (with Length)
  of those frames, to fit data into a packet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from .common import VARINT_MAX, Buffer, BufferReadError, encode_varint, varint_size
from .errors import FRAME_ENCODING_ERROR, PROTOCOL_VIOLATION, QuicError

__all__ = [
    "ACK_ELICITING_EXEMPT",
    "AckFrame",
    "ConnectionCloseFrame",
    "CryptoFrame",
    "DataBlockedFrame",
    "DatagramFrame",
    "Frame",
    "FrameType",
    "HandshakeDoneFrame",
    "MaxDataFrame",
    "MaxStreamDataFrame",
    "MaxStreamsFrame",
    "NewConnectionIdFrame",
    "NewTokenFrame",
    "PaddingFrame",
    "PathChallengeFrame",
    "PathResponseFrame",
    "PingFrame",
    "ResetStreamFrame",
    "RetireConnectionIdFrame",
    "StopSendingFrame",
    "StreamDataBlockedFrame",
    "StreamFrame",
    "StreamsBlockedFrame",
    "crypto_frame_overhead",
    "is_ack_eliciting",
    "parse_frames",
    "stream_frame_overhead",
]


class FrameType(IntEnum):
    PADDING = 0x00
    PING = 0x01
    ACK = 0x02
    ACK_ECN = 0x03
    RESET_STREAM = 0x04
    STOP_SENDING = 0x05
    CRYPTO = 0x06
    NEW_TOKEN = 0x07
    STREAM = 0x08
    MAX_DATA = 0x10
    MAX_STREAM_DATA = 0x11
    MAX_STREAMS_BIDI = 0x12
    MAX_STREAMS_UNI = 0x13
    DATA_BLOCKED = 0x14
    STREAM_DATA_BLOCKED = 0x15
    STREAMS_BLOCKED_BIDI = 0x16
    STREAMS_BLOCKED_UNI = 0x17
    NEW_CONNECTION_ID = 0x18
    RETIRE_CONNECTION_ID = 0x19
    PATH_CHALLENGE = 0x1A
    PATH_RESPONSE = 0x1B
    CONNECTION_CLOSE = 0x1C
    CONNECTION_CLOSE_APP = 0x1D
    HANDSHAKE_DONE = 0x1E
    DATAGRAM = 0x30
    DATAGRAM_LEN = 0x31


_STREAM_OFF = 0x04
_STREAM_LEN = 0x02
_STREAM_FIN = 0x01
_MAX_STREAMS = 1 << 60  # RFC 9000 §19.11
_ev = encode_varint


@dataclass(slots=True)
class PaddingFrame:
    length: int = 1

    @property
    def type(self) -> int:
        return 0x00

    def encode(self) -> bytes:
        return bytes(self.length)


@dataclass(slots=True)
class PingFrame:
    @property
    def type(self) -> int:
        return 0x01

    def encode(self) -> bytes:
        return b"\x01"


@dataclass(slots=True)
class AckFrame:
    ranges: list[tuple[int, int]]
    ack_delay: int = 0
    ecn: tuple[int, int, int] | None = None

    @property
    def type(self) -> int:
        return 0x02 if self.ecn is None else 0x03

    @property
    def largest(self) -> int:
        return self.ranges[0][1]

    def encode(self) -> bytes:
        # RFC 9000 §19.3.1
        ranges = self.ranges
        first, last = ranges[0]
        parts = [
            b"\x02" if self.ecn is None else b"\x03",
            _ev(last),
            _ev(self.ack_delay),
            _ev(len(ranges) - 1),
            _ev(last - first),
        ]
        prev_first = first
        for first, last in ranges[1:]:
            parts.append(_ev(prev_first - last - 2))
            parts.append(_ev(last - first))
            prev_first = first
        if self.ecn is not None:
            parts.extend(_ev(c) for c in self.ecn)
        return b"".join(parts)


@dataclass(slots=True)
class ResetStreamFrame:
    stream_id: int
    error_code: int
    final_size: int

    @property
    def type(self) -> int:
        return 0x04

    def encode(self) -> bytes:
        return b"\x04" + _ev(self.stream_id) + _ev(self.error_code) + _ev(self.final_size)


@dataclass(slots=True)
class StopSendingFrame:
    stream_id: int
    error_code: int

    @property
    def type(self) -> int:
        return 0x05

    def encode(self) -> bytes:
        return b"\x05" + _ev(self.stream_id) + _ev(self.error_code)


@dataclass(slots=True)
class CryptoFrame:
    offset: int
    data: bytes

    @property
    def type(self) -> int:
        return 0x06

    def encode(self) -> bytes:
        return b"\x06" + _ev(self.offset) + _ev(len(self.data)) + self.data


@dataclass(slots=True)
class NewTokenFrame:
    token: bytes

    @property
    def type(self) -> int:
        return 0x07

    def encode(self) -> bytes:
        return b"\x07" + _ev(len(self.token)) + self.token


@dataclass(slots=True)
class StreamFrame:
    stream_id: int
    offset: int = 0
    data: bytes = b""
    fin: bool = False
    has_length: bool = True

    @property
    def type(self) -> int:
        return (
            0x08
            | (_STREAM_OFF if self.offset else 0)
            | (_STREAM_LEN if self.has_length else 0)
            | (_STREAM_FIN if self.fin else 0)
        )

    def encode(self) -> bytes:
        parts = [bytes((self.type,)), _ev(self.stream_id)]
        if self.offset:
            parts.append(_ev(self.offset))
        if self.has_length:
            parts.append(_ev(len(self.data)))
        parts.append(self.data)
        return b"".join(parts)


@dataclass(slots=True)
class MaxDataFrame:
    max_data: int

    @property
    def type(self) -> int:
        return 0x10

    def encode(self) -> bytes:
        return b"\x10" + _ev(self.max_data)


@dataclass(slots=True)
class MaxStreamDataFrame:
    stream_id: int
    max_data: int

    @property
    def type(self) -> int:
        return 0x11

    def encode(self) -> bytes:
        return b"\x11" + _ev(self.stream_id) + _ev(self.max_data)


@dataclass(slots=True)
class MaxStreamsFrame:
    max_streams: int
    uni: bool = False

    @property
    def type(self) -> int:
        return 0x13 if self.uni else 0x12

    def encode(self) -> bytes:
        return (b"\x13" if self.uni else b"\x12") + _ev(self.max_streams)


@dataclass(slots=True)
class DataBlockedFrame:
    limit: int

    @property
    def type(self) -> int:
        return 0x14

    def encode(self) -> bytes:
        return b"\x14" + _ev(self.limit)


@dataclass(slots=True)
class StreamDataBlockedFrame:
    stream_id: int
    limit: int

    @property
    def type(self) -> int:
        return 0x15

    def encode(self) -> bytes:
        return b"\x15" + _ev(self.stream_id) + _ev(self.limit)


@dataclass(slots=True)
class StreamsBlockedFrame:
    limit: int
    uni: bool = False

    @property
    def type(self) -> int:
        return 0x17 if self.uni else 0x16

    def encode(self) -> bytes:
        return (b"\x17" if self.uni else b"\x16") + _ev(self.limit)


@dataclass(slots=True)
class NewConnectionIdFrame:
    seq: int
    retire_prior_to: int
    connection_id: bytes
    stateless_reset_token: bytes

    @property
    def type(self) -> int:
        return 0x18

    def encode(self) -> bytes:
        return (
            b"\x18"
            + _ev(self.seq)
            + _ev(self.retire_prior_to)
            + bytes((len(self.connection_id),))
            + self.connection_id
            + self.stateless_reset_token
        )


@dataclass(slots=True)
class RetireConnectionIdFrame:
    seq: int

    @property
    def type(self) -> int:
        return 0x19

    def encode(self) -> bytes:
        return b"\x19" + _ev(self.seq)


@dataclass(slots=True)
class PathChallengeFrame:
    data: bytes

    @property
    def type(self) -> int:
        return 0x1A

    def encode(self) -> bytes:
        return b"\x1a" + self.data


@dataclass(slots=True)
class PathResponseFrame:
    data: bytes

    @property
    def type(self) -> int:
        return 0x1B

    def encode(self) -> bytes:
        return b"\x1b" + self.data


@dataclass(slots=True)
class ConnectionCloseFrame:
    error_code: int
    frame_type: int = 0
    reason: bytes = b""
    application: bool = False

    @property
    def type(self) -> int:
        return 0x1D if self.application else 0x1C

    def encode(self) -> bytes:
        if self.application:
            return b"\x1d" + _ev(self.error_code) + _ev(len(self.reason)) + self.reason
        return (
            b"\x1c"
            + _ev(self.error_code)
            + _ev(self.frame_type)
            + _ev(len(self.reason))
            + self.reason
        )


@dataclass(slots=True)
class HandshakeDoneFrame:
    @property
    def type(self) -> int:
        return 0x1E

    def encode(self) -> bytes:
        return b"\x1e"


@dataclass(slots=True)
class DatagramFrame:
    data: bytes
    has_length: bool = True

    @property
    def type(self) -> int:
        return 0x31 if self.has_length else 0x30

    def encode(self) -> bytes:
        if self.has_length:
            return b"\x31" + _ev(len(self.data)) + self.data
        return b"\x30" + self.data


Frame = (
    PaddingFrame
    | PingFrame
    | AckFrame
    | ResetStreamFrame
    | StopSendingFrame
    | CryptoFrame
    | NewTokenFrame
    | StreamFrame
    | MaxDataFrame
    | MaxStreamDataFrame
    | MaxStreamsFrame
    | DataBlockedFrame
    | StreamDataBlockedFrame
    | StreamsBlockedFrame
    | NewConnectionIdFrame
    | RetireConnectionIdFrame
    | PathChallengeFrame
    | PathResponseFrame
    | ConnectionCloseFrame
    | HandshakeDoneFrame
    | DatagramFrame
)

# RFC 9002 §2: ACK, PADDING and CONNECTION_CLOSE are not ack-eliciting.
ACK_ELICITING_EXEMPT: tuple[type, ...] = (AckFrame, PaddingFrame, ConnectionCloseFrame)


def is_ack_eliciting(frames: Iterable[Frame]) -> bool:
    """True if any frame is ack-eliciting (RFC 9002 §2)."""
    return any(not isinstance(f, ACK_ELICITING_EXEMPT) for f in frames)


def stream_frame_overhead(stream_id: int, offset: int, length: int) -> int:
    """Bytes of a STREAM frame header with Length (and Offset if non-zero)."""
    return (
        1 + varint_size(stream_id) + (varint_size(offset) if offset else 0) + varint_size(length)
    )


def crypto_frame_overhead(offset: int, length: int) -> int:
    """Bytes of a CRYPTO frame header."""
    return 1 + varint_size(offset) + varint_size(length)


# --- parsing ---------------------------------------------------------------


def _err(ftype: int, reason: str) -> QuicError:
    return QuicError(FRAME_ENCODING_ERROR, ftype, reason)


def _p_ping(b: Buffer, t: int) -> Frame:
    return PingFrame()


def _p_ack(b: Buffer, t: int) -> Frame:
    # RFC 9000 §19.3
    largest = b.pull_varint()
    delay = b.pull_varint()
    count = b.pull_varint()
    first_range = b.pull_varint()
    if first_range > largest:
        raise _err(t, "ACK first range below zero")
    smallest = largest - first_range
    ranges = [(smallest, largest)]
    if count > b.remaining() // 2:  # each range needs at least 2 bytes
        raise _err(t, "ACK range count exceeds frame")
    for _ in range(count):
        gap = b.pull_varint()
        length = b.pull_varint()
        last = smallest - gap - 2
        smallest = last - length
        if smallest < 0:
            raise _err(t, "ACK range below zero")
        ranges.append((smallest, last))
    ecn = None
    if t == 0x03:
        ecn = (b.pull_varint(), b.pull_varint(), b.pull_varint())
    return AckFrame(ranges, delay, ecn)


def _p_reset_stream(b: Buffer, t: int) -> Frame:
    return ResetStreamFrame(b.pull_varint(), b.pull_varint(), b.pull_varint())


def _p_stop_sending(b: Buffer, t: int) -> Frame:
    return StopSendingFrame(b.pull_varint(), b.pull_varint())


def _p_crypto(b: Buffer, t: int) -> Frame:
    offset = b.pull_varint()
    length = b.pull_varint()
    if offset + length > VARINT_MAX:  # RFC 9000 §19.6
        raise _err(t, "CRYPTO offset too large")
    return CryptoFrame(offset, b.pull_bytes(length))


def _p_new_token(b: Buffer, t: int) -> Frame:
    length = b.pull_varint()
    if not length:  # RFC 9000 §19.7
        raise _err(t, "empty NEW_TOKEN")
    return NewTokenFrame(b.pull_bytes(length))


def _p_stream(b: Buffer, t: int) -> Frame:
    # RFC 9000 §19.8
    stream_id = b.pull_varint()
    offset = b.pull_varint() if t & _STREAM_OFF else 0
    if t & _STREAM_LEN:
        data = b.pull_bytes(b.pull_varint())
        has_length = True
    else:
        data = b.pull_rest()
        has_length = False
    if offset + len(data) > VARINT_MAX:
        raise _err(t, "STREAM offset too large")
    return StreamFrame(stream_id, offset, data, bool(t & _STREAM_FIN), has_length)


def _p_max_data(b: Buffer, t: int) -> Frame:
    return MaxDataFrame(b.pull_varint())


def _p_max_stream_data(b: Buffer, t: int) -> Frame:
    return MaxStreamDataFrame(b.pull_varint(), b.pull_varint())


def _p_max_streams(b: Buffer, t: int) -> Frame:
    n = b.pull_varint()
    if n > _MAX_STREAMS:  # RFC 9000 §19.11
        raise _err(t, "MAX_STREAMS above 2^60")
    return MaxStreamsFrame(n, t == 0x13)


def _p_data_blocked(b: Buffer, t: int) -> Frame:
    return DataBlockedFrame(b.pull_varint())


def _p_stream_data_blocked(b: Buffer, t: int) -> Frame:
    return StreamDataBlockedFrame(b.pull_varint(), b.pull_varint())


def _p_streams_blocked(b: Buffer, t: int) -> Frame:
    n = b.pull_varint()
    if n > _MAX_STREAMS:  # RFC 9000 §19.14
        raise _err(t, "STREAMS_BLOCKED above 2^60")
    return StreamsBlockedFrame(n, t == 0x17)


def _p_new_connection_id(b: Buffer, t: int) -> Frame:
    # RFC 9000 §19.15
    seq = b.pull_varint()
    retire = b.pull_varint()
    if retire > seq:
        raise _err(t, "retire_prior_to above sequence number")
    length = b.pull_uint8()
    if not 1 <= length <= 20:
        raise _err(t, "bad connection ID length")
    cid = b.pull_bytes(length)
    return NewConnectionIdFrame(seq, retire, cid, b.pull_bytes(16))


def _p_retire_connection_id(b: Buffer, t: int) -> Frame:
    return RetireConnectionIdFrame(b.pull_varint())


def _p_path_challenge(b: Buffer, t: int) -> Frame:
    return PathChallengeFrame(b.pull_bytes(8))


def _p_path_response(b: Buffer, t: int) -> Frame:
    return PathResponseFrame(b.pull_bytes(8))


def _p_connection_close(b: Buffer, t: int) -> Frame:
    code = b.pull_varint()
    if t == 0x1C:
        ftype = b.pull_varint()
        return ConnectionCloseFrame(code, ftype, b.pull_bytes(b.pull_varint()), False)
    return ConnectionCloseFrame(code, 0, b.pull_bytes(b.pull_varint()), True)


def _p_handshake_done(b: Buffer, t: int) -> Frame:
    return HandshakeDoneFrame()


def _p_datagram(b: Buffer, t: int) -> Frame:
    if t == 0x31:
        return DatagramFrame(b.pull_bytes(b.pull_varint()), True)
    return DatagramFrame(b.pull_rest(), False)


# Permitted packet types (RFC 9000 §12.4 Table 3; RFC 9221 §4), as bit masks
# of 1 << PacketType: INITIAL=0, ZERO_RTT=1, HANDSHAKE=2, ONE_RTT=5.
_I, _Z, _H, _O = 1 << 0, 1 << 1, 1 << 2, 1 << 5
_ALL = _I | _Z | _H | _O
_IH1 = _I | _H | _O
_01 = _Z | _O

_Parser = Callable[[Buffer, int], Frame]
_PARSERS: dict[int, tuple[_Parser, int]] = {
    0x01: (_p_ping, _ALL),
    0x02: (_p_ack, _IH1),
    0x03: (_p_ack, _IH1),
    0x04: (_p_reset_stream, _01),
    0x05: (_p_stop_sending, _01),
    0x06: (_p_crypto, _IH1),
    0x07: (_p_new_token, _O),
    0x10: (_p_max_data, _01),
    0x11: (_p_max_stream_data, _01),
    0x12: (_p_max_streams, _01),
    0x13: (_p_max_streams, _01),
    0x14: (_p_data_blocked, _01),
    0x15: (_p_stream_data_blocked, _01),
    0x16: (_p_streams_blocked, _01),
    0x17: (_p_streams_blocked, _01),
    0x18: (_p_new_connection_id, _01),
    0x19: (_p_retire_connection_id, _01),
    0x1A: (_p_path_challenge, _01),
    0x1B: (_p_path_response, _O),
    0x1C: (_p_connection_close, _ALL),
    0x1D: (_p_connection_close, _01),
    0x1E: (_p_handshake_done, _O),
    0x30: (_p_datagram, _01),
    0x31: (_p_datagram, _01),
}
for _t in range(0x08, 0x10):
    _PARSERS[_t] = (_p_stream, _01)
del _t


def parse_frames(payload: bytes, packet_type: int) -> list[Frame]:
    """Parse every frame of a decrypted packet payload (RFC 9000 §12.4)."""
    if not payload:
        raise QuicError(PROTOCOL_VIOLATION, None, "packet without frames")
    ptype_bit = 1 << int(packet_type)
    buf = Buffer(bytes(payload))
    data = buf.data
    end = buf.end
    frames: list[Frame] = []
    append = frames.append
    while buf.pos < end:
        pos = buf.pos
        first = data[pos]
        if first == 0:
            # A run of PADDING is returned as one frame.
            n = end - pos - len(data[pos:end].lstrip(b"\x00"))
            buf.pos = pos + n
            append(PaddingFrame(n))
            continue
        if first < 0x40:
            ftype = first
            buf.pos = pos + 1
        else:
            try:
                ftype = buf.pull_varint()
            except BufferReadError:
                raise _err(first, "truncated frame type") from None
            if ftype in _PARSERS or ftype == 0:
                # RFC 9000 §12.4: frame types use the shortest encoding.
                raise QuicError(PROTOCOL_VIOLATION, ftype, "frame type not minimally encoded")
        entry = _PARSERS.get(ftype)
        if entry is None:
            raise _err(ftype, f"unknown frame type 0x{ftype:x}")
        parser, allowed = entry
        if not allowed & ptype_bit:
            raise QuicError(PROTOCOL_VIOLATION, ftype, "frame not allowed in this packet type")
        try:
            append(parser(buf, ftype))
        except BufferReadError:
            raise _err(ftype, "truncated frame") from None
    return frames
