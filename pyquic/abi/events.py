"""QUIC socket events as dataclasses, byte-exact with what a kernel recvmsg returns.

An event read (``msg_flags`` has ``MSG_QUIC_NOTIFICATION | MSG_EOR``) is one
type byte followed by the payload exactly as the kernel copies it from memory
(``quic_inq_event_recv``): the whole C struct, padding included, starting at
offset 1, so unaligned but not packed. Sizes: STREAM_UPDATE 25 (errcode at
13), STREAM_MAX_DATA 17, STREAM_MAX_STREAM 9, CONNECTION_ID 13,
CONNECTION_CLOSE 73, CONNECTION_MIGRATION and KEY_UPDATE 2; NEW_TOKEN and
NEW_SESSION_TICKET carry raw bytes after the type byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pyquic.abi.constants import EventType
from pyquic.abi.structs import FieldSpec, _getter, check_values, layout

if TYPE_CHECKING:
    from typing_extensions import Self


class _FixedEvent:
    """Base of events whose payload is a fixed-size C object."""

    __slots__ = ()

    TYPE: ClassVar[EventType]
    SIZE: ClassVar[int]  # bytes of a read: 1 + sizeof(payload)
    FIELDS: ClassVar[tuple[FieldSpec, ...]]
    _struct: ClassVar[struct.Struct]
    _get: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _max_lens: ClassVar[dict[str, int]] = {}

    def pack(self) -> bytes:
        """Return the bytes a kernel recvmsg delivers for this event."""
        values = type(self)._get(self)
        try:
            return self._struct.pack(self.TYPE, *values)
        except struct.error:
            check_values(type(self).__name__, self.FIELDS, values, self._max_lens)
            raise

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Self:
        """Decode an event read (type byte included)."""
        if len(buf) < cls.SIZE:
            raise ValueError(f"{cls.__name__}: need {cls.SIZE} bytes, got {len(buf)}")
        if buf[0] != cls.TYPE:
            raise ValueError(f"{cls.__name__}: event type {buf[0]}, expected {int(cls.TYPE)}")
        return cls._from_values(cls._struct.unpack_from(buf)[1:])

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> Self:
        return cls(*values)


def _bind(cls: type[_FixedEvent], ctype: str, names: tuple[str, ...]) -> None:
    """Lay the event out as a type byte plus ``ctype``; ``names`` renames its fields."""
    fmt, specs, size = layout(ctype)
    if len(specs) != len(names):
        raise ImportError(f"{cls.__name__}: {len(names)} fields but {ctype} has {len(specs)}")
    cls.FIELDS = tuple(
        FieldSpec(n, s.offset + 1, s.label, s.lo, s.hi, s.length) for n, s in zip(names, specs)
    )
    cls._struct = struct.Struct("=B" + fmt)
    cls.SIZE = 1 + size
    if cls._struct.size != cls.SIZE:
        raise ImportError(f"{cls.__name__}: layout size mismatch")
    cls._get = staticmethod(_getter(names))  # type: ignore[assignment]


@dataclass(slots=True)
class StreamUpdateEvent(_FixedEvent):
    """A stream changed state (``state`` is a StreamState); errcode/finalsz as applicable."""

    TYPE: ClassVar[EventType] = EventType.STREAM_UPDATE
    id: int = 0
    state: int = 0
    errcode: int = 0
    finalsz: int = 0


@dataclass(slots=True)
class StreamMaxDataEvent(_FixedEvent):
    """The peer raised a stream's send window (MAX_STREAM_DATA)."""

    TYPE: ClassVar[EventType] = EventType.STREAM_MAX_DATA
    id: int = 0
    max_data: int = 0


@dataclass(slots=True)
class StreamMaxStreamEvent(_FixedEvent):
    """The peer raised a stream limit: the highest stream id now allowed (type in bits 0-1)."""

    TYPE: ClassVar[EventType] = EventType.STREAM_MAX_STREAM
    max_stream: int = 0


@dataclass(slots=True)
class ConnectionIdEvent(_FixedEvent):
    """Source (dest=0) or destination (dest=1) connection IDs changed."""

    TYPE: ClassVar[EventType] = EventType.CONNECTION_ID
    dest: int = 0
    active: int = 0
    prior_to: int = 0


