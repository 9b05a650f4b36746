"""Wire primitives: QUIC variable-length integers and fast byte readers/writers.

Public API (stable):

- ``VARINT_MAX = 2**62 - 1``
- ``varint_size(v: int) -> int``: encoded length (1, 2, 4 or 8) of ``v``.
- ``encode_varint(v: int) -> bytes``: shortest encoding (RFC 9000 §16);
  ValueError if ``v`` is negative or above ``VARINT_MAX``.
- ``encode_varint_len(v: int, size: int) -> bytes``: encoding of ``v`` forced
  to ``size`` bytes (1, 2, 4, 8), e.g. a fixed 2-byte Length field.
- ``decode_varint(buf, offset=0) -> tuple[int, int]``: (value, new offset);
  BufferReadError on truncation.
- ``BufferReadError(ValueError)``: raised by every reader on truncation.
- ``Buffer(data: bytes, offset: int = 0, end: int | None = None)``: a reader
  over ``data[offset:end]`` with ``pull_uint8/16/32/64()``, ``pull_varint()``,
  ``pull_bytes(n)``, ``pull_rest()``, ``tell()``, ``seek(pos)``, ``eof()``,
  ``remaining()``, ``data`` (the underlying bytes) and ``end``.
- ``Writer()``: a bytearray builder with ``push_uint8/16/32/64``,
  ``push_varint``, ``push_bytes``, ``tell()``, ``getvalue() -> bytes`` and the
  raw ``buf`` (bytearray).
"""

from __future__ import annotations

import struct

__all__ = [
    "VARINT_MAX",
    "Buffer",
    "BufferReadError",
    "Writer",
    "decode_varint",
    "encode_varint",
    "encode_varint_len",
    "varint_size",
]

VARINT_MAX = (1 << 62) - 1

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!L")
_U64 = struct.Struct("!Q")
_unpack_u16 = _U16.unpack_from
_unpack_u32 = _U32.unpack_from
_unpack_u64 = _U64.unpack_from

# Single-byte varints are by far the most common: pre-build them.
_ONE_BYTE = [bytes((i,)) for i in range(64)]


class BufferReadError(ValueError):
    """The input ended before the value being read (truncated data)."""


def varint_size(v: int) -> int:
    """Return the number of bytes of the shortest varint encoding of ``v``."""
    if v < 0x40:
        return 1
    if v < 0x4000:
        return 2
    if v < 0x40000000:
        return 4
    if v <= VARINT_MAX:
        return 8
    raise ValueError(f"integer {v} too large for a varint")


def encode_varint(v: int) -> bytes:
    """Encode ``v`` as a QUIC variable-length integer (RFC 9000 §16)."""
    if v < 0x40:
        if v < 0:
            raise ValueError("varint must not be negative")
        return _ONE_BYTE[v]
    if v < 0x4000:
        return _U16.pack(v | 0x4000)
    if v < 0x40000000:
        return _U32.pack(v | 0x80000000)
    if v <= VARINT_MAX:
        return _U64.pack(v | 0xC000000000000000)
    raise ValueError(f"integer {v} too large for a varint")


_PREFIX = {1: 0x00, 2: 0x40, 4: 0x80, 8: 0xC0}


def encode_varint_len(v: int, size: int) -> bytes:
    """Encode ``v`` as a varint of exactly ``size`` bytes (non-minimal allowed)."""
    prefix = _PREFIX.get(size)
    if prefix is None:
        raise ValueError("varint size must be 1, 2, 4 or 8")
    if v < 0 or v >= 1 << (size * 8 - 2):
        raise ValueError(f"integer {v} does not fit a {size}-byte varint")
    return (v | (prefix << (size * 8 - 8))).to_bytes(size, "big")


