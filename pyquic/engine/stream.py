"""QUIC streams and stream/connection flow control, sans-I/O (twin of net/quic/stream.c).

This module holds every per-stream and per-connection flow-control rule; it
never encodes frames.  The connection turns its return values into frames
(STREAM, RESET_STREAM, MAX_STREAM_DATA, MAX_DATA, MAX_STREAMS, *_BLOCKED) and
into kernel events (STREAM_UPDATE, STREAM_MAX_DATA, STREAM_MAX_STREAM).

Kernel semantics reproduced (net/quic/stream.c, socket.c, inqueue.c, outqueue.c):

- Send states follow the kernel, which moves them when data is *queued* by the
  application, not when it goes on the wire: a write with data enters
  ``SEND_SEND``; a write carrying FIN enters ``SEND_SENT``; all data and FIN
  acknowledged is ``SEND_RECVD``; ``reset`` is ``SEND_RESET_SENT``; its ACK is
  ``SEND_RESET_RECVD``.
- A write is bounded by flow control (stream credit from the peer's
  MAX_STREAM_DATA and connection credit from MAX_DATA): the kernel charges
  credit when data is queued, so everything buffered can always be sent, and
  the final size of a reset is the number of bytes accepted.
- Receive states: ``RECV_RECV`` -> ``RECV_SIZE_KNOWN`` (FIN seen) ->
  ``RECV_RECVD`` (all bytes up to the final size reassembled) -> ``RECV_READ``
  (FIN handed to the reader); ``RECV_RESET_RECVD`` -> ``RECV_RESET_READ``.
- A stream is released (forgotten, MAX_STREAMS credit returned for a peer
  stream) when each of its halves is final: send ``RECVD``/``RESET_RECVD``,
  receive ``READ``/``RESET_RECVD``/``RESET_READ``.  A released or never-seen id
  below the next id of its type is "closed" (kernel: ``id < next_id`` and not
  in the table), so closed streams cost no memory.
- Stream limits: MAX_STREAMS we grant is a *concurrency* limit, like the
  kernel: the highest peer stream id allowed is
  ``next_peer_id - 4 + (max_streams - open_peer_streams) * 4``.  Locally opened
  streams must be <= the peer's MAX_STREAMS id, and the number of concurrently
  open local streams must not exceed the peer's initial max_streams parameter
  (a kernel rule, quic_stream_id_exceeds()).
- A newly accepted peer bidi stream (or a newly opened local stream) becomes the
  "active" stream that a send with stream id -1 uses (quic_stream_get()).

Errnos of the socket-level operations (OSError) mirror the kernel:
EINVAL (wrong direction, not opened and no NEW flag, NEW on a stream already
written, write on a finished/reset stream, reset of a finished stream, stop
sending on a fully received stream, bad flags, stream over the limit before
the app keys exist), ENOSTR (a closed local id), EAGAIN (over the peer's
stream limit: the caller waits, or returns EAGAIN with DONTWAIT; also a second
STOP_SENDING while one is pending).  Protocol violations by the peer raise
``QuicError``: FLOW_CONTROL_ERROR, STREAM_LIMIT_ERROR, STREAM_STATE_ERROR,
FINAL_SIZE_ERROR, FRAME_ENCODING_ERROR (RFC 9000 §4, §19).

Deliberate differences from the kernel, where RFC 9000 is followed instead:
STOP_SENDING / MAX_STREAM_DATA for a peer bidi stream not yet seen opens it
(§3.2; the kernel closes with STREAM_STATE_ERROR), and such frames for a
closed peer stream are ignored; a RESET_STREAM final size above our
MAX_STREAM_DATA is FLOW_CONTROL_ERROR (§4.5; kernel: FINAL_SIZE_ERROR).

Receive model: either the application reads through ``read()`` (credit is
freed as it reads), or the connection drains every in-order byte into its own
receive queue right after ``on_stream_frame`` with ``read(consume=False)``
(as the kernel moves reassembled frames to the socket's recv_list) and calls
``consume()`` when recvmsg hands the bytes out.  On RESET_STREAM all unconsumed
bytes are credited back at once, so the connection must then drop what it
still queues for that stream (the kernel purges it) and not ``consume()`` it.

Public API (stable; the connection codes against it)::

    # stream id helpers (RFC 9000 §2.1)
    stream_is_uni(stream_id: int) -> bool
    stream_is_bidi(stream_id: int) -> bool
    stream_is_local(stream_id: int, is_client: bool) -> bool
    stream_is_client(stream_id: int) -> bool

    class SendStream:                          # the sending half
        state: StreamState                     # SEND_*
        max_data: int                          # peer's MAX_STREAM_DATA limit
        write_offset: int                      # bytes accepted (final size on reset)
        errcode: int | None                    # RESET_STREAM error code once reset
        credit() -> int                        # max_data - write_offset
        write(data, fin=False, limit=None) -> int   # bytes accepted (<= credit, <= limit)
        has_data() -> bool                     # lost, unsent or FIN to (re)transmit
        next_chunk(max_bytes, conn_credit=None) -> tuple[int, bytes, bool] | None
              # (offset, data, fin): lost ranges first, then new data;
              # conn_credit caps *new* bytes only (None: no cap; with the
              # kernel-style write-time charging the connection passes None)
        on_acked(offset, length, fin) -> bool  # True when it just became SEND_RECVD
        on_lost(offset, length, fin) -> None
        reset(errcode) -> int                  # final size; EINVAL if >= SEND_RECVD
        on_reset_acked() -> bool               # True when it just became SEND_RESET_RECVD
        on_stop_sending(errcode) -> int | None # final size of the RESET_STREAM to send
        on_max_stream_data(max_data) -> bool   # True if the limit grew
        take_data_blocked() -> int | None      # limit for STREAM_DATA_BLOCKED, once per limit

    class RecvStream:                          # the receiving half
        state: StreamState                     # RECV_*
        max_data: int                          # limit we advertised (MAX_STREAM_DATA)
        window: int                            # window used for updates
        highest: int                           # highest offset received
        read_offset: int                       # bytes handed out by read()
        consumed: int                          # bytes credited back for flow control
        final_size: int | None
        errcode: int | None                    # peer's RESET_STREAM code
        stop_sent: bool
        on_data(offset, data, fin, conn_credit=None) -> int
              # reassembles; returns the growth of `highest` (connection-level
              # flow-control use); QuicError FLOW_CONTROL / FINAL_SIZE
        readable() -> int                      # in-order bytes waiting
        read(max_bytes=-1, consume=True) -> tuple[bytes, bool]   # (data, fin)
        consume(nbytes) -> None                # app consumed bytes read with consume=False
        should_send_max_stream_data() -> int | None   # new limit to announce, committed
        on_data_blocked() -> int | None        # peer's STREAM_DATA_BLOCKED: new limit or None
        on_reset(errcode, final_size) -> int   # growth of `highest`; QuicError FINAL_SIZE/FLOW_CONTROL
        stop_sending(errcode) -> None          # local STOP_SENDING: EINVAL if >= RECVD, EAGAIN if sent
        reset_read() -> None                   # RESET_RECVD -> RESET_READ

    class Stream:
        id: int; send: SendStream | None; recv: RecvStream | None
        is_uni: bool; is_bidi: bool; is_local(is_client) -> bool

    class QuicStreamTable:                     # quic_stream_table (alias StreamTable)
        QuicStreamTable(is_client: bool)
        set_params(remote: bool, *, max_data=None, max_stream_data_bidi_local=None,
                   max_stream_data_bidi_remote=None, max_stream_data_uni=None,
                   max_streams_bidi=None, max_streams_uni=None) -> None
              # remote=False: what we grant (our transport parameters);
              # remote=True: the peer's.  Call before streams exist (existing
              # local streams' send limits are raised if the new one is larger).
        get_params(remote: bool) -> dict[str, int]
        streams: dict[int, Stream]; get(stream_id) -> Stream | None
        is_closed(stream_id) -> bool
        active_stream_id: int                  # -1 if none
        next_stream_id(uni: bool) -> int       # next local id to open
        # application side (socket options / sendmsg / recvmsg), OSError on refusal
        resolve_send_id(stream_id, flags) -> int          # sendmsg with id -1
        send_stream(stream_id, flags, app_keys_ready=True) -> Stream  # quic_sock_send_stream
        stream_open(stream_id, flags, app_keys_ready=True) -> int     # QUIC_SOCKOPT_STREAM_OPEN
        open_local(stream_id=-1, uni=False, dontwait=False) -> Stream
        reset_stream(stream_id, errcode) -> int           # final size for RESET_STREAM
        stop_sending(stream_id, errcode) -> None          # then send STOP_SENDING
        write(stream, data, fin=False) -> int             # charges stream + connection credit
        send_credit(stream) -> int                        # min(stream, connection) credit
        read(stream_id, max_bytes=-1, consume=True) -> tuple[bytes, bool]
        consume(stream_id: int | None, nbytes) -> None    # app read bytes (drain model)
        # peer frames (QuicError on violations; None: frame for a closed stream, ignore)
        get_or_create_peer(stream_id, send=False, frame_type=None) -> Stream | None
        on_stream_frame(stream_id, offset, data, fin, frame_type=None) -> Stream | None
        on_reset_stream(stream_id, errcode, final_size, frame_type=None) -> Stream | None
              # returns the stream if it just entered RECV_RESET_RECVD
        on_stop_sending(stream_id, errcode, frame_type=None) -> int | None
              # final size of the RESET_STREAM to send (stream now SEND_RESET_SENT)
        on_max_stream_data(stream_id, max_data, frame_type=None) -> bool
        on_stream_data_blocked(stream_id, limit, frame_type=None) -> int | None
        on_max_data(max_data) -> bool
        on_data_blocked(limit) -> int | None               # new MAX_DATA or None
        on_max_streams(uni, maximum, frame_type=None) -> int | None
              # new highest stream id allowed (STREAM_MAX_STREAM event) or None
        on_streams_blocked(uni, maximum, frame_type=None) -> int | None
              # MAX_STREAMS value to re-announce, or None
        # recovery
        on_stream_acked(stream_id, offset, length, fin) -> bool   # became SEND_RECVD
        on_stream_lost(stream_id, offset, length, fin) -> None
        on_reset_acked(stream_id) -> bool                         # became SEND_RESET_RECVD
        # outputs
        has_sendable() -> bool                          # any stream queued for sending
        sendable() -> Iterator[Stream]                  # round robin, streams with data
        max_streams_update() -> tuple[int | None, int | None]   # (uni, bidi) MAX_STREAMS
        should_send_max_data() -> int | None            # new MAX_DATA, committed
        take_data_blocked() -> int | None               # DATA_BLOCKED limit, once per limit
        take_streams_blocked() -> list[tuple[bool, int]]   # (uni, limit) STREAMS_BLOCKED
        on_streams_blocked_acked(uni) / on_data_blocked_acked() -> None
        data_sent, max_data_peer, recv_highest, recv_max_data, recv_consumed: int
"""

