"""The socket receive queue (twin of the kernel's ``net/quic/inqueue.c``).

Items are read by :meth:`InQueue.recv` in the kernel's order: handshake
messages first (each with its crypto level), then events, then stream data and
datagrams in arrival order (``quic_inq_handshake_tail`` inserts before the
first non-handshake entry, ``quic_inq_event_recv`` before the first data
entry).  One read returns data of one stream only, joining consecutive chunks
of that stream up to ``bufsize`` and stopping after the FIN; a non-stream item
is returned alone with ``MSG_EOR`` once it is read completely (a short buffer
leaves the rest for the next read, as the kernel does).

:class:`RecvItem` is what the connection's ``recv()`` returns (contracts §4).
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass

# plain ints, as a kernel socket's recvmsg returns (socket.MSG_* are IntFlag
# members, slow in | and & and contagious)
MSG_EOR: int = int(getattr(socket, "MSG_EOR", 0x80))
MSG_TRUNC: int = int(getattr(socket, "MSG_TRUNC", 0x20))
MSG_QUIC_DATAGRAM = 0x1000
MSG_QUIC_NOTIFICATION = 0x8000
STREAM_FIN = 0x200  # MSG_QUIC_STREAM_FIN


@dataclass(slots=True)
class RecvItem:
    """One recvmsg worth of data (contracts §4)."""

    data: bytes
    msg_flags: int  # MSG_EOR, MSG_QUIC_DATAGRAM, MSG_QUIC_NOTIFICATION
    stream_id: int | None  # stream data: the stream id
    stream_flags: int  # MSG_QUIC_STREAM_FIN when the stream ended
    level: int | None  # handshake message: its crypto level


class _Entry:
    __slots__ = ("data", "fin", "flags", "level", "off", "stream_id")

    def __init__(self, data: bytes, stream_id: int | None, fin: bool, flags: int,
                 level: int | None) -> None:
        self.data = data
        self.off = 0
        self.stream_id = stream_id
        self.fin = fin
        self.flags = flags
        self.level = level


class InQueue:
    """Handshake, event and data entries waiting for the application."""

    def __init__(self) -> None:
        self._hs: deque[_Entry] = deque()
        self._ev: deque[_Entry] = deque()
        self._data: deque[_Entry] = deque()
        self._early: list[_Entry] = []  # 0-RTT stream data until APP keys
        self.events = 0  # bitmask of enabled event types (1 << type)
        self.data_bytes = 0  # queued stream/datagram bytes (receive buffer use)

    def __len__(self) -> int:
        return len(self._hs) + len(self._ev) + len(self._data)

    def readable(self) -> bool:
        return bool(self._hs or self._ev or self._data)

    # ---------------------------------------------------------------- enqueue
    def push_handshake(self, level: int, data: bytes) -> None:
        """In-order CRYPTO data of ``level`` for the TLS stack."""
        if not data:
            return
        hs = self._hs
        if hs and hs[-1].level == level and hs[-1].off == 0:
            hs[-1].data += data
        else:
            hs.append(_Entry(data, None, False, 0, level))

    def event_enabled(self, etype: int) -> bool:
        return bool(self.events & (1 << etype))

    def push_event(self, etype: int, packed: bytes) -> bool:
        """Queue an event's packed bytes (type byte first) if enabled."""
        if not self.events & (1 << etype):
            return False
        self._ev.append(_Entry(packed, None, False, MSG_QUIC_NOTIFICATION, None))
        return True

    def push_stream(self, stream_id: int, data: bytes, fin: bool, early: bool = False) -> None:
        """In-order stream data (``fin`` marks the last chunk)."""
        e = _Entry(data, stream_id, fin, 0, None)
        if early:
            self._early.append(e)
        else:
            self._data.append(e)
        self.data_bytes += len(data)

    def release_early(self) -> None:
        """APP keys are in: 0-RTT data becomes readable (kernel early_list)."""
        if self._early:
            self._data.extend(self._early)
            self._early.clear()

    def push_datagram(self, data: bytes) -> None:
        self._data.append(_Entry(data, None, False, MSG_QUIC_DATAGRAM, None))
        self.data_bytes += len(data)

    def drop_stream(self, stream_id: int) -> None:
        """Discard unread data of a reset stream, 0-RTT data included
        (frame.c quic_frame_reset_stream_process purges recv_list and early_list)."""
        if any(e.stream_id == stream_id for e in self._data):
            kept = deque(e for e in self._data if e.stream_id != stream_id)
            self.data_bytes -= sum(len(e.data) - e.off for e in self._data
                                   if e.stream_id == stream_id)
            self._data = kept
        if any(e.stream_id == stream_id for e in self._early):
            self.data_bytes -= sum(len(e.data) for e in self._early
                                   if e.stream_id == stream_id)
            self._early = [e for e in self._early if e.stream_id != stream_id]

    # ---------------------------------------------------------------- dequeue
    def recv(self, bufsize: int, peek: bool = False) -> tuple[RecvItem | None, int]:
        """Take one read's worth; returns (item, stream bytes freed).

        ``freed`` is what the connection credits back to flow control
        (``quic_inq_flow_control``); it is 0 for peeks and non-stream items.
        """
        for q in (self._hs, self._ev):
            if q:
                return self._recv_message(q, bufsize, peek), 0
        if not self._data:
            return None, 0
        head = self._data[0]
        if head.stream_id is None:
            item = self._recv_message(self._data, bufsize, peek)
            if not peek:
                self.data_bytes -= len(item.data)
            return item, 0
        return self._recv_stream(bufsize, peek)

    def _recv_message(self, q: deque[_Entry], bufsize: int, peek: bool) -> RecvItem:
        e = q[0]
        rest = len(e.data) - e.off
        n = min(rest, max(bufsize, 0))
        chunk = e.data[e.off:e.off + n] if (e.off or n < len(e.data)) else e.data
        flags = e.flags
        if n == rest:
            flags |= MSG_EOR
            if not peek:
                q.popleft()
        elif not peek:
            e.off += n
        return RecvItem(bytes(chunk), flags, None, 0, e.level)

    def _recv_stream(self, bufsize: int, peek: bool) -> tuple[RecvItem, int]:
        q = self._data
        head = q[0]
        sid = head.stream_id
        data = head.data
        n = len(data)
        if len(q) == 1 and not head.off and 0 < n <= bufsize and not peek:
            # one whole chunk (request/response traffic): no gathering
            q.popleft()
            self.data_bytes -= n
            return RecvItem(data if type(data) is bytes else bytes(data), 0, sid,
                            STREAM_FIN if head.fin else 0, None), n
        parts: list[bytes] = []
        append = parts.append
        copied = 0
        fin = False
        consumed = 0  # entries fully read
        partial = 0  # bytes read from the entry at index ``consumed``
        if bufsize > 0:
            for e in q:  # whole entries of this stream, then part of one
                if e.stream_id != sid:
                    break
                data = e.data
                off = e.off
                rest = len(data) - off
                room = bufsize - copied
                if rest > room:
                    append(data[off:off + room])
                    copied = bufsize
                    partial = room
                    break
                if rest:
                    append(data[off:] if off else data)
                    copied += rest
                consumed += 1
                if e.fin:
                    fin = True
                    break
                if copied >= bufsize:
                    break
        elif len(head.data) == head.off and head.fin:
            fin = True  # a zero-byte read takes a bare FIN
            consumed = 1
        if not peek:
            for _ in range(consumed):
                q.popleft()
            if partial:
                q[0].off += partial
            self.data_bytes -= copied
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return RecvItem(bytes(data), 0, sid, STREAM_FIN if fin else 0, None), (
            0 if peek else copied)

    def clear(self) -> None:
        self._hs.clear()
        self._ev.clear()
        self._data.clear()
        self._early.clear()
        self.data_bytes = 0
