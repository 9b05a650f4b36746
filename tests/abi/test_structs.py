"""Struct layouts (DESIGN.md ABI table) and byte-exact pack/unpack of pyquic.abi structs."""

from __future__ import annotations

from typing import Any

import pytest

from pyquic import abi
from pyquic.abi.structs import CStruct, FieldSpec

# DESIGN.md "ABI facts (x86_64)": struct -> (size, {field: offset})
ABI_TABLE: dict[str, tuple[int, dict[str, int]]] = {
    "struct quic_handshake_info": (1, {}),
    "struct quic_stream_info": (16, {"stream_flags": 8}),
    "struct quic_transport_param": (56, {
        "max_datagram_frame_size": 8, "max_idle_timeout": 12, "max_streams_bidi": 20,
        "max_data": 24, "max_stream_data_uni": 48}),
    "struct quic_config": (28, {"congestion_control_algo": 16, "keepalive_probe_interval": 24}),
    "struct quic_crypto_secret": (56, {"type": 4, "secret": 8}),
    "struct quic_errinfo": (16, {}),
    "struct quic_connection_id_info": (12, {}),
    "struct quic_event_option": (2, {}),
    "struct quic_stream_update": (24, {"errcode": 12, "finalsz": 16}),
    "struct quic_stream_max_data": (16, {}),
    "struct quic_connection_close": (72, {"phrase": 8}),
    "union quic_event": (72, {}),
}

CLASS_OF: dict[str, type[CStruct]] = {cls.CTYPE: cls for cls in abi.STRUCT_CLASSES}


@pytest.mark.parametrize("ctype", sorted(ABI_TABLE))
def test_abi_table(shipped: tuple[Any, Any], ctype: str) -> None:
    """Sizes and offsets from the design table, in the shipped cdef and the loaded ffi."""
    size, offsets = ABI_TABLE[ctype]
    for ffi in (shipped[0], abi.ffi):
        assert ffi.sizeof(ctype) == size
        for name, off in offsets.items():
            assert ffi.offsetof(ctype, name) == off, name
    if ctype in CLASS_OF:
        assert CLASS_OF[ctype].SIZE == size


def test_secret_and_phrase_lengths(shipped: tuple[Any, Any]) -> None:
    ffi = shipped[0]
    assert ffi.sizeof(ffi.typeof("struct quic_crypto_secret").fields[-1][1].type) == 48
    assert dict(ffi.typeof("struct quic_connection_close").fields)["phrase"].type.length == 64
    assert ffi.offsetof("struct quic_connection_id_info", "active") == 4
    assert ffi.offsetof("struct quic_connection_id_info", "prior_to") == 8


def test_every_struct_class_is_covered() -> None:
    names = {cls.__name__ for cls in abi.STRUCT_CLASSES}
    assert names == {"HandshakeInfo", "StreamInfo", "TransportParam", "Config", "CryptoSecret",
                     "ErrInfo", "ConnectionIdInfo", "EventOption", "StreamUpdate",
                     "StreamMaxData", "ConnectionClose"}
    for cls in abi.STRUCT_CLASSES:
        assert cls.CTYPE in ABI_TABLE


def sample_value(spec: FieldSpec, i: int, cls: type[CStruct]) -> Any:
    """A distinctive in-range value for a field (bytes fill their array, minus NUL for phrase)."""
    if spec.label == "bytes":
        n = spec.length - 1 if cls is abi.ConnectionClose else spec.length
        return bytes((i * 7 + k + 1) & 0xFF or 1 for k in range(n))
    if spec.lo < 0:
        return spec.lo + 0x0102030405 * (i + 1)  # negative, high bits set
    return (0x8877665544332211 * (i + 3)) & spec.hi or 1


def cffi_bytes(ffi: Any, ctype: str, values: dict[str, Any]) -> bytes:
    init = {k: (list(v) if isinstance(v, bytes) else v) for k, v in values.items()}
    return bytes(ffi.buffer(ffi.new(ctype + " *", init)))


@pytest.mark.parametrize("cls", abi.STRUCT_CLASSES, ids=lambda c: c.__name__)
def test_pack_matches_cffi_and_round_trips(shipped: tuple[Any, Any], cls: type[CStruct]) -> None:
    values = {spec.name: sample_value(spec, i, cls) for i, spec in enumerate(cls.FIELDS)}
    obj = cls(**values)
    data = obj.pack()
    assert len(data) == cls.SIZE
    assert data == cffi_bytes(shipped[0], cls.CTYPE, values)
    assert cls.unpack(data) == obj
    assert cls.unpack(data + b"\xff" * 5) == obj  # extra bytes are ignored
    assert cls.unpack(memoryview(bytearray(data))) == obj


@pytest.mark.parametrize("cls", abi.STRUCT_CLASSES, ids=lambda c: c.__name__)
def test_extremes_round_trip(cls: type[CStruct]) -> None:
    for pick in ("lo", "hi"):
        values = {s.name: (getattr(s, pick) if s.label != "bytes" else b"")
                  for s in cls.FIELDS}
        obj = cls(**values)
        back = cls.unpack(obj.pack())
        for s in cls.FIELDS:
            if s.label != "bytes":
                assert getattr(back, s.name) == getattr(s, pick)


