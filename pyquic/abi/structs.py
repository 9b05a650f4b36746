"""Typed views of the kernel QUIC option and cmsg structs.

Each class is a dataclass whose fields carry the C field names (``reserved``
fields are omitted: they pack as zero and are ignored on unpack). The layout
(offsets, padding, size) is taken from cffi's view of ``linux/quic.h`` at import
time (``pyquic.abi._ffi``), and turned into a precompiled ``struct.Struct`` with
explicit pad bytes, so packing is as fast as ``struct`` while cffi (or the C
compiler, in API mode) stays the authority on the layout.

``pack()`` raises ValueError naming the field for an out-of-range value (or a
byte string that does not fit), TypeError for a non-integer. ``unpack(buf)``
raises ValueError with the expected size when ``buf`` is short; a longer buffer
is read from its start. ``unpack_prefix(buf)`` instead copies like the kernel's
``quic_copy_common``: a short buffer is zero-extended, a long one truncated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from pyquic.abi._ffi import ffi as _ffi

if TYPE_CHECKING:
    from typing_extensions import Self

# cffi primitive type -> (struct code, min, max, short name for messages)
_PRIMITIVES: dict[str, tuple[str, int, int, str]] = {
    "uint8_t": ("B", 0, 0xFF, "u8"),
    "uint16_t": ("H", 0, 0xFFFF, "u16"),
    "uint32_t": ("I", 0, 0xFFFFFFFF, "u32"),
    "uint64_t": ("Q", 0, 0xFFFFFFFFFFFFFFFF, "u64"),
    "int8_t": ("b", -0x80, 0x7F, "s8"),
    "int16_t": ("h", -0x8000, 0x7FFF, "s16"),
    "int32_t": ("i", -0x80000000, 0x7FFFFFFF, "s32"),
    "int64_t": ("q", -0x8000000000000000, 0x7FFFFFFFFFFFFFFF, "s64"),
}


@dataclass(frozen=True)
class FieldSpec:
    """One packed field: its name and either an integer range or a byte length."""

    name: str
    offset: int
    label: str  # "u8".."s64", or "bytes"
    lo: int = 0
    hi: int = 0
    length: int = 0  # byte arrays: the C array length


def layout(ctype: str, cffi_ffi: Any = None) -> tuple[str, tuple[FieldSpec, ...], int]:
    """Return ``(struct format without byte-order prefix, fields, size)`` of a C type.

    ``ctype`` is a cffi type name ("struct quic_config") or a primitive
    ("uint64_t"). Fields named ``reserved`` and all padding become pad bytes.
    ``cffi_ffi`` defaults to pyquic.abi's ffi.
    """
    ffi = _ffi if cffi_ffi is None else cffi_ffi
    ct = ffi.typeof(ctype)
    size = ffi.sizeof(ct)
    if ct.kind == "primitive":
        code, lo, hi, label = _PRIMITIVES[ct.cname]
        return code, (FieldSpec("value", 0, label, lo, hi),), size
    parts: list[str] = []
    specs: list[FieldSpec] = []
    pos = 0
    for name, fld in sorted(ct.fields, key=lambda item: item[1].offset):
        if fld.offset > pos:
            parts.append(f"{fld.offset - pos}x")
        fsize = ffi.sizeof(fld.type)
        if name == "reserved" or name.startswith("reserved"):
            parts.append(f"{fsize}x")
        elif fld.type.kind == "primitive":
            code, lo, hi, label = _PRIMITIVES[fld.type.cname]
            parts.append(code)
            specs.append(FieldSpec(name, fld.offset, label, lo, hi))
        elif fld.type.kind == "array" and fld.type.item.cname == "uint8_t":
            parts.append(f"{fld.type.length}s")
            specs.append(FieldSpec(name, fld.offset, "bytes", length=fld.type.length))
        else:
            raise TypeError(f"{ctype}.{name}: unsupported field type {fld.type.cname}")
        pos = fld.offset + fsize
    if size > pos:
        parts.append(f"{size - pos}x")
    return "".join(parts), tuple(specs), size


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) == 1:
        one = names[0]
        return lambda obj: (getattr(obj, one),)
    return attrgetter(*names)  # type: ignore[return-value]


def field_error(owner: str, spec: FieldSpec, value: Any, max_len: int | None = None) -> Exception:
    """Build the exception explaining why ``value`` cannot be packed into ``spec``."""
    where = f"{owner}.{spec.name}"
    if spec.label == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return TypeError(f"{where}: expected bytes, got {type(value).__name__}")
        limit = spec.length if max_len is None else max_len
        return ValueError(f"{where}: {len(value)} bytes, at most {limit} fit")
    if not isinstance(value, int):
        return TypeError(f"{where}: expected int, got {type(value).__name__}")
    return ValueError(f"{where}: {value} out of range for {spec.label}")


def check_values(owner: str, specs: tuple[FieldSpec, ...], values: tuple[Any, ...],
                 max_lens: dict[str, int]) -> None:
    """Raise the error of the first value that does not fit its field."""
    for spec, value in zip(specs, values):
        if spec.label == "bytes":
            limit = max_lens.get(spec.name, spec.length)
            if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) > limit:
                raise field_error(owner, spec, value, limit)
        elif not isinstance(value, int) or not spec.lo <= value <= spec.hi:
            raise field_error(owner, spec, value)


class CStruct:
    """Base of the struct dataclasses: layout binding, pack and unpack."""

    __slots__ = ()

    CTYPE: ClassVar[str]
    SIZE: ClassVar[int]
    FIELDS: ClassVar[tuple[FieldSpec, ...]]
    FORMAT: ClassVar[str]  # struct format, native byte order, no implicit alignment
    _struct: ClassVar[struct.Struct]
    _get: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _has_bytes: ClassVar[bool]
    _max_lens: ClassVar[dict[str, int]] = {}

    def pack(self) -> bytes:
        """Return the struct's bytes exactly as laid out in memory."""
        values = type(self)._get(self)
        if self._has_bytes:
            check_values(type(self).__name__, self.FIELDS, values, self._max_lens)
        try:
            return self._struct.pack(*values)
        except struct.error:
            check_values(type(self).__name__, self.FIELDS, values, self._max_lens)
            raise

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Self:
        """Decode ``buf`` (at least SIZE bytes; extra bytes are ignored)."""
        if len(buf) < cls.SIZE:
            raise ValueError(f"{cls.__name__}: need {cls.SIZE} bytes, got {len(buf)}")
        return cls._from_values(cls._struct.unpack_from(buf))

    @classmethod
    def unpack_prefix(cls, buf: bytes | bytearray | memoryview) -> Self:
        """Decode like the kernel copies option input: zero-extend or truncate to SIZE."""
        data = bytes(buf[: cls.SIZE])
        if len(data) < cls.SIZE:
            data += bytes(cls.SIZE - len(data))
        return cls._from_values(cls._struct.unpack(data))

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> Self:
        return cls(*values)