def decode_varint(buf: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode a varint at ``offset``; return (value, offset after it)."""
    try:
        first = buf[offset]
    except IndexError:
        raise BufferReadError("truncated varint") from None
    kind = first >> 6
    if kind == 0:
        return first, offset + 1
    size = 1 << kind
    end = offset + size
    if end > len(buf):
        raise BufferReadError("truncated varint")
    if kind == 1:
        return _unpack_u16(buf, offset)[0] & 0x3FFF, end
    if kind == 2:
        return _unpack_u32(buf, offset)[0] & 0x3FFFFFFF, end
    return _unpack_u64(buf, offset)[0] & 0x3FFFFFFFFFFFFFFF, end


class Buffer:
    """Sequential reader over ``data[offset:end]``; truncation -> BufferReadError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = offset
        self.end = len(data) if end is None else end
        if self.end > len(data) or offset > self.end or offset < 0:
            raise BufferReadError("buffer bounds outside data")

    def tell(self) -> int:
        """Current absolute position in ``data``."""
        return self.pos

    def seek(self, pos: int) -> None:
        """Move to absolute position ``pos`` (must lie within the window)."""
        if pos < 0 or pos > self.end:
            raise BufferReadError("seek out of bounds")
        self.pos = pos

    def eof(self) -> bool:
        """True when everything up to ``end`` has been read."""
        return self.pos >= self.end

    def remaining(self) -> int:
        """Bytes left before ``end``."""
        return self.end - self.pos

    def pull_uint8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise BufferReadError("truncated uint8")
        self.pos = pos + 1
        return self.data[pos]

    def pull_uint16(self) -> int:
        pos = self.pos
        if pos + 2 > self.end:
            raise BufferReadError("truncated uint16")
        self.pos = pos + 2
        return int(_unpack_u16(self.data, pos)[0])

    def pull_uint32(self) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            raise BufferReadError("truncated uint32")
        self.pos = pos + 4
        return int(_unpack_u32(self.data, pos)[0])

    def pull_uint64(self) -> int:
        pos = self.pos
        if pos + 8 > self.end:
            raise BufferReadError("truncated uint64")
        self.pos = pos + 8
        return int(_unpack_u64(self.data, pos)[0])

    def pull_varint(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise BufferReadError("truncated varint")
        data = self.data
        first = data[pos]
        kind = first >> 6
        if kind == 0:
            self.pos = pos + 1
            return first
        if kind == 1:
            if pos + 2 > self.end:
                raise BufferReadError("truncated varint")
            self.pos = pos + 2
            return int(_unpack_u16(data, pos)[0]) & 0x3FFF
        if kind == 2:
            if pos + 4 > self.end:
                raise BufferReadError("truncated varint")
            self.pos = pos + 4
            return int(_unpack_u32(data, pos)[0]) & 0x3FFFFFFF
        if pos + 8 > self.end:
            raise BufferReadError("truncated varint")
        self.pos = pos + 8
        return int(_unpack_u64(data, pos)[0]) & 0x3FFFFFFFFFFFFFFF

    def pull_bytes(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise BufferReadError("truncated bytes")
        self.pos = pos + n
        return bytes(self.data[pos : pos + n])

    def pull_rest(self) -> bytes:
        """Return everything up to ``end`` and move there."""
        pos = self.pos
        self.pos = self.end
        return bytes(self.data[pos : self.end])


class Writer:
    """Append-only builder; ``getvalue()`` returns the bytes written."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def tell(self) -> int:
        return len(self.buf)

    def push_uint8(self, v: int) -> None:
        self.buf.append(v)

    def push_uint16(self, v: int) -> None:
        self.buf += _U16.pack(v)

    def push_uint32(self, v: int) -> None:
        self.buf += _U32.pack(v)

    def push_uint64(self, v: int) -> None:
        self.buf += _U64.pack(v)

    def push_varint(self, v: int) -> None:
        self.buf += encode_varint(v)

    def push_bytes(self, data: bytes) -> None:
        self.buf += data

    def getvalue(self) -> bytes:
        return bytes(self.buf)