def test_reserved_fields_pack_zero_and_are_ignored() -> None:
    data = abi.StreamUpdate(id=1, state=2, errcode=3, finalsz=4).pack()
    assert data[9:12] == b"\0\0\0" and data[12:16] == (3).to_bytes(4, "little")
    dirty = bytearray(data)
    dirty[9:12] = b"\xaa\xbb\xcc"
    dirty[20:24] = (0x01020304).to_bytes(4, "little")  # high half of finalsz, not reserved
    back = abi.StreamUpdate.unpack(bytes(dirty))
    assert (back.state, back.errcode, back.finalsz) == (2, 3, 4 | (0x01020304 << 32))
    cfg = abi.Config(version=1, certificate_request=3, keepalive_probe_interval=7).pack()
    assert cfg[21:24] == b"\0\0\0" and cfg[20] == 3 and cfg[24:] == (7).to_bytes(4, "little")
    secret = abi.CryptoSecret(send=1, level=2, type=51, secret=b"\x11" * 32).pack()
    assert secret[:8] == bytes([1, 2, 0, 0, 51, 0, 0, 0])
    assert secret[8:40] == b"\x11" * 32 and secret[40:] == bytes(16)


def test_known_bytes() -> None:
    """Hand-written little-endian bytes (x86_64) for a few structs."""
    assert abi.StreamInfo(-1, 0x400 | 0x200).pack() == b"\xff" * 8 + bytes([0, 6, 0, 0]) + bytes(4)
    assert abi.EventOption(type=7, on=1).pack() == b"\x07\x01"
    assert abi.ConnectionIdInfo(dest=1, active=5, prior_to=3).pack() == (
        b"\x01\0\0\0" + b"\x05\0\0\0" + b"\x03\0\0\0")
    tp = abi.TransportParam(max_idle_timeout=30_000_000, max_streams_bidi=100, max_data=1 << 40)
    raw = tp.pack()
    assert raw[12:16] == (30_000_000).to_bytes(4, "little")
    assert raw[20:22] == (100).to_bytes(2, "little")
    assert raw[24:32] == (1 << 40).to_bytes(8, "little")
    assert abi.HandshakeInfo(abi.CryptoLevel.HANDSHAKE).pack() == b"\x02"


def test_connection_close_phrase() -> None:
    cc = abi.ConnectionClose(errcode=0x10A, frame=0, phrase=b"going away")
    data = cc.pack()
    assert data[8:18] == b"going away" and data[18:] == bytes(54)
    assert abi.ConnectionClose.unpack(data).phrase == b"going away"
    # unpack stops at the first NUL, like the kernel's strlen()
    assert abi.ConnectionClose.unpack(data[:8] + b"ab\0cd" + bytes(59)).phrase == b"ab"
    assert len(abi.ConnectionClose(phrase=b"x" * 63).pack()) == 72
    with pytest.raises(ValueError, match=r"ConnectionClose\.phrase: 64 bytes, at most 63"):
        abi.ConnectionClose(phrase=b"x" * 64).pack()


@pytest.mark.parametrize("cls,field,value,label", [
    (abi.EventOption, "type", 300, "u8"),
    (abi.EventOption, "on", -1, "u8"),
    (abi.StreamInfo, "stream_id", 1 << 63, "s64"),
    (abi.StreamInfo, "stream_flags", 1 << 32, "u32"),
    (abi.TransportParam, "max_streams_bidi", 70000, "u16"),
    (abi.TransportParam, "max_data", 1 << 64, "u64"),
    (abi.Config, "keepalive_probe_interval", -5, "u32"),
    (abi.ErrInfo, "stream_id", -(1 << 63) - 1, "s64"),
    (abi.StreamUpdate, "state", 256, "u8"),
])
def test_range_errors_name_the_field(cls: type[CStruct], field: str, value: int,
                                     label: str) -> None:
    obj = cls(**{field: value})
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{field}: {value} out of range for "
                                         rf"{label}$"):
        obj.pack()


def test_type_errors_name_the_field() -> None:
    with pytest.raises(TypeError, match=r"StreamInfo\.stream_flags: expected int"):
        abi.StreamInfo(0, "fin").pack()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CryptoSecret\.secret: expected bytes"):
        abi.CryptoSecret(secret="abc").pack()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"CryptoSecret\.secret: 49 bytes, at most 48"):
        abi.CryptoSecret(secret=bytes(49)).pack()


@pytest.mark.parametrize("cls", abi.STRUCT_CLASSES, ids=lambda c: c.__name__)
def test_short_buffer(cls: type[CStruct]) -> None:
    short = bytes(cls.SIZE - 1)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: need {cls.SIZE} bytes, got "
                                         rf"{cls.SIZE - 1}"):
        cls.unpack(short)


def test_unpack_prefix_copies_like_the_kernel() -> None:
    # quic_copy_common: a short option is zero-extended, a long one truncated
    assert abi.EventOption.unpack_prefix(b"\x05") == abi.EventOption(5, 0)
    assert abi.EventOption.unpack_prefix(b"\x05\x01\x09") == abi.EventOption(5, 1)
    assert abi.ConnectionClose.unpack_prefix((9).to_bytes(4, "little") + b"\x01\0\0\0hi") == (
        abi.ConnectionClose(9, 1, b"hi"))
    assert abi.StreamInfo.unpack_prefix(b"") == abi.StreamInfo(0, 0)


def test_defaults_are_zero() -> None:
    for cls in abi.STRUCT_CLASSES:
        assert cls().pack() == bytes(cls.SIZE)


def test_bind_rejects_mismatched_fields() -> None:
    from dataclasses import dataclass

    from pyquic.abi.structs import bind

    @dataclass
    class Wrong(CStruct):
        stream_id: int = 0
        flags: int = 0  # the C name is stream_flags

    with pytest.raises(ImportError, match="do not match"):
        bind(Wrong, "struct quic_stream_info")