def bind(cls: type[CStruct], ctype: str) -> None:
    """Attach the cffi layout of ``ctype`` to ``cls`` and check the field names agree."""
    fmt, specs, size = layout(ctype)
    names = tuple(s.name for s in specs)
    py_names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    if names != py_names:
        raise ImportError(f"{cls.__name__}: fields {py_names} do not match {ctype} {names}")
    st = struct.Struct("=" + fmt)
    if st.size != size:
        raise ImportError(f"{cls.__name__}: struct size {st.size} != sizeof({ctype}) {size}")
    cls.CTYPE = ctype
    cls.SIZE = size
    cls.FIELDS = specs
    cls.FORMAT = "=" + fmt
    cls._struct = st
    cls._get = staticmethod(_getter(names))  # type: ignore[assignment]
    cls._has_bytes = any(s.label == "bytes" for s in specs)


@dataclass(slots=True)
class HandshakeInfo(CStruct):
    """struct quic_handshake_info: the QUIC_HANDSHAKE_INFO cmsg."""

    crypto_level: int = 0


@dataclass(slots=True)
class StreamInfo(CStruct):
    """struct quic_stream_info: the QUIC_STREAM_INFO cmsg and STREAM_OPEN option."""

    stream_id: int = 0
    stream_flags: int = 0