from __future__ import annotations

import errno
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator

from .errors import (
    FINAL_SIZE_ERROR,
    FLOW_CONTROL_ERROR,
    FRAME_ENCODING_ERROR,
    STREAM_LIMIT_ERROR,
    STREAM_STATE_ERROR,
    QuicError,
)

try:
    from ..abi import StreamFlag, StreamState
except ImportError:  # pragma: no cover - abi package without re-exports yet
    from ..abi.constants import StreamFlag, StreamState

__all__ = [
    "MAX_STREAMS_LIMIT",
    "VARINT_MAX",
    "QuicStreamTable",
    "RangeSet",
    "RecvStream",
    "SendStream",
    "Stream",
    "StreamTable",
    "stream_is_bidi",
    "stream_is_client",
    "stream_is_local",
    "stream_is_uni",
]

VARINT_MAX = (1 << 62) - 1
MAX_STREAMS_LIMIT = 1 << 60  # RFC 9000 §19.11
WINDOW_UPDATE_SHIFT = 4  # kernel QUIC_INQ_RWND_SHIFT: update once 1/16 window is freed

_NEW = int(StreamFlag.NEW)
_UNI = int(StreamFlag.UNI)
_SNDBLOCK = int(StreamFlag.SNDBLOCK)
_STREAM_FLAGS = int(
    StreamFlag.NEW | StreamFlag.FIN | StreamFlag.UNI | StreamFlag.DONTWAIT | StreamFlag.SNDBLOCK
)

_S_READY = StreamState.SEND_READY
_S_SEND = StreamState.SEND_SEND
_S_SENT = StreamState.SEND_SENT
_S_RECVD = StreamState.SEND_RECVD
_S_RESET_SENT = StreamState.SEND_RESET_SENT
_S_RESET_RECVD = StreamState.SEND_RESET_RECVD
_R_RECV = StreamState.RECV_RECV
_R_SIZE_KNOWN = StreamState.RECV_SIZE_KNOWN
_R_RECVD = StreamState.RECV_RECVD
_R_READ = StreamState.RECV_READ
_R_RESET_RECVD = StreamState.RECV_RESET_RECVD
_R_RESET_READ = StreamState.RECV_RESET_READ


def _oserror(code: int, msg: str) -> OSError:
    return OSError(code, f"{msg}: {errno.errorcode.get(code, code)}")


# RFC 9000 §2.1: bit 0 = initiator (1: server), bit 1 = direction (1: uni).
def stream_is_uni(stream_id: int) -> bool:
    """True for a unidirectional stream id."""
    return bool(stream_id & 2)


def stream_is_bidi(stream_id: int) -> bool:
    """True for a bidirectional stream id."""
    return not stream_id & 2


def stream_is_client(stream_id: int) -> bool:
    """True if the client initiated this stream id."""
    return not stream_id & 1


def stream_is_local(stream_id: int, is_client: bool) -> bool:
    """True if the endpoint (client or server) initiated this stream id."""
    return (not stream_id & 1) == is_client


class RangeSet:
    """Sorted, disjoint, half-open integer ranges [start, end); merges on add."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends))

    def add(self, start: int, end: int) -> None:
        """Add [start, end), merging with touching or overlapping ranges."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        i = bisect_left(ends, start)  # first range ending at or after start
        j = bisect_right(starts, end)  # ranges [i, j) touch or overlap
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def subtract(self, start: int, end: int) -> None:
        """Remove [start, end) from the set."""
        if start >= end:
            return
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, start)  # first range ending after start
        j = bisect_left(starts, end)  # ranges [i, j) overlap
        if i >= j:
            return
        new_s: list[int] = []
        new_e: list[int] = []
        if starts[i] < start:
            new_s.append(starts[i])
            new_e.append(start)
        if ends[j - 1] > end:
            new_s.append(end)
            new_e.append(ends[j - 1])
        starts[i:j] = new_s
        ends[i:j] = new_e

    def first(self) -> tuple[int, int] | None:
        """The lowest range, or None if empty."""
        if not self._starts:
            return None
        return self._starts[0], self._ends[0]

    def contains(self, start: int, end: int) -> bool:
        """True if [start, end) is entirely inside one range."""
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def covered_prefix(self, start: int) -> int:
        """The end of the range containing ``start``, or ``start`` if none does."""
        i = bisect_right(self._starts, start) - 1
        if i >= 0 and self._ends[i] > start:
            return self._ends[i]
        return start