@dataclass(slots=True)
class ConnectionCloseEvent(_FixedEvent):
    """The connection closed; ``phrase`` without its NUL terminator (at most 63 bytes)."""

    TYPE: ClassVar[EventType] = EventType.CONNECTION_CLOSE
    errcode: int = 0
    frame: int = 0
    phrase: bytes = b""

    def pack(self) -> bytes:
        """Return the bytes a kernel recvmsg delivers for this event."""
        check_values(type(self).__name__, self.FIELDS[2:], (self.phrase,), self._max_lens)
        return _FixedEvent.pack(self)

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> ConnectionCloseEvent:
        errcode, frame, phrase = values
        return cls(errcode, frame, phrase.split(b"\0", 1)[0])


@dataclass(slots=True)
class ConnectionMigrationEvent(_FixedEvent):
    """The path changed; ``local`` is true for a local address change."""

    TYPE: ClassVar[EventType] = EventType.CONNECTION_MIGRATION
    local: bool = False

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> ConnectionMigrationEvent:
        return cls(bool(values[0]))


@dataclass(slots=True)
class KeyUpdateEvent(_FixedEvent):
    """The peer initiated a key update; ``phase`` is the new key phase bit."""

    TYPE: ClassVar[EventType] = EventType.KEY_UPDATE
    phase: int = 0


@dataclass(slots=True)
class NewTokenEvent:
    """A NEW_TOKEN frame arrived (client): the raw token."""

    TYPE: ClassVar[EventType] = EventType.NEW_TOKEN
    token: bytes = b""

    def pack(self) -> bytes:
        """Return the bytes a kernel recvmsg delivers for this event."""
        return bytes((self.TYPE,)) + bytes(self.token)


@dataclass(slots=True)
class NewSessionTicketEvent:
    """A complete NewSessionTicket TLS message arrived (client): the raw message."""

    TYPE: ClassVar[EventType] = EventType.NEW_SESSION_TICKET
    ticket: bytes = b""

    def pack(self) -> bytes:
        """Return the bytes a kernel recvmsg delivers for this event."""
        return bytes((self.TYPE,)) + bytes(self.ticket)


_bind(StreamUpdateEvent, "struct quic_stream_update", ("id", "state", "errcode", "finalsz"))
_bind(StreamMaxDataEvent, "struct quic_stream_max_data", ("id", "max_data"))
_bind(StreamMaxStreamEvent, "uint64_t", ("max_stream",))
_bind(ConnectionIdEvent, "struct quic_connection_id_info", ("dest", "active", "prior_to"))
_bind(ConnectionCloseEvent, "struct quic_connection_close", ("errcode", "frame", "phrase"))
_bind(ConnectionMigrationEvent, "uint8_t", ("local",))
_bind(KeyUpdateEvent, "uint8_t", ("phase",))
ConnectionCloseEvent._max_lens = {"phrase": ConnectionCloseEvent.FIELDS[2].length - 1}

Event = (
    StreamUpdateEvent | StreamMaxDataEvent | StreamMaxStreamEvent | ConnectionIdEvent
    | ConnectionCloseEvent | ConnectionMigrationEvent | KeyUpdateEvent | NewTokenEvent
    | NewSessionTicketEvent
)

EVENT_CLASSES: dict[int, type[Any]] = {
    cls.TYPE: cls
    for cls in (
        StreamUpdateEvent, StreamMaxDataEvent, StreamMaxStreamEvent, ConnectionIdEvent,
        ConnectionCloseEvent, ConnectionMigrationEvent, KeyUpdateEvent, NewTokenEvent,
        NewSessionTicketEvent,
    )
}


def decode_event(buf: bytes | bytearray | memoryview) -> Event:
    """Decode one event read: the type byte, then its payload.

    ValueError for an empty or short buffer or an unknown type.
    """
    if not buf:
        raise ValueError("event: empty buffer")
    etype = buf[0]
    if etype == EventType.NEW_TOKEN:
        return NewTokenEvent(bytes(buf[1:]))
    if etype == EventType.NEW_SESSION_TICKET:
        return NewSessionTicketEvent(bytes(buf[1:]))
    cls = EVENT_CLASSES.get(etype)
    if cls is None:
        raise ValueError(f"event: unknown type {etype}")
    result: Event = cls.unpack(buf)
    return result
