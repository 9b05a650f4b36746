"""Event bytes, exactly as quic_inq_event_recv() queues them: type byte + payload struct."""

from __future__ import annotations

from typing import Any

import pytest

from pyquic import abi

StreamState = abi.StreamState


def union_bytes(ffi: Any, member: str, value: Any, size: int) -> bytes:
    """The first ``size`` bytes of a union quic_event with ``member`` set, via cffi."""
    ev = ffi.new("union quic_event *")
    if isinstance(value, dict):
        for k, v in value.items():
            setattr(getattr(ev, member), k, list(v) if isinstance(v, bytes) else v)
    else:
        setattr(ev, member, value)
    return bytes(ffi.buffer(ev))[:size]


def test_stream_update_is_25_bytes_with_errcode_at_13(shipped: tuple[Any, Any]) -> None:
    ev = abi.StreamUpdateEvent(id=4, state=StreamState.SEND_RESET_RECVD, errcode=0xDEADBEEF,
                               finalsz=1 << 33)
    data = ev.pack()
    assert len(data) == 25 == abi.StreamUpdateEvent.SIZE
    assert data[0] == abi.EventType.STREAM_UPDATE == 1
    assert data[1:9] == (4).to_bytes(8, "little")
    assert data[9] == StreamState.SEND_RESET_RECVD and data[10:13] == bytes(3)
    assert data[13:17] == (0xDEADBEEF).to_bytes(4, "little")
    assert data[17:25] == (1 << 33).to_bytes(8, "little")
    ffi = shipped[0]
    payload = union_bytes(ffi, "update", {"id": 4, "state": 5, "errcode": 0xDEADBEEF,
                                          "finalsz": 1 << 33}, 24)
    assert data == b"\x01" + payload
    assert abi.decode_event(data) == ev


CASES: list[tuple[Any, str, Any, int]] = [
    (abi.StreamMaxDataEvent(id=-3 & 0x7FFF, max_data=123456789), "max_data",
     {"id": -3 & 0x7FFF, "max_data": 123456789}, 16),
    (abi.StreamMaxStreamEvent(max_stream=(100 << 2) | 0x2), "max_stream", (100 << 2) | 0x2, 8),
    (abi.ConnectionIdEvent(dest=1, active=7, prior_to=5), "info",
     {"dest": 1, "active": 7, "prior_to": 5}, 12),
    (abi.ConnectionCloseEvent(errcode=0x0A, frame=0x08, phrase=b"bad frame"), "close",
     {"errcode": 0x0A, "frame": 0x08, "phrase": b"bad frame"}, 72),
    (abi.ConnectionMigrationEvent(local=True), "local_migration", 1, 1),
    (abi.KeyUpdateEvent(phase=1), "key_update_phase", 1, 1),
]


@pytest.mark.parametrize("ev,member,value,size", CASES, ids=lambda x: type(x).__name__)
def test_fixed_events_match_union_layout(shipped: tuple[Any, Any], ev: Any, member: str,
                                         value: Any, size: int) -> None:
    data = ev.pack()
    assert len(data) == 1 + size == type(ev).SIZE
    assert data[0] == ev.TYPE
    assert data[1:] == union_bytes(shipped[0], member, value, size)
    assert abi.decode_event(data) == ev
    assert abi.decode_event(data + b"junk") == ev  # trailing bytes ignored


def test_event_sizes() -> None:
    sizes = {cls.__name__: cls.SIZE for cls in abi.EVENT_CLASSES.values() if hasattr(cls, "SIZE")}
    assert sizes == {"StreamUpdateEvent": 25, "StreamMaxDataEvent": 17,
                     "StreamMaxStreamEvent": 9, "ConnectionIdEvent": 13,
                     "ConnectionCloseEvent": 73, "ConnectionMigrationEvent": 2,
                     "KeyUpdateEvent": 2}
    assert sorted(abi.EVENT_CLASSES) == list(range(1, 10))
    for etype, cls in abi.EVENT_CLASSES.items():
        assert cls.TYPE == etype


def test_known_bytes() -> None:
    assert abi.ConnectionMigrationEvent(local=False).pack() == b"\x06\x00"
    assert abi.KeyUpdateEvent(phase=0).pack() == b"\x07\x00"
    assert abi.StreamMaxStreamEvent(max_stream=0x191).pack() == b"\x03\x91\x01" + bytes(6)
    assert abi.ConnectionIdEvent(dest=0, active=2, prior_to=1).pack() == (
        b"\x04\x00\0\0\0\x02\0\0\0\x01\0\0\0")


def test_raw_events() -> None:
    tok = abi.NewTokenEvent(token=b"\x00token\xff")
    assert tok.pack() == b"\x08\x00token\xff"
    assert abi.decode_event(tok.pack()) == tok
    ticket = abi.NewSessionTicketEvent(ticket=bytes(range(256)) * 16)
    assert ticket.pack()[0] == 9 and len(ticket.pack()) == 4097
    assert abi.decode_event(ticket.pack()) == ticket
    assert abi.decode_event(b"\x08") == abi.NewTokenEvent(b"")


def test_decoded_types() -> None:
    mig = abi.decode_event(b"\x06\x01")
    assert isinstance(mig, abi.ConnectionMigrationEvent) and mig.local is True
    close = abi.decode_event(b"\x05" + bytes(4) + b"\x00\0\0\0" + b"bye" + bytes(61))
    assert isinstance(close, abi.ConnectionCloseEvent) and close.phrase == b"bye"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        abi.decode_event(b"")
    with pytest.raises(ValueError, match="unknown type 0"):
        abi.decode_event(b"\x00" + bytes(8))
    with pytest.raises(ValueError, match="unknown type 10"):
        abi.decode_event(b"\x0a" + bytes(8))
    with pytest.raises(ValueError, match=r"StreamUpdateEvent: need 25 bytes, got 24"):
        abi.decode_event(abi.StreamUpdateEvent().pack()[:24])
    with pytest.raises(ValueError, match=r"KeyUpdateEvent: need 2 bytes, got 1"):
        abi.decode_event(b"\x07")
    with pytest.raises(ValueError, match=r"expected 1"):
        abi.StreamUpdateEvent.unpack(b"\x02" + bytes(24))
    with pytest.raises(ValueError, match=r"StreamUpdateEvent\.state: 256 out of range for u8"):
        abi.StreamUpdateEvent(state=256).pack()
    with pytest.raises(ValueError, match=r"KeyUpdateEvent\.phase: 2\d\d out of range for u8"):
        abi.KeyUpdateEvent(phase=256).pack()
    with pytest.raises(ValueError, match=r"ConnectionCloseEvent\.phrase: 64 bytes, at most 63"):
        abi.ConnectionCloseEvent(phrase=b"p" * 64).pack()