class SendStream:
    """The sending half of a stream: buffer, retransmission, flow control, states."""

    __slots__ = (
        "_acked",
        "_base",
        "_blocked_pending",
        "_blocked_reported",
        "_chunks",
        "_cstarts",
        "_cur",
        "_fin",
        "_fin_acked",
        "_fin_pending",
        "_head",
        "_lost",
        "_notify",
        "_sent_end",
        "errcode",
        "max_data",
        "state",
        "write_offset",
    )

    def __init__(self, max_data: int = 0, notify: Callable[[], None] | None = None) -> None:
        self.state: StreamState = _S_READY
        self.max_data = max_data
        self.write_offset = 0  # bytes accepted from the application
        self.errcode: int | None = None
        # data in [_base, write_offset) as the written chunks (no copy of
        # bytes written, none when acknowledged data is dropped): chunk i
        # starts at offset _cstarts[i]; chunks before _head are acknowledged
        self._chunks: list[bytes] = []
        self._cstarts: list[int] = []
        self._head = 0
        self._cur = 0  # the chunk _slice used last (sends are sequential)
        self._base = 0  # every byte below _base is acknowledged
        self._sent_end = 0  # highest offset ever handed out by next_chunk
        self._acked = RangeSet()  # acknowledged ranges above _base
        self._lost = RangeSet()  # ranges to retransmit
        self._fin = False
        self._fin_pending = False  # FIN must be (re)sent
        self._fin_acked = False
        self._blocked_pending = False
        self._blocked_reported = -1
        self._notify = notify

    def credit(self) -> int:
        """Bytes the peer's MAX_STREAM_DATA still allows us to queue."""
        return max(0, self.max_data - self.write_offset)

    def write(self, data: bytes | bytearray | memoryview, fin: bool = False,
              limit: int | None = None) -> int:
        """Queue application data; returns how many bytes were accepted.

        Bounded by the stream credit and by ``limit`` (the connection credit).
        FIN is taken only if all of ``data`` fits.  EINVAL once the stream is
        finished or reset (socket.c: send state >= SENT).
        """
        if self.state >= _S_SENT:
            raise _oserror(errno.EINVAL, "stream is finished or reset")
        n = len(data)
        credit = self.max_data - self.write_offset
        credit = max(credit, 0)
        accept = min(n, credit)
        if limit is not None and limit < accept:
            accept = max(0, limit)
        if credit < n and self._blocked_reported != self.max_data:
            # RFC 9000 §4.1: tell the peer we are blocked on its stream limit
            self._blocked_pending = True
        if accept:
            self._append(data if accept == n and type(data) is bytes
                         else bytes(memoryview(data)[:accept]))
            self.write_offset += accept
        if self.state == _S_READY and (accept or (fin and accept == n)):
            self.state = _S_SEND
        if fin and accept == n:
            self._fin = True
            self._fin_pending = True
            self.state = _S_SENT
        if (accept or self._fin_pending) and self._notify is not None:
            self._notify()
        return accept

    def has_data(self) -> bool:
        """True if lost data, unsent data or a FIN waits for transmission."""
        if self.state >= _S_RECVD:
            return False
        return bool(self._lost) or self._sent_end < self.write_offset or self._fin_pending

    def next_chunk(self, max_bytes: int, conn_credit: int | None = None,
                   ) -> tuple[int, bytes, bool] | None:
        """The next (offset, data, fin) to put in a STREAM frame, or None.

        Lost ranges go first (RFC 9000 §13.3), then new data.  ``max_bytes``
        bounds the payload; ``conn_credit`` bounds new (never sent) bytes only.
        """
        if self.state >= _S_RECVD or max_bytes < 0:
            return None
        lost = self._lost.first()
        if lost is not None and max_bytes > 0:
            start, end = lost
            if end - start > max_bytes:
                end = start + max_bytes
            self._lost.subtract(start, end)
            fin = False
            if end == self.write_offset and self._fin_pending and end >= self._sent_end:
                fin = True
                self._fin_pending = False
            return start, self._slice(start, end), fin
        start = self._sent_end
        end = self.write_offset
        if end - start > max_bytes:
            end = start + max_bytes
        if conn_credit is not None and end - start > conn_credit:
            end = start + max(0, conn_credit)
        if end > start:
            self._sent_end = end
            fin = False
            if end == self.write_offset and self._fin_pending:
                fin = True
                self._fin_pending = False
            return start, self._slice(start, end), fin
        if self._fin_pending and not self._lost and self._sent_end == self.write_offset:
            self._fin_pending = False
            return self.write_offset, b"", True
        return None

    def _append(self, data: bytes) -> None:
        chunks = self._chunks
        if len(data) < 1024 and len(chunks) > self._head and len(chunks[-1]) < 16384:
            chunks[-1] += data  # small writes: bound the number of chunks
            return
        chunks.append(data)
        self._cstarts.append(self.write_offset)

    def _slice(self, start: int, end: int) -> bytes:
        """The written bytes [start, end) (start >= _base, end <= write_offset)."""
        starts = self._cstarts
        chunks = self._chunks
        i = self._cur
        if i < self._head or i >= len(chunks) or not (
                starts[i] <= start < starts[i] + len(chunks[i])):
            i = bisect_right(starts, start, self._head) - 1
        ch = chunks[i]
        a = start - starts[i]
        if end - start + a <= len(ch):  # inside one chunk (the usual case)
            self._cur = i
            return ch if a == 0 and end - start == len(ch) else ch[a:a + end - start]
        parts: list[bytes] = []
        pos = start
        while True:
            ch = chunks[i]
            a = pos - starts[i]
            take = min(len(ch) - a, end - pos)
            parts.append(ch[a:a + take])
            pos += take
            if pos >= end:
                break
            i += 1
        self._cur = i
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _drop_to(self, new_base: int) -> None:
        """Everything below ``new_base`` is acknowledged: release those chunks."""
        self._base = new_base
        chunks = self._chunks
        starts = self._cstarts
        head = self._head
        n = len(chunks)
        while head < n and starts[head] + len(chunks[head]) <= new_base:
            chunks[head] = b""
            head += 1
        if head >= 64 and head * 2 >= n:
            del chunks[:head]
            del starts[:head]
            self._cur = max(0, self._cur - head)
            head = 0
        self._head = head

    def on_acked(self, offset: int, length: int, fin: bool) -> bool:
        """A STREAM frame was acknowledged; True when the half just became SEND_RECVD."""
        if self.state >= _S_RECVD:
            return False
        end = offset + length
        if length:
            if self._lost:
                self._lost.subtract(offset, end)
            if offset <= self._base < end and not self._acked:
                # in-order acknowledgement (the common case): advance the base
                self._drop_to(end)
            elif end > self._base:
                self._acked.add(max(offset, self._base), end)
                first = self._acked.first()
                if first is not None and first[0] <= self._base:
                    new_base = first[1]
                    self._acked.subtract(first[0], first[1])
                    self._drop_to(new_base)
        if fin:
            self._fin_acked = True
            self._fin_pending = False
        # RFC 9000 §3.1: all data and FIN acknowledged -> "Data Recvd"
        if self.state == _S_SENT and self._fin_acked and self._base >= self.write_offset:
            self.state = _S_RECVD
            self._lost = RangeSet()
            return True
        return False

    def on_lost(self, offset: int, length: int, fin: bool) -> None:
        """A STREAM frame was declared lost: queue its unacknowledged part again."""
        if self.state >= _S_RECVD:
            return
        end = offset + length
        start = max(offset, self._base)
        if end > start:
            self._lost.add(start, end)
            for a_start, a_end in list(self._acked):
                if a_start >= end:
                    break
                self._lost.subtract(a_start, a_end)
        if fin and self._fin and not self._fin_acked:
            self._fin_pending = True
        if self._notify is not None and self.has_data():
            self._notify()

    def reset(self, errcode: int) -> int:
        """Abandon sending (RESET_STREAM); returns the final size.

        Allowed from Ready, Send and Data Sent (RFC 9000 §3.1), else EINVAL.
        """
        if self.state >= _S_RECVD:
            raise _oserror(errno.EINVAL, "stream already finished")
        self.state = _S_RESET_SENT
        self.errcode = errcode
        self._chunks = []
        self._cstarts = []
        self._head = self._cur = 0
        self._lost = RangeSet()
        self._acked = RangeSet()
        self._fin_pending = False
        return self.write_offset

    def on_reset_acked(self) -> bool:
        """The RESET_STREAM was acknowledged; True when it just became SEND_RESET_RECVD."""
        if self.state != _S_RESET_SENT:
            return False
        self.state = _S_RESET_RECVD
        return True

    def on_stop_sending(self, errcode: int) -> int | None:
        """The peer sent STOP_SENDING: reset with its code (RFC 9000 §3.5).

        Returns the final size for the RESET_STREAM to send, or None when the
        half is already terminal or reset (nothing to do).
        """
        if self.state >= _S_RECVD:
            return None
        return self.reset(errcode)

    def on_max_stream_data(self, max_data: int) -> bool:
        """The peer raised MAX_STREAM_DATA; smaller values are ignored (RFC 9000 §19.10)."""
        if max_data <= self.max_data:
            return False
        self.max_data = max_data
        return True

    def take_data_blocked(self) -> int | None:
        """The limit to report in STREAM_DATA_BLOCKED, once per limit value."""
        if not self._blocked_pending or self.state >= _S_RECVD:
            self._blocked_pending = False
            return None
        self._blocked_pending = False
        if self.write_offset < self.max_data:
            return None  # the limit grew meanwhile
        self._blocked_reported = self.max_data
        return self.max_data

    @property
    def bytes_in_flight_or_buffered(self) -> int:
        """Bytes kept for (re)transmission (unacknowledged)."""
        return 0 if self.state >= _S_RESET_SENT else self.write_offset - self._base