@dataclass(slots=True)
class TransportParam(CStruct):
    """struct quic_transport_param: the TRANSPORT_PARAM option (times in microseconds)."""

    remote: int = 0
    disable_active_migration: int = 0
    grease_quic_bit: int = 0
    stateless_reset: int = 0
    disable_1rtt_encryption: int = 0
    disable_compatible_version: int = 0
    active_connection_id_limit: int = 0
    ack_delay_exponent: int = 0
    max_datagram_frame_size: int = 0
    max_udp_payload_size: int = 0
    max_idle_timeout: int = 0
    max_ack_delay: int = 0
    max_streams_bidi: int = 0
    max_streams_uni: int = 0
    max_data: int = 0
    max_stream_data_bidi_local: int = 0
    max_stream_data_bidi_remote: int = 0
    max_stream_data_uni: int = 0


@dataclass(slots=True)
class Config(CStruct):
    """struct quic_config: the CONFIG option."""

    version: int = 0
    plpmtud_probe_interval: int = 0
    initial_smoothed_rtt: int = 0
    payload_cipher_type: int = 0
    congestion_control_algo: int = 0
    validate_peer_address: int = 0
    stream_data_nodelay: int = 0
    receive_session_ticket: int = 0
    certificate_request: int = 0
    keepalive_probe_interval: int = 0


@dataclass(slots=True)
class CryptoSecret(CStruct):
    """struct quic_crypto_secret: the CRYPTO_SECRET option.

    ``secret`` is zero-padded to 48 bytes on pack; unpack returns all 48 bytes
    (the useful length follows from ``type``: 32 bytes except 48 for AES-256-GCM).
    """

    send: int = 0
    level: int = 0
    type: int = 0
    secret: bytes = b""


@dataclass(slots=True)
class ErrInfo(CStruct):
    """struct quic_errinfo: the STREAM_RESET and STREAM_STOP_SENDING options."""

    stream_id: int = 0
    errcode: int = 0


@dataclass(slots=True)
class ConnectionIdInfo(CStruct):
    """struct quic_connection_id_info: the CONNECTION_ID option."""

    dest: int = 0
    active: int = 0
    prior_to: int = 0


@dataclass(slots=True)
class EventOption(CStruct):
    """struct quic_event_option: the EVENT option."""

    type: int = 0
    on: int = 0


@dataclass(slots=True)
class StreamUpdate(CStruct):
    """struct quic_stream_update: payload of the STREAM_UPDATE event."""

    id: int = 0
    state: int = 0
    errcode: int = 0
    finalsz: int = 0


@dataclass(slots=True)
class StreamMaxData(CStruct):
    """struct quic_stream_max_data: payload of the STREAM_MAX_DATA event."""

    id: int = 0
    max_data: int = 0


@dataclass(slots=True)
class ConnectionClose(CStruct):
    """struct quic_connection_close: the CONNECTION_CLOSE option and event.

    ``phrase`` is the C string without its NUL terminator: at most 63 bytes
    are packed (the kernel keeps the last byte for the NUL), and unpack stops
    at the first NUL.
    """

    errcode: int = 0
    frame: int = 0
    phrase: bytes = b""

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> ConnectionClose:
        errcode, frame, phrase = values
        return cls(errcode, frame, phrase.split(b"\0", 1)[0])


bind(HandshakeInfo, "struct quic_handshake_info")
bind(StreamInfo, "struct quic_stream_info")
bind(TransportParam, "struct quic_transport_param")
bind(Config, "struct quic_config")
bind(CryptoSecret, "struct quic_crypto_secret")
bind(ErrInfo, "struct quic_errinfo")
bind(ConnectionIdInfo, "struct quic_connection_id_info")
bind(EventOption, "struct quic_event_option")
bind(StreamUpdate, "struct quic_stream_update")
bind(StreamMaxData, "struct quic_stream_max_data")
bind(ConnectionClose, "struct quic_connection_close")
ConnectionClose._max_lens = {"phrase": ConnectionClose.FIELDS[2].length - 1}

STRUCT_CLASSES: tuple[type[CStruct], ...] = (
    HandshakeInfo, StreamInfo, TransportParam, Config, CryptoSecret, ErrInfo,
    ConnectionIdInfo, EventOption, StreamUpdate, StreamMaxData, ConnectionClose,
)