class RecvStream:
    """The receiving half: reassembly bounded by flow control, final size, states."""

    __slots__ = (
        "_contig",
        "_fin_delivered",
        "_pieces",
        "_ready",
        "_starts",
        "consumed",
        "errcode",
        "final_size",
        "highest",
        "max_data",
        "read_offset",
        "state",
        "stop_sent",
        "window",
    )

    def __init__(self, max_data: int = 0) -> None:
        self.state: StreamState = _R_RECV
        self.max_data = max_data
        self.window = max_data
        self.highest = 0
        self.read_offset = 0
        self.consumed = 0
        self.final_size: int | None = None
        self.errcode: int | None = None
        self.stop_sent = False
        self._contig = 0  # end of in-order data
        self._ready = bytearray()  # in-order data in [read_offset, _contig)
        self._starts: list[int] = []  # out-of-order pieces above _contig, disjoint
        self._pieces: list[bytes] = []
        self._fin_delivered = False

    def on_data(self, offset: int, data: bytes | bytearray | memoryview, fin: bool,
                conn_credit: int | None = None) -> int:
        """Take a STREAM frame's payload; returns how much ``highest`` grew.

        ``conn_credit`` is the connection-level room left (our MAX_DATA minus
        the sum of highest offsets); exceeding it or our MAX_STREAM_DATA is
        FLOW_CONTROL_ERROR (RFC 9000 §4.1).  Final size rules: RFC 9000 §4.5.
        """
        length = len(data)
        end = offset + length
        if end > VARINT_MAX:  # RFC 9000 §19.8
            raise QuicError(FRAME_ENCODING_ERROR, None, "stream offset beyond 2^62-1")
        final = self.final_size
        if fin:
            if final is not None and final != end:
                raise QuicError(FINAL_SIZE_ERROR, None, "final size changed")
            if end < self.highest:
                raise QuicError(FINAL_SIZE_ERROR, None, "final size below received data")
        elif final is not None and end > final:
            raise QuicError(FINAL_SIZE_ERROR, None, "data beyond the final size")
        if self.state >= _R_RECVD:
            return 0  # all data already in, or reset: nothing to take
        grow = 0
        if end > self.highest:
            grow = end - self.highest
            if end > self.max_data or (conn_credit is not None and grow > conn_credit):
                raise QuicError(FLOW_CONTROL_ERROR, None, "flow control limit exceeded")
            self.highest = end
        if fin and final is None:
            self.final_size = end
            self.state = _R_SIZE_KNOWN  # RFC 9000 §3.2
        if self.stop_sent:
            # data is discarded after STOP_SENDING; count it as read for credit
            if end > self._contig:
                self._contig = self.read_offset = self.consumed = end
            self._check_recvd()
            if self.state == _R_RECVD:  # nobody will read: the half is done
                self.state = _R_READ
                self._fin_delivered = True
            return grow
        if end > self._contig and length:
            if offset <= self._contig:
                mv = memoryview(data)
                self._ready += mv[self._contig - offset:]
                self._contig = end
                if self._starts:
                    self._absorb()
            else:
                self._store(offset, data)
        self._check_recvd()
        return grow

    def _store(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Keep the parts of an out-of-order payload not held yet."""
        starts, pieces = self._starts, self._pieces
        end = offset + len(data)
        o = offset
        i = bisect_right(starts, o) - 1
        if i >= 0:
            pend = starts[i] + len(pieces[i])
            o = max(o, pend)
        i += 1
        mv = memoryview(data)
        new: list[tuple[int, bytes]] = []
        while o < end:
            if i < len(starts) and starts[i] < end:
                s = starts[i]
                if s > o:
                    new.append((o, bytes(mv[o - offset:s - offset])))
                o = max(o, s + len(pieces[i]))
                i += 1
            else:
                new.append((o, bytes(mv[o - offset:end - offset])))
                o = end
        for s, p in new:
            j = bisect_left(starts, s)
            starts.insert(j, s)
            pieces.insert(j, p)

    def _absorb(self) -> None:
        """Move out-of-order pieces that became contiguous into the ready buffer."""
        starts, pieces = self._starts, self._pieces
        n = 0
        contig = self._contig
        for s, p in zip(starts, pieces):
            if s > contig:
                break
            n += 1
            pend = s + len(p)
            if pend > contig:
                self._ready += p[contig - s:] if s < contig else p
                contig = pend
        if n:
            del starts[:n]
            del pieces[:n]
        self._contig = contig

    def _check_recvd(self) -> None:
        if self.state == _R_SIZE_KNOWN and self._contig == self.final_size:
            self.state = _R_RECVD  # RFC 9000 §3.2 "Data Recvd"
            self._starts.clear()
            self._pieces.clear()

    def readable(self) -> int:
        """Number of in-order bytes waiting to be read."""
        return len(self._ready)

    def read(self, max_bytes: int = -1, consume: bool = True) -> tuple[bytes, bool]:
        """Return up to ``max_bytes`` in-order bytes (-1: all) and whether FIN is reached.

        FIN is reported once, with the last bytes; the half then becomes
        RECV_READ.  With ``consume=False`` the bytes do not yet free flow
        control credit (call ``consume`` when the application takes them).
        """
        ready = self._ready
        n = len(ready)
        if max_bytes >= 0 and max_bytes < n:
            n = max_bytes
        if n == len(ready):
            out = bytes(ready)
            ready.clear()
        else:
            out = bytes(ready[:n])
            del ready[:n]
        self.read_offset += n
        if consume:
            self.consumed += n
        fin = False
        if (not ready and self.state == _R_RECVD and not self._fin_delivered
                and self.read_offset == self.final_size):
            fin = True
            self._fin_delivered = True
            self.state = _R_READ
        return out, fin

    def consume(self, nbytes: int) -> None:
        """The application took ``nbytes`` previously read with consume=False."""
        self.consumed = min(self.consumed + nbytes, self.read_offset)

    def should_send_max_stream_data(self) -> int | None:
        """A new MAX_STREAM_DATA to announce (committed), or None.

        Like the kernel, the limit moves to consumed + window once that grows
        it by at least 1/16 of the window; not once the final size is known.
        """
        if self.state >= _R_SIZE_KNOWN or self.stop_sent:
            return None
        window = self.window
        new = self.consumed + window
        if new - self.max_data < max(1, window >> WINDOW_UPDATE_SHIFT):
            return None
        self.max_data = new
        return new

    def on_data_blocked(self) -> int | None:
        """Peer's STREAM_DATA_BLOCKED: a larger limit to announce now, or None."""
        if self.state >= _R_SIZE_KNOWN or self.stop_sent:
            return None
        new = self.consumed + self.window
        if self.max_data >= new:
            return None
        self.max_data = new
        return new

    def on_reset(self, errcode: int, final_size: int) -> int:
        """Peer's RESET_STREAM; returns how much ``highest`` grew (RFC 9000 §3.2, §4.5).

        Ignored (returns 0, state unchanged) once all data arrived or a reset
        was already taken, as the kernel does.  The buffered data is dropped.
        """
        if self.state >= _R_RECVD:
            return 0
        if final_size < self.highest or (
            self.final_size is not None and final_size != self.final_size
        ):
            raise QuicError(FINAL_SIZE_ERROR, None, "final size changed")
        if final_size > self.max_data:
            raise QuicError(FLOW_CONTROL_ERROR, None, "final size beyond the flow limit")
        grow = final_size - self.highest
        self.highest = final_size
        self.final_size = final_size
        self.errcode = errcode
        self.state = _R_RESET_RECVD
        self._ready.clear()
        self._starts.clear()
        self._pieces.clear()
        return grow

    def stop_sending(self, errcode: int) -> None:
        """Local STOP_SENDING (socket option): EINVAL if all data or a reset arrived,
        EAGAIN if one was already sent (socket.c quic_sock_stream_stop_sending)."""
        if self.state >= _R_RECVD:
            raise _oserror(errno.EINVAL, "stream already fully received")
        if self.stop_sent:
            raise _oserror(errno.EAGAIN, "STOP_SENDING already sent")
        self.stop_sent = True
        # the unread and out-of-order data is dropped; it all counts as consumed
        self.read_offset = self.consumed = self._contig = self.highest
        self._ready.clear()
        self._starts.clear()
        self._pieces.clear()

    def reset_read(self) -> None:
        """The application saw the reset: RECV_RESET_RECVD -> RECV_RESET_READ."""
        if self.state == _R_RESET_RECVD:
            self.state = _R_RESET_READ


class Stream:
    """A stream id with its send and/or receive half (per RFC 9000 §2.1 direction)."""

    __slots__ = ("id", "recv", "send")

    def __init__(self, stream_id: int, send: SendStream | None, recv: RecvStream | None) -> None:
        self.id = stream_id
        self.send = send
        self.recv = recv

    @property
    def is_uni(self) -> bool:
        return bool(self.id & 2)

    @property
    def is_bidi(self) -> bool:
        return not self.id & 2

    def is_local(self, is_client: bool) -> bool:
        """True if this endpoint initiated the stream."""
        return stream_is_local(self.id, is_client)

    def __repr__(self) -> str:
        s = self.send.state.name if self.send else "-"
        r = self.recv.state.name if self.recv else "-"
        return f"<Stream {self.id} send={s} recv={r}>"


def _send_final(s: SendStream | None) -> bool:
    return s is None or s.state in (_S_RECVD, _S_RESET_RECVD)


def _recv_final(r: RecvStream | None) -> bool:
    return r is None or r.state in (_R_READ, _R_RESET_RECVD, _R_RESET_READ)


class _Limits:
    """One direction's stream limits (kernel struct quic_stream_limits)."""

    __slots__ = (
        "announced",
        "blocked",
        "max_id",
        "max_stream_data_bidi_local",
        "max_stream_data_bidi_remote",
        "max_stream_data_uni",
        "max_streams",
        "next_id",
        "open",
        "pending",
    )

    def __init__(self) -> None:
        self.max_stream_data_bidi_local = 0
        self.max_stream_data_bidi_remote = 0
        self.max_stream_data_uni = 0
        # index 0: bidi, 1: uni
        self.max_streams = [0, 0]
        self.next_id = [0, 0]
        self.max_id = [-1, -1]
        self.open = [0, 0]
        self.pending = [False, False]
        self.blocked = [False, False]
        self.announced = [0, 0]


def _streams_to_id(streams: int, type_bits: int) -> int:
    return -1 if streams <= 0 else ((streams - 1) << 2) | type_bits


def _id_to_streams(stream_id: int) -> int:
    return (stream_id >> 2) + 1 if stream_id >= 0 else 0


class QuicStreamTable:
    """All streams of a connection, their limits and connection flow control.

    ``send``-side limits come from the peer (they bound what we open and
    send), ``recv``-side limits are what we grant.  See the module docstring.
    """

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.streams: dict[int, Stream] = {}
        self.active_stream_id = -1
        self._send = _Limits()  # limits advertised by the peer, local streams
        self._recv = _Limits()  # limits we advertise, peer streams
        loc = 0 if is_client else 1
        self._send.next_id = [loc, 2 | loc]
        self._recv.next_id = [loc ^ 1, 2 | (loc ^ 1)]
        # connection-level flow control (RFC 9000 §4.1)
        self.max_data_peer = 0  # peer's MAX_DATA
        self.data_sent = 0  # bytes accepted on all streams (kernel outq->bytes)
        self.recv_max_data = 0  # MAX_DATA we advertised
        self.recv_window = 0
        self.recv_highest = 0  # sum of the streams' highest offsets
        self.recv_consumed = 0  # bytes the application took
        self._data_blocked_pending = False
        self._data_blocked_reported = -1
        self._streams_blocked: list[tuple[bool, int]] = []
        self._pending_send: dict[int, Stream] = {}

    # ---------------------------------------------------------------- params
    def set_params(self, remote: bool, *, max_data: int | None = None,
                   max_stream_data_bidi_local: int | None = None,
                   max_stream_data_bidi_remote: int | None = None,
                   max_stream_data_uni: int | None = None,
                   max_streams_bidi: int | None = None,
                   max_streams_uni: int | None = None) -> None:
        """Apply transport parameters: ours (remote=False) or the peer's (remote=True)."""
        lim = self._send if remote else self._recv
        if max_stream_data_bidi_local is not None:
            lim.max_stream_data_bidi_local = max_stream_data_bidi_local
        if max_stream_data_bidi_remote is not None:
            lim.max_stream_data_bidi_remote = max_stream_data_bidi_remote
        if max_stream_data_uni is not None:
            lim.max_stream_data_uni = max_stream_data_uni
        if remote:
            loc = 0 if self.is_client else 1
        else:
            loc = 1 if self.is_client else 0
        for idx, value in ((0, max_streams_bidi), (1, max_streams_uni)):
            if value is None:
                continue
            lim.max_streams[idx] = value
            new_id = _streams_to_id(value, (idx << 1) | loc)
            if remote:
                lim.max_id[idx] = max(lim.max_id[idx], new_id)
            else:
                lim.max_id[idx] = new_id
                lim.announced[idx] = value
        if max_data is not None:
            if remote:
                self.max_data_peer = max(self.max_data_peer, max_data)
            else:
                self.recv_max_data = max_data
                self.recv_window = max_data
        if remote:
            # 0-RTT streams opened under remembered limits: raise, never lower
            for st in self.streams.values():
                if st.send is None:
                    continue
                st.send.on_max_stream_data(self._send_limit_for(st.id))
        else:
            for st in self.streams.values():
                if st.recv is not None and st.recv.highest == 0:
                    lim_v = self._recv_limit_for(st.id)
                    st.recv.max_data = st.recv.window = lim_v

    def get_params(self, remote: bool) -> dict[str, int]:
        """The stream-related transport parameters of one side."""
        lim = self._send if remote else self._recv
        return {
            "max_data": self.max_data_peer if remote else self.recv_max_data,
            "max_stream_data_bidi_local": lim.max_stream_data_bidi_local,
            "max_stream_data_bidi_remote": lim.max_stream_data_bidi_remote,
            "max_stream_data_uni": lim.max_stream_data_uni,
            "max_streams_bidi": lim.max_streams[0],
            "max_streams_uni": lim.max_streams[1],
        }

    def _send_limit_for(self, stream_id: int) -> int:
        lim = self._send
        if stream_id & 2:
            return lim.max_stream_data_uni
        if stream_is_local(stream_id, self.is_client):
            return lim.max_stream_data_bidi_remote
        return lim.max_stream_data_bidi_local

    def _recv_limit_for(self, stream_id: int) -> int:
        lim = self._recv
        if stream_id & 2:
            return lim.max_stream_data_uni
        if stream_is_local(stream_id, self.is_client):
            return lim.max_stream_data_bidi_local
        return lim.max_stream_data_bidi_remote

    # ---------------------------------------------------------------- lookup
    def get(self, stream_id: int) -> Stream | None:
        """The live stream with this id, or None."""
        return self.streams.get(stream_id)

    def next_stream_id(self, uni: bool) -> int:
        """The next local stream id of that type."""
        return self._send.next_id[1 if uni else 0]

    def _is_local(self, stream_id: int) -> bool:
        return (not stream_id & 1) == self.is_client

    def _closed(self, stream_id: int, local: bool) -> bool:
        lim = self._send if local else self._recv
        return stream_id < lim.next_id[(stream_id >> 1) & 1]

    def is_closed(self, stream_id: int) -> bool:
        """True for an id that was opened and released (kernel quic_stream_id_closed)."""
        if stream_id in self.streams:
            return False
        return self._closed(stream_id, self._is_local(stream_id))

    def _valid(self, stream_id: int, send: bool) -> bool:
        """Direction check (kernel quic_stream_id_valid)."""
        if not stream_id & 2:
            return True
        return self._is_local(stream_id) == send

    def _exceeds_send(self, stream_id: int) -> bool:
        """Kernel quic_stream_id_exceeds(send=true)."""
        lim = self._send
        idx = (stream_id >> 1) & 1
        if stream_id > lim.max_id[idx]:
            return True
        nstreams = _id_to_streams(stream_id - lim.next_id[idx])
        return nstreams + lim.open[idx] > lim.max_streams[idx]

    def _create(self, max_stream_id: int, local: bool) -> Stream:
        """Create every stream of that type up to ``max_stream_id`` (RFC 9000 §3.2)."""
        lim = self._send if local else self._recv
        idx = (max_stream_id >> 1) & 1
        sid = lim.next_id[idx]
        uni = bool(idx)
        stream: Stream | None = None
        count = 0
        while sid <= max_stream_id:
            send: SendStream | None = None
            recv: RecvStream | None = None
            if not uni or local:
                send = SendStream(self._send_limit_for(sid), self._notifier(sid))
            if not uni or not local:
                recv = RecvStream(self._recv_limit_for(sid))
            stream = Stream(sid, send, recv)
            self.streams[sid] = stream
            sid += 4
            count += 1
        lim.next_id[idx] = sid
        lim.open[idx] += count
        assert stream is not None
        return stream

    def _notifier(self, stream_id: int) -> Callable[[], None]:
        pending = self._pending_send
        streams = self.streams

        def notify() -> None:
            st = streams.get(stream_id)
            if st is not None:
                pending[stream_id] = st

        return notify

    def _release_if_done(self, stream: Stream) -> None:
        """Kernel quic_stream_put(): forget a stream whose halves are final."""
        if not (_send_final(stream.send) and _recv_final(stream.recv)):
            return
        if self.streams.pop(stream.id, None) is None:
            return
        self._pending_send.pop(stream.id, None)
        if self.active_stream_id == stream.id:
            self.active_stream_id = -1
        idx = (stream.id >> 1) & 1
        if self._is_local(stream.id):
            self._send.open[idx] -= 1
        else:
            self._recv.open[idx] -= 1
            self._recv.pending[idx] = True

    # ------------------------------------------------------ application side
    def _kernel_get(self, stream_id: int, flags: int, send: bool) -> Stream:
        """Kernel quic_stream_get() for the application: OSError on refusal."""
        if stream_id < 0 or not self._valid(stream_id, send):
            raise _oserror(errno.EINVAL, "invalid stream id for this direction")
        st = self.streams.get(stream_id)
        if st is not None:
            return st
        local = self._is_local(stream_id)
        if not send and local:
            if self._closed(stream_id, True):
                raise _oserror(errno.ENOSTR, "stream closed")
            raise _oserror(errno.EINVAL, "stream not opened")
        if send and not local:
            raise _oserror(errno.EINVAL, "peer stream not opened")
        if self._closed(stream_id, local):
            raise _oserror(errno.ENOSTR, "stream closed")
        if not flags & _NEW:
            raise _oserror(errno.EINVAL, "stream not opened")
        if send:
            if self._exceeds_send(stream_id):
                raise _oserror(errno.EAGAIN, "stream limit reached")
        else:  # pragma: no cover - local ids never reach here for recv
            raise _oserror(errno.EINVAL, "stream not opened")
        st = self._create(stream_id, local=True)
        self.active_stream_id = stream_id
        return st

    def resolve_send_id(self, stream_id: int, flags: int) -> int:
        """Stream id a sendmsg uses (socket.c quic_msghdr_parse): -1 means the
        active stream, else the next bidi (or uni with the UNI flag) stream."""
        if stream_id != -1:
            return stream_id
        if self.active_stream_id != -1:
            return self.active_stream_id
        return self._send.next_id[1 if flags & _UNI else 0]

    def send_stream(self, stream_id: int, flags: int, app_keys_ready: bool = True) -> Stream:
        """The stream a send uses (socket.c quic_sock_send_stream).

        EAGAIN over the peer's stream limit (the caller waits unless DONTWAIT;
        with SNDBLOCK a STREAMS_BLOCKED is queued, see take_streams_blocked);
        EINVAL over the limit while the app keys are not ready (0-RTT), for
        NEW on a stream already written to, and on a finished or reset stream.
        """
        try:
            st = self._kernel_get(stream_id, flags, True)
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            if not app_keys_ready:
                raise _oserror(errno.EINVAL, "stream limit reached before handshake") from None
            if flags & _SNDBLOCK:
                idx = (stream_id >> 1) & 1
                if not self._send.blocked[idx]:
                    self._send.blocked[idx] = True
                    self._streams_blocked.append(
                        (bool(idx), _id_to_streams(self._send.max_id[idx])))
            raise
        assert st.send is not None
        if flags & _NEW and st.send.state != _S_READY:
            raise _oserror(errno.EINVAL, "stream already open")
        if st.send.state >= _S_SENT:
            raise _oserror(errno.EINVAL, "stream finished or reset")
        return st

    def stream_open(self, stream_id: int, flags: int, app_keys_ready: bool = True) -> int:
        """QUIC_SOCKOPT_STREAM_OPEN (socket.c quic_sock_stream_open); returns the id."""
        if flags & ~_STREAM_FLAGS:
            raise _oserror(errno.EINVAL, "unsupported stream flags")
        if stream_id == -1:
            stream_id = self._send.next_id[1 if flags & _UNI else 0]
        self.send_stream(stream_id, flags | _NEW, app_keys_ready)
        return stream_id

    def open_local(self, stream_id: int = -1, uni: bool = False,
                   dontwait: bool = False) -> Stream:
        """Convenience STREAM_OPEN.  The engine never blocks, so ``dontwait``
        does not change the outcome: over the limit is always EAGAIN here."""
        flags = (_UNI if uni else 0) | (int(StreamFlag.DONTWAIT) if dontwait else 0)
        sid = self.stream_open(stream_id, flags)
        return self.streams[sid]

    def reset_stream(self, stream_id: int, errcode: int) -> int:
        """QUIC_SOCKOPT_STREAM_RESET; returns the final size for RESET_STREAM."""
        st = self._kernel_get(stream_id, 0, True)
        assert st.send is not None
        final = st.send.reset(errcode)
        self._pending_send.pop(stream_id, None)
        if self.active_stream_id == stream_id:
            self.active_stream_id = -1
        return final

    def stop_sending(self, stream_id: int, errcode: int) -> None:
        """QUIC_SOCKOPT_STREAM_STOP_SENDING; the caller then sends STOP_SENDING."""
        st = self._kernel_get(stream_id, 0, False)
        assert st.recv is not None
        before = st.recv.consumed
        st.recv.stop_sending(errcode)
        self.recv_consumed += st.recv.consumed - before

    def send_credit(self, stream: Stream) -> int:
        """Bytes that can be queued on ``stream`` now (stream and connection credit)."""
        if stream.send is None:
            return 0
        return max(0, min(stream.send.credit(), self.max_data_peer - self.data_sent))

    def write(self, stream: Stream, data: bytes | bytearray | memoryview,
              fin: bool = False) -> int:
        """Queue data on ``stream``, charging stream and connection credit; returns bytes taken."""
        if stream.send is None:
            raise _oserror(errno.EINVAL, "receive-only stream")
        conn = self.max_data_peer - self.data_sent
        if conn < len(data) and self._data_blocked_reported != self.max_data_peer:
            self._data_blocked_pending = True
        n = stream.send.write(data, fin, max(0, conn))
        self.data_sent += n
        if stream.send.state == _S_SENT and self.active_stream_id == stream.id:
            self.active_stream_id = -1  # outqueue.c: a finished stream is no longer active
        return n

    def read(self, stream_id: int, max_bytes: int = -1,
             consume: bool = True) -> tuple[bytes, bool]:
        """Read in-order data of a stream; releases it once FIN has been read."""
        st = self.streams.get(stream_id)
        if st is None or st.recv is None:
            return b"", False
        data, fin = st.recv.read(max_bytes, consume)
        if consume:
            self.recv_consumed += len(data)
        if fin:
            self._release_if_done(st)
        return data, fin

    def consume(self, stream_id: int | None, nbytes: int) -> RecvStream | None:
        """The application took ``nbytes`` read earlier with consume=False;
        returns the stream's receiving half (None if gone)."""
        self.recv_consumed += nbytes
        if stream_id is not None:
            st = self.streams.get(stream_id)
            if st is not None and st.recv is not None:
                st.recv.consume(nbytes)
                return st.recv
        return None

    # ------------------------------------------------------------ peer side
    def get_or_create_peer(self, stream_id: int, send: bool = False,
                           frame_type: int | None = None) -> Stream | None:
        """Stream for a frame from the peer; None if it is closed (ignore the frame).

        ``send`` is True for frames about our sending half (STOP_SENDING,
        MAX_STREAM_DATA).  STREAM_STATE_ERROR for the wrong direction or a
        local stream not yet opened (RFC 9000 §19.4/§19.5/§19.8/§19.10);
        STREAM_LIMIT_ERROR past the limit we granted (§4.6); a peer stream is
        opened together with all lower ones of its type (§3.2).
        """
        if not self._valid(stream_id, send):
            raise QuicError(STREAM_STATE_ERROR, frame_type, "wrong direction for stream")
        st = self.streams.get(stream_id)
        if st is not None:
            return st
        if self._is_local(stream_id):
            if self._closed(stream_id, True):
                return None
            raise QuicError(STREAM_STATE_ERROR, frame_type, "local stream not yet opened")
        if self._closed(stream_id, False):
            return None
        idx = (stream_id >> 1) & 1
        if stream_id > self._recv.max_id[idx]:
            raise QuicError(STREAM_LIMIT_ERROR, frame_type, "stream limit exceeded")
        st = self._create(stream_id, local=False)
        if not stream_id & 2:
            self.active_stream_id = stream_id  # kernel: usable with id -1 for the reply
        return st

    def on_stream_frame(self, stream_id: int, offset: int,
                        data: bytes | bytearray | memoryview, fin: bool,
                        frame_type: int | None = None) -> Stream | None:
        """A STREAM frame; returns the stream (None if closed and ignored)."""
        if offset + len(data) > VARINT_MAX:
            raise QuicError(FRAME_ENCODING_ERROR, frame_type, "stream offset beyond 2^62-1")
        st = self.get_or_create_peer(stream_id, False, frame_type)
        if st is None:
            return None
        recv = st.recv
        assert recv is not None
        try:
            grow = recv.on_data(offset, data, fin, self.recv_max_data - self.recv_highest)
        except QuicError as e:
            e.frame_type = frame_type
            raise
        self.recv_highest += grow
        if recv.stop_sent:
            self.recv_consumed += grow
        if recv.state >= _R_READ:
            self._release_if_done(st)
        return st

    def on_reset_stream(self, stream_id: int, errcode: int, final_size: int,
                        frame_type: int | None = None) -> Stream | None:
        """A RESET_STREAM; returns the stream if it just entered RECV_RESET_RECVD.

        Every byte up to the final size counts as consumed from here on: drop
        queued unread data of this stream without calling ``consume``.
        """
        st = self.get_or_create_peer(stream_id, False, frame_type)
        if st is None:
            return None
        recv = st.recv
        assert recv is not None
        if recv.state >= _R_RECVD:
            return None
        try:
            grow = recv.on_reset(errcode, final_size)
        except QuicError as e:
            e.frame_type = frame_type
            raise
        if grow > self.recv_max_data - self.recv_highest:
            raise QuicError(FLOW_CONTROL_ERROR, frame_type, "final size beyond MAX_DATA")
        self.recv_highest += grow
        # RFC 9000 §4.5: the whole final size counts; unread bytes are freed now
        freed = final_size - recv.consumed
        recv.consumed = recv.read_offset = final_size
        self.recv_consumed += freed
        self._release_if_done(st)
        return st

    def on_stop_sending(self, stream_id: int, errcode: int,
                        frame_type: int | None = None) -> int | None:
        """A STOP_SENDING; returns the final size of the RESET_STREAM to send, or None."""
        st = self.get_or_create_peer(stream_id, True, frame_type)
        if st is None:
            return None
        assert st.send is not None
        final = st.send.on_stop_sending(errcode)
        if final is not None:
            self._pending_send.pop(stream_id, None)
            if self.active_stream_id == stream_id:
                self.active_stream_id = -1
        return final

    def on_max_stream_data(self, stream_id: int, max_data: int,
                           frame_type: int | None = None) -> bool:
        """A MAX_STREAM_DATA; True if the stream's limit grew."""
        st = self.get_or_create_peer(stream_id, True, frame_type)
        if st is None:
            return False
        assert st.send is not None
        return st.send.on_max_stream_data(max_data)

    def on_stream_data_blocked(self, stream_id: int, limit: int,
                               frame_type: int | None = None) -> int | None:
        """A STREAM_DATA_BLOCKED; a MAX_STREAM_DATA value to send, or None."""
        st = self.get_or_create_peer(stream_id, False, frame_type)
        if st is None:
            return None
        assert st.recv is not None
        return st.recv.on_data_blocked()

    def on_max_data(self, max_data: int) -> bool:
        """A MAX_DATA; True if the connection limit grew."""
        if max_data <= self.max_data_peer:
            return False
        self.max_data_peer = max_data
        return True

    def on_data_blocked(self, limit: int) -> int | None:
        """A DATA_BLOCKED; a new MAX_DATA to send, or None (inqueue.c rules)."""
        new = self.recv_consumed + self.recv_window
        if self.recv_max_data >= new:
            return None
        self.recv_max_data = new
        return new

    def on_max_streams(self, uni: bool, maximum: int,
                       frame_type: int | None = None) -> int | None:
        """A MAX_STREAMS; returns the new highest stream id we may open, or None."""
        if maximum > MAX_STREAMS_LIMIT:  # RFC 9000 §19.11
            raise QuicError(FRAME_ENCODING_ERROR, frame_type, "MAX_STREAMS beyond 2^60")
        idx = 1 if uni else 0
        lim = self._send
        if maximum <= _id_to_streams(lim.max_id[idx]):
            return None  # does not grow the limit: ignored
        loc = 0 if self.is_client else 1
        lim.max_id[idx] = _streams_to_id(maximum, (idx << 1) | loc)
        return lim.max_id[idx]

    def on_streams_blocked(self, uni: bool, maximum: int,
                           frame_type: int | None = None) -> int | None:
        """A STREAMS_BLOCKED; the MAX_STREAMS value to re-announce, or None."""
        if maximum > MAX_STREAMS_LIMIT:  # RFC 9000 §19.14
            raise QuicError(FRAME_ENCODING_ERROR, frame_type, "STREAMS_BLOCKED beyond 2^60")
        cur = _id_to_streams(self._recv.max_id[1 if uni else 0])
        if maximum > cur:
            return None
        return cur

    # -------------------------------------------------------------- recovery
    def on_stream_acked(self, stream_id: int, offset: int, length: int, fin: bool) -> bool:
        """A STREAM frame was acknowledged; True if the send half just became SEND_RECVD."""
        st = self.streams.get(stream_id)
        if st is None or st.send is None:
            return False
        done = st.send.on_acked(offset, length, fin)
        if done:
            self._release_if_done(st)
        return done

    def on_stream_lost(self, stream_id: int, offset: int, length: int, fin: bool) -> None:
        """A STREAM frame was lost; its data goes out again before new data."""
        st = self.streams.get(stream_id)
        if st is not None and st.send is not None:
            st.send.on_lost(offset, length, fin)

    def on_reset_acked(self, stream_id: int) -> bool:
        """A RESET_STREAM was acknowledged; True if it just became SEND_RESET_RECVD."""
        st = self.streams.get(stream_id)
        if st is None or st.send is None:
            return False
        done = st.send.on_reset_acked()
        if done:
            self._release_if_done(st)
        return done

    # --------------------------------------------------------------- outputs
    def has_sendable(self) -> bool:
        """True if some stream may have data to send (cheap; may be stale-true)."""
        return bool(self._pending_send)

    def sendable(self) -> Iterator[Stream]:
        """Streams with data to send, round robin: a served stream goes to the back.

        Safe to stop early (``break``) and to call ``next_chunk`` while iterating.
        """
        pending = self._pending_send
        for sid, st in list(pending.items()):
            if pending.get(sid) is not st:
                continue
            if st.send is None or not st.send.has_data():
                del pending[sid]
                continue
            # to the back before yielding: the caller may stop iterating early
            del pending[sid]
            pending[sid] = st
            yield st

    def max_streams_update(self) -> tuple[int | None, int | None]:
        """New (uni, bidi) MAX_STREAMS values to announce after peer streams closed."""
        out: list[int | None] = [None, None]
        lim = self._recv
        for idx in (0, 1):
            if not lim.pending[idx]:
                continue
            lim.pending[idx] = False
            rem = lim.max_streams[idx] - lim.open[idx]
            max_id = lim.next_id[idx] - 4 + (rem << 2)
            lim.max_id[idx] = max(lim.max_id[idx], max_id)
            value = _id_to_streams(lim.max_id[idx])
            if value > lim.announced[idx]:
                lim.announced[idx] = value
                out[idx] = value
        return out[1], out[0]

    def should_send_max_data(self) -> int | None:
        """A new MAX_DATA to announce (committed), or None (kernel 1/16-window rule)."""
        window = self.recv_window
        new = self.recv_consumed + window
        if new - self.recv_max_data < max(1, window >> WINDOW_UPDATE_SHIFT):
            return None
        self.recv_max_data = new
        return new

    def take_data_blocked(self) -> int | None:
        """The limit for a DATA_BLOCKED frame, once per MAX_DATA value."""
        if not self._data_blocked_pending:
            return None
        self._data_blocked_pending = False
        if self.data_sent < self.max_data_peer:
            return None
        self._data_blocked_reported = self.max_data_peer
        return self.max_data_peer

    def on_data_blocked_acked(self) -> None:
        """Nothing to do: DATA_BLOCKED is sent once per limit value."""

    def take_streams_blocked(self) -> list[tuple[bool, int]]:
        """(uni, limit) pairs for STREAMS_BLOCKED frames queued by SNDBLOCK opens."""
        out = self._streams_blocked
        self._streams_blocked = []
        return out

    def on_streams_blocked_acked(self, uni: bool) -> None:
        """A STREAMS_BLOCKED was acknowledged: another may be sent (frame.c)."""
        self._send.blocked[1 if uni else 0] = False

    @property
    def open_streams(self) -> tuple[int, int, int, int]:
        """(local bidi, local uni, peer bidi, peer uni) open stream counts."""
        return (self._send.open[0], self._send.open[1], self._recv.open[0], self._recv.open[1])


StreamTable = QuicStreamTable
