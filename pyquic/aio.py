"""asyncio helpers for pyquic, in the style of asyncio's streams, on either backend.

::

    conn = await pyquic.aio.open_connection("127.0.0.1", 4433, alpns="echo",
                                            cafile="cert.pem")
    reader, writer = await conn.open_stream()
    writer.write(b"hello")
    writer.write_eof()
    print(await reader.read())
    conn.close()

    async def handle(conn):
        async for reader, writer in conn:          # each stream the peer opens
            writer.write(await reader.read())
            writer.write_eof()

    server = await pyquic.aio.start_server(handle, "127.0.0.1", 4433, alpns="echo",
                                           certfile="cert.pem", keyfile="key.pem")

How it works
    A :class:`Connection` wraps one QUIC socket of either backend (the socket
    from :func:`pyquic.socket_api.socket`). Everything after the handshake is
    driven by readiness of ``sock.fileno()`` through ``loop.add_reader`` and
    ``loop.add_writer``: no busy polling, no threads. One reader callback per
    connection drains ``recvmsg`` (with ``MSG_DONTWAIT``) and dispatches each
    message: stream data to the stream's :class:`StreamReader`, datagrams to
    :meth:`Connection.recv_datagram`, events (``pyquic.abi`` event dataclasses)
    to internal bookkeeping and, when subscribed, to
    :meth:`Connection.next_event`. Streams the peer opens are queued for
    :meth:`Connection.accept_stream`.

The handshake runs in a thread
    The TLS handshake (:func:`pyquic.tls.driver.client_handshake` /
    ``server_handshake``) is a blocking call; it runs in the default thread
    executor (``asyncio.to_thread``) so the event loop keeps serving other
    connections. Until it finishes, nothing else touches the socket.

Backpressure
    :meth:`StreamWriter.write` hands data to the socket at once and buffers
    what the socket refuses. ``EAGAIN`` (the socket's send buffer or the
    connection's flow-control window is full) waits for writability of the
    fd; ``ENOSPC`` (this stream's flow-control window is full, RFC 9000 §4.1)
    waits for the peer's MAX_STREAM_DATA, seen as a ``StreamMaxDataEvent``
    (with a 0.2 s retry as a safety net). :meth:`StreamWriter.drain` waits
    while more than ``high_water`` bytes are buffered. On the receive side,
    reading stops (``remove_reader``) while more than ``read_limit`` bytes are
    buffered unread on a connection, so the socket's flow control (which only
    advances as data is read) throttles the peer.

Events used internally
    The connection enables STREAM_UPDATE, STREAM_MAX_DATA, STREAM_MAX_STREAM and
    CONNECTION_CLOSE on its socket: they report resets and STOP_SENDING
    (:class:`StreamResetError`), the peer's acknowledgement of a whole stream
    (:meth:`StreamWriter.wait_closed`), flow-control credit, stream credit
    (:meth:`Connection.open_stream` waits for it) and the close reason. Only
    the types passed as ``events=`` (or to :meth:`Connection.enable_events`)
    are queued for :meth:`Connection.next_event`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import inspect
import logging
import os
import socket as _socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

from pyquic.abi.constants import IPPROTO_QUIC, EventType, StreamState
from pyquic.abi.events import (
    ConnectionCloseEvent,
    Event,
    StreamMaxDataEvent,
    StreamMaxStreamEvent,
    StreamUpdateEvent,
)
from pyquic.abi.structs import Config, TransportParam

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_READ_LIMIT",
    "Connection",
    "ConnectionClosed",
    "Server",
    "StreamReader",
    "StreamResetError",
    "StreamWriter",
    "open_connection",
    "start_server",
]

log = logging.getLogger("pyquic.aio")

#: Bytes buffered unread on one connection before reading from the socket pauses.
DEFAULT_READ_LIMIT = 4 * 1024 * 1024
#: Bytes buffered in a StreamWriter above which ``drain()`` waits.
DEFAULT_HIGH_WATER = 256 * 1024
_RECV_SIZE = 65536
_SEND_CHUNK = 256 * 1024
_READS_PER_WAKEUP = 64  # recvmsg calls per readiness callback before yielding to the loop
_FLOW_RETRY = 0.2  # seconds: retry of an ENOSPC-blocked stream if no MAX_DATA event came
_STREAM_RETRY = 0.2  # seconds: retry of a refused stream open if no MAX_STREAMS event came
_DGRAM_QUEUE = 1024
_MSG_DONTWAIT = _socket.MSG_DONTWAIT
_INTERNAL_EVENTS = (EventType.STREAM_UPDATE, EventType.STREAM_MAX_DATA,
                    EventType.STREAM_MAX_STREAM, EventType.CONNECTION_CLOSE)

PathLike = Union[str, "os.PathLike[str]"]
ClientConnectedCallback = Callable[["Connection"], "Awaitable[None] | None"]


class ConnectionClosed(ConnectionError):
    """The QUIC connection is closed (by either side, or it timed out).

    ``event`` is the peer's :class:`~pyquic.abi.events.ConnectionCloseEvent`
    when one arrived (its ``errcode`` and ``phrase`` say why).
    """

    def __init__(self, message: str, event: ConnectionCloseEvent | None = None) -> None:
        super().__init__(message)
        self.event = event


class StreamResetError(ConnectionResetError):
    """A stream was reset: the peer sent RESET_STREAM (reading) or STOP_SENDING
    (writing), RFC 9000 §3. ``errcode`` is the application error code."""

    def __init__(self, stream_id: int, errcode: int, what: str) -> None:
        super().__init__(f"stream {stream_id}: {what} (error code {errcode})")
        self.stream_id = stream_id
        self.errcode = errcode


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _is_uni(stream_id: int) -> bool:
    return bool(stream_id & 0x2)  # RFC 9000 §2.1: bit 1 set = unidirectional


class StreamReader:
    """The receiving half of one QUIC stream, like :class:`asyncio.StreamReader`.

    Data arrives from the connection's reader callback; FIN is end of file.
    A reset by the peer raises :class:`StreamResetError` once buffered data is
    read; a closed connection raises :class:`ConnectionClosed`.
    """

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._buf = bytearray()
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<StreamReader stream={self.stream_id} buffered={len(self._buf)} eof={self._eof}>"

    # -- fed by the connection ------------------------------------------------

    def _feed(self, data: bytes, fin: bool) -> None:
        if data:
            self._buf += data
        if fin:
            self._eof = True
        _wake(self._waiter)

    def _set_exception(self, exc: BaseException) -> None:
        if self._eof and not isinstance(exc, StreamResetError):
            return  # the whole stream already arrived
        if self._exc is None:
            self._exc = exc
        _wake(self._waiter)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._conn._consumed(len(data))
        if self._eof and not self._buf:
            self._conn._maybe_release(self.stream_id)
        return data

    async def _wait(self, what: str) -> None:
        if self._waiter is not None:
            raise RuntimeError(f"{what}() called while another coroutine is reading stream "
                               f"{self.stream_id}")
        self._waiter = self._conn._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _raise_if_failed(self) -> None:
        if self._exc is not None:
            raise self._exc

    # -- public --------------------------------------------------------------

    def at_eof(self) -> bool:
        """True when the peer's FIN was received and every byte was read."""
        return self._eof and not self._buf

    def exception(self) -> BaseException | None:
        """The error that ended this stream, if any."""
        return self._exc

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (``n < 0``: until EOF). ``b""`` at EOF."""
        if n == 0:
            return b""
        if n < 0:
            # Take the data as it comes, so the connection's read_limit never stalls us.
            parts: list[bytes] = []
            for _ in range(1 << 62):  # until FIN (bounded by the stream's final size)
                if self._buf:
                    parts.append(self._take(len(self._buf)))
                if self._eof:
                    break
                self._raise_if_failed()
                await self._wait("read")
            return b"".join(parts)
        for _ in range(1 << 62):
            if self._buf or self._eof:
                break
            self._raise_if_failed()
            await self._wait("read")
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes; :class:`asyncio.IncompleteReadError` at an early EOF."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        parts: list[bytes] = []
        need = n
        for _ in range(1 << 62):
            if len(self._buf) >= need:
                parts.append(self._take(need))
                return b"".join(parts)
            if self._eof:
                parts.append(self._take(len(self._buf)))
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            if self._buf:
                need -= len(self._buf)
                parts.append(self._take(len(self._buf)))
            self._raise_if_failed()
            await self._wait("readexactly")
        raise AssertionError("unreachable")  # pragma: no cover

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Read up to and including ``separator``.

        :class:`asyncio.IncompleteReadError` at an early EOF;
        :class:`asyncio.LimitOverrunError` when half the connection's
        ``read_limit`` is buffered without a separator (the data stays buffered).
        """
        if not separator:
            raise ValueError("separator should be at least one-byte string")
        start = 0
        for _ in range(1 << 62):
            pos = self._buf.find(separator, start)
            if pos >= 0:
                return self._take(pos + len(separator))
            if self._eof:
                partial = self._take(len(self._buf))
                raise asyncio.IncompleteReadError(partial, None)
            limit = self._conn._read_limit
            if limit is not None and len(self._buf) > limit // 2:
                # Waiting longer could stall the connection (its read_limit is reached).
                raise asyncio.LimitOverrunError("separator not found within the read limit",
                                                len(self._buf))
            self._raise_if_failed()
            start = max(0, len(self._buf) - len(separator) + 1)
            await self._wait("readuntil")
        raise AssertionError("unreachable")  # pragma: no cover

    async def readline(self) -> bytes:
        """Read one line ending in ``b"\\n"`` (or what is left at EOF)."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    def stop_sending(self, errcode: int = 0) -> None:
        """Ask the peer to stop sending on this stream (STOP_SENDING, RFC 9000 §19.5)."""
        self._conn.socket.stop_sending(self.stream_id, errcode)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        for _ in range(1 << 62):
            line = await self.readline()
            if not line:
                return
            yield line


class StreamWriter:
    """The sending half of one QUIC stream, like :class:`asyncio.StreamWriter`.

    :meth:`write` never blocks; :meth:`drain` applies backpressure;
    :meth:`write_eof` sends FIN after the buffered data; :meth:`wait_closed`
    waits until the peer acknowledged the whole stream.
    """

    def __init__(self, conn: Connection, stream_id: int, *, writable: bool = True,
                 high_water: int = DEFAULT_HIGH_WATER) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._writable = writable
        self._high_water = high_water
        self._buf = bytearray()
        self._off = 0  # bytes of _buf already accepted by the socket
        self._eof = False  # write_eof() called
        self._fin_sent = False
        self._acked = False
        self._exc: BaseException | None = None
        self._flow_blocked = False
        self._retry: asyncio.TimerHandle | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._ack_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (f"<StreamWriter stream={self.stream_id} buffered={self.buffered} "
                f"eof={self._eof} fin_sent={self._fin_sent}>")

    @property
    def connection(self) -> Connection:
        """The :class:`Connection` this stream belongs to."""
        return self._conn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """asyncio compatibility: ``"socket"``, ``"peername"``, ``"sockname"``,
        ``"stream_id"``, ``"alpn"``."""
        info = {"socket": self._conn.socket, "stream_id": self.stream_id,
                "alpn": self._conn.alpn}
        if name in info:
            return info[name]
        try:
            if name == "peername":
                return self._conn.socket.getpeername()
            if name == "sockname":
                return self._conn.socket.getsockname()
        except OSError:
            return default
        return default

    @property
    def buffered(self) -> int:
        """Bytes written but not yet accepted by the socket."""
        return len(self._buf) - self._off

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` and hand as much as possible to the socket now."""
        if not self._writable:
            raise OSError(errno.EINVAL, f"stream {self.stream_id} is the peer's unidirectional "
                          "stream: it cannot be written")
        if self._exc is not None:
            raise self._exc
        if self._eof:
            raise RuntimeError(f"stream {self.stream_id}: write after write_eof()")
        if data:
            self._conn._write(self, data)

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write each buffer of ``data`` in turn."""
        for chunk in data:
            self.write(chunk)

    def can_write_eof(self) -> bool:
        """Always True: QUIC streams can be half-closed (FIN)."""
        return True

    def write_eof(self) -> None:
        """Finish the stream: FIN goes out after the buffered data. Idempotent."""
        if not self._writable or self._eof:
            return
        if self._exc is not None:
            raise self._exc
        self._eof = True
        self._conn._flush(self)

    def close(self) -> None:
        """Same as :meth:`write_eof` (closing a QUIC stream's send side is a FIN)."""
        self.write_eof()

    def is_closing(self) -> bool:
        """True once :meth:`write_eof` was called or the stream failed."""
        return self._eof or self._exc is not None or not self._writable

    async def drain(self) -> None:
        """Wait while more than ``high_water`` bytes are buffered (backpressure).

        Raises the error that broke the stream (e.g. :class:`StreamResetError`
        after the peer's STOP_SENDING, :class:`ConnectionClosed`).
        """
        for _ in range(1 << 62):
            if self._exc is not None:
                raise self._exc
            if self.buffered <= self._high_water:
                return
            self._drain_waiter = self._conn._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    async def flush(self) -> None:
        """Wait until the socket accepted every buffered byte (and the FIN, if written)."""
        for _ in range(1 << 62):
            if self._exc is not None:
                raise self._exc
            if not self.buffered and (self._fin_sent or not self._eof):
                return
            self._drain_waiter = self._conn._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    async def wait_closed(self) -> None:
        """After :meth:`write_eof`: wait until the peer acknowledged all data and the
        FIN (the stream's send side reached "Data Recvd", RFC 9000 §3.1).

        That is the point where closing the connection loses nothing.
        """
        if not self._writable:
            return
        for _ in range(1 << 62):
            if self._acked:
                return
            if self._exc is not None:
                raise self._exc
            self._ack_waiter = self._conn._loop.create_future()
            try:
                await self._ack_waiter
            finally:
                self._ack_waiter = None

    def reset(self, errcode: int = 0) -> None:
        """Abandon the stream's send side (RESET_STREAM, RFC 9000 §19.4); buffered data
        is dropped."""
        self._clear()
        self._conn.socket.reset_stream(self.stream_id, errcode)
        self._set_exception(StreamResetError(self.stream_id, errcode, "reset locally"))
        self._conn._maybe_release(self.stream_id)

    # -- driven by the connection -------------------------------------------

    def _clear(self) -> None:
        self._buf.clear()
        self._off = 0

    def _consume(self, n: int) -> None:
        """``n`` more buffered bytes were accepted by the socket."""
        self._off += n
        if self._off >= len(self._buf):
            self._clear()
        elif self._off >= 1 << 20 and self._off * 2 >= len(self._buf):
            del self._buf[:self._off]  # compact now and then, not on every send
            self._off = 0

    def _wake_drain(self) -> None:
        _wake(self._drain_waiter)

    def _set_exception(self, exc: BaseException) -> None:
        if self._exc is None and not self._acked:
            self._exc = exc
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        _wake(self._drain_waiter)
        _wake(self._ack_waiter)

    def _set_acked(self) -> None:
        self._acked = True
        _wake(self._ack_waiter)
        _wake(self._drain_waiter)
        self._conn._maybe_release(self.stream_id)

    def _done(self) -> bool:
        return self._acked or self._exc is not None or not self._writable


class Connection:
    """One QUIC connection on asyncio (client or server side).

    Made by :func:`open_connection` or handed to :func:`start_server`'s
    callback once the handshake is done. ``async for reader, writer in conn``
    yields each stream the peer opens until the connection closes.

    To wrap a socket yourself (inside a running loop): ``sock`` is a QUIC
    socket of either backend whose handshake is complete; ``is_client`` says
    which side it is (stream-id parity, RFC 9000 §2.1); ``handshake`` is its
    :class:`~pyquic.tls.driver.HandshakeResult`; ``events`` are the event
    types to queue for :meth:`next_event`; ``read_limit`` bounds the bytes
    buffered unread (None: no bound) and ``high_water`` is each writer's
    :meth:`StreamWriter.drain` threshold. The socket is made non-blocking.
    """

    def __init__(self, sock: Any, *, is_client: bool, handshake: Any = None,
                 events: Iterable[EventType | int] = (),
                 read_limit: int | None = DEFAULT_READ_LIMIT,
                 high_water: int = DEFAULT_HIGH_WATER) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self.is_client = is_client
        #: The :class:`pyquic.tls.driver.HandshakeResult` (ALPN, cipher, peer
        #: certificates, resumption and 0-RTT status), or None.
        self.handshake = handshake
        self._read_limit = read_limit
        self._high_water = high_water
        self._readers: dict[int, StreamReader] = {}
        self._writers: dict[int, StreamWriter] = {}
        self._done_ids: set[int] = set()
        self._incoming: deque[tuple[StreamReader, StreamWriter]] = deque()
        self._incoming_waiter: asyncio.Future[None] | None = None
        self._datagrams: deque[bytes] = deque()
        self._datagram_waiter: asyncio.Future[None] | None = None
        self._dgram_out: deque[bytes] = deque()
        self._events: deque[Event] = deque()
        self._event_waiter: asyncio.Future[None] | None = None
        self._subscribed: set[int] = set()
        self._stream_credit_waiters: list[asyncio.Future[None]] = []
        self._want_write: dict[int, StreamWriter] = {}
        self._writer_on = False
        self._reader_on = False
        self._buffered = 0
        self._closed = False
        self._close_exc: ConnectionClosed | None = None
        #: The peer's (or the idle timeout's) CONNECTION_CLOSE event, once seen.
        self.close_event: ConnectionCloseEvent | None = None
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        #: The stream that carried 0-RTT data from ``open_connection(early_data=...)``.
        self.early_stream: tuple[StreamReader, StreamWriter] | None = None

        sock.setblocking(False)
        for etype in _INTERNAL_EVENTS:
            try:
                sock.set_event(etype, True)
            except OSError as exc:  # still usable, with fewer guarantees
                log.debug("cannot enable event %s: %s", etype.name, exc)
        self.enable_events(*events)
        self._resume_reading()

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        state = "closed" if self._closed else "open"
        return f"<Connection {side} {state} alpn={self.alpn!r} streams={len(self._readers)}>"

    # -- properties ----------------------------------------------------------

    @property
    def socket(self) -> Any:
        """The underlying QUIC socket (kernel or user backend); for typed options
        (``get_transport_param``, ``key_update``, ``migrate``...)."""
        return self._sock

    @property
    def backend(self) -> str:
        """``"kernel"`` or ``"user"``."""
        return str(getattr(self._sock, "backend", "kernel"))

    @property
    def alpn(self) -> str | None:
        """The negotiated application protocol, or None."""
        return getattr(self.handshake, "alpn", None)

    @property
    def local_address(self) -> Any:
        """``getsockname()`` of the socket."""
        return self._sock.getsockname()

    @property
    def remote_address(self) -> Any:
        """``getpeername()`` of the socket (follows migrations)."""
        return self._sock.getpeername()

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed (either side) or lost."""
        return self._closed

    # -- streams --------------------------------------------------------------

    def _is_local(self, stream_id: int) -> bool:
        # RFC 9000 §2.1: bit 0 is 0 for client-initiated streams.
        return (stream_id & 1) == (0 if self.is_client else 1)

    def _make_stream(self, stream_id: int, local: bool) -> tuple[StreamReader, StreamWriter]:
        uni = _is_uni(stream_id)
        reader = StreamReader(self, stream_id)
        writer = StreamWriter(self, stream_id, writable=local or not uni,
                              high_water=self._high_water)
        if uni and local:
            reader._eof = True  # nothing ever arrives on our own unidirectional stream
        self._readers[stream_id] = reader
        self._writers[stream_id] = writer
        return reader, writer

    def stream(self, stream_id: int) -> tuple[StreamReader, StreamWriter] | None:
        """The reader and writer of an open stream, or None."""
        r = self._readers.get(stream_id)
        w = self._writers.get(stream_id)
        return (r, w) if r is not None and w is not None else None

    async def open_stream(self, uni: bool = False) -> tuple[StreamReader, StreamWriter]:
        """Open the next bidirectional (or ``uni``-directional) stream.

        Waits while the peer's stream limit is reached (RFC 9000 §4.6) until
        it grants more (MAX_STREAMS). On a unidirectional stream the reader is
        at EOF from the start.
        """
        for _ in range(1 << 62):
            self._check_open()
            try:
                sid = self._sock.open_stream(uni=uni, dontwait=True)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOSPC):
                    raise
            else:
                return self._make_stream(sid, local=True)
            fut = self._loop.create_future()
            self._stream_credit_waiters.append(fut)
            handle = self._loop.call_later(_STREAM_RETRY, _wake, fut)
            try:
                await fut
            finally:
                handle.cancel()
                if fut in self._stream_credit_waiters:
                    self._stream_credit_waiters.remove(fut)
        raise AssertionError("unreachable")  # pragma: no cover

    async def accept_stream(self) -> tuple[StreamReader, StreamWriter]:
        """Wait for the next stream the peer opens (at its first data or FIN).

        On the peer's unidirectional stream the writer is not writable.
        Raises :class:`ConnectionClosed` once the connection is closed.
        """
        for _ in range(1 << 62):
            if self._incoming:
                return self._incoming.popleft()
            self._check_open()
            self._incoming_waiter = self._loop.create_future()
            try:
                await self._incoming_waiter
            finally:
                self._incoming_waiter = None
        raise AssertionError("unreachable")  # pragma: no cover

    def __aiter__(self) -> AsyncIterator[tuple[StreamReader, StreamWriter]]:
        return self._accept_all()

    async def _accept_all(self) -> AsyncIterator[tuple[StreamReader, StreamWriter]]:
        for _ in range(1 << 62):
            try:
                pair = await self.accept_stream()
            except ConnectionClosed:
                return
            yield pair

    # -- datagrams (RFC 9221) -------------------------------------------------

    def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send one unreliable datagram. Never blocks: while the socket is full,
        datagrams wait in a queue of ``1024``, then BlockingIOError.

        The peer must allow datagrams (its ``max_datagram_frame_size``), else
        OSError(EINVAL); one too large for a packet is OSError(EMSGSIZE).
        """
        self._check_open()
        if self._dgram_out:
            if len(self._dgram_out) >= _DGRAM_QUEUE:
                raise BlockingIOError(errno.EAGAIN, "datagram queue is full")
            self._dgram_out.append(bytes(data))
            return
        try:
            self._sock.send_datagram(data, _MSG_DONTWAIT)
        except BlockingIOError:
            self._dgram_out.append(bytes(data))
            self._want_writable()

    async def recv_datagram(self) -> bytes:
        """Wait for the next datagram; :class:`ConnectionClosed` once closed and empty."""
        for _ in range(1 << 62):
            if self._datagrams:
                return self._datagrams.popleft()
            self._check_open()
            self._datagram_waiter = self._loop.create_future()
            try:
                await self._datagram_waiter
            finally:
                self._datagram_waiter = None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- events ----------------------------------------------------------------

    def enable_events(self, *types: EventType | int) -> None:
        """Enable event types on the socket and queue them for :meth:`next_event`."""
        for t in types:
            etype = EventType(t)
            if etype not in _INTERNAL_EVENTS:
                self._sock.set_event(etype, True)
            self._subscribed.add(int(etype))

    async def next_event(self) -> Event:
        """Wait for the next subscribed event, as a ``pyquic.abi`` event dataclass
        (``StreamUpdateEvent``, ``KeyUpdateEvent``, ``NewTokenEvent``...).

        Raises :class:`ConnectionClosed` once the connection is closed and the
        queue is empty (the ``ConnectionCloseEvent``, when subscribed, comes first).
        """
        for _ in range(1 << 62):
            if self._events:
                return self._events.popleft()
            self._check_open()
            self._event_waiter = self._loop.create_future()
            try:
                await self._event_waiter
            finally:
                self._event_waiter = None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- connection-level ------------------------------------------------------

    async def session_data(self, timeout: float = 1.0) -> bytes | None:
        """Client: resumption data (session ticket and the server's transport
        parameters) for ``open_connection(session=...)``, or None if no ticket
        arrived within ``timeout`` seconds. Runs the driver's wait in a thread."""
        if self.handshake is None:
            return None
        get = self.handshake.get_session_data
        return await asyncio.to_thread(get, timeout)

    def close(self, errcode: int = 0, reason: str | bytes = b"") -> None:
        """Close the connection now (CONNECTION_CLOSE with ``errcode``/``reason``).

        Data not yet acknowledged may be lost: await
        :meth:`StreamWriter.wait_closed` first when it matters.
        """
        if not self._closed:
            if errcode or reason:
                try:
                    self._sock.set_close_info(errcode, reason)
                except OSError as exc:
                    log.debug("set_close_info: %s", exc)
            self._lost(ConnectionClosed("connection closed locally"))
        self._sock.close()  # also after the peer closed: the socket is still ours

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by :meth:`close`, the peer, or idle timeout)."""
        await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- I/O: reading ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._close_exc is not None:
            raise self._close_exc

    def _resume_reading(self) -> None:
        if not self._reader_on and not self._closed:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reader_on = True

    def _pause_reading(self) -> None:
        if self._reader_on:
            self._loop.remove_reader(self._fd)
            self._reader_on = False

    def _consumed(self, n: int) -> None:
        self._buffered -= n
        if (not self._reader_on and self._read_limit is not None
                and self._buffered <= self._read_limit // 2):
            self._resume_reading()
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            if self._closed or not self._reader_on:
                return
            try:
                msg = self._sock.recv_message(_RECV_SIZE, _MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(ConnectionClosed(f"connection closed: {exc.strerror or exc}",
                                            self.close_event))
                return
            try:
                self._dispatch(msg)
            except Exception:  # a bug in a dispatch path must not kill the loop
                log.exception("pyquic.aio: dispatching %r failed", msg)

    def _dispatch(self, msg: Any) -> None:
        if msg.event is not None:
            self._on_event(msg.event)
            return
        if msg.is_datagram:
            self._datagrams.append(msg.data)
            _wake(self._datagram_waiter)
            return
        sid = msg.stream_id
        if msg.level is not None or sid is None:
            return  # a post-handshake TLS message: the socket and driver handle those
        reader = self._readers.get(sid) or self._peer_stream(sid)
        if reader is None:
            return  # late data of a stream we no longer track
        if msg.data:
            self._buffered += len(msg.data)
        reader._feed(msg.data, msg.fin)
        if self._read_limit is not None and self._buffered > self._read_limit:
            self._pause_reading()

    def _maybe_release(self, sid: int) -> None:
        """Forget a stream once both halves are over (its objects keep working)."""
        r = self._readers.get(sid)
        w = self._writers.get(sid)
        if r is None or w is None:
            return
        if (r.at_eof() or r._exc is not None) and w._done():
            del self._readers[sid]
            del self._writers[sid]
            self._want_write.pop(sid, None)
            self._done_ids.add(sid)

    def _peer_stream(self, sid: int) -> StreamReader | None:
        """A stream the peer just opened: create it and queue it for accept_stream()."""
        if self._is_local(sid) or sid in self._done_ids or sid in self._readers:
            return None
        pair = self._make_stream(sid, local=False)
        self._incoming.append(pair)
        _wake(self._incoming_waiter)
        return pair[0]

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, StreamUpdateEvent):
            self._on_stream_update(ev)
        elif isinstance(ev, StreamMaxDataEvent):
            w = self._writers.get(ev.id)
            if w is not None and w._flow_blocked:
                self._flush(w)
        elif isinstance(ev, StreamMaxStreamEvent):
            waiters, self._stream_credit_waiters = self._stream_credit_waiters, []
            for fut in waiters:
                _wake(fut)
        elif isinstance(ev, ConnectionCloseEvent):
            self.close_event = ev
        if int(ev.TYPE) in self._subscribed:
            self._events.append(ev)
            _wake(self._event_waiter)

    def _on_stream_update(self, ev: StreamUpdateEvent) -> None:
        state = ev.state
        if state == StreamState.RECV_RESET_RECVD:
            r = self._readers.get(ev.id)
            if r is None:
                # A reset can overtake the stream's first data: still show the stream.
                r = self._peer_stream(ev.id)
            if r is not None:
                r._set_exception(StreamResetError(ev.id, ev.errcode, "reset by the peer"))
                self._maybe_release(ev.id)
        elif state == StreamState.SEND_RESET_SENT:
            w = self._writers.get(ev.id)
            if w is not None:
                w._clear()
                w._set_exception(StreamResetError(ev.id, ev.errcode,
                                                  "the peer asked to stop sending"))
                self._maybe_release(ev.id)
        elif state == StreamState.SEND_RECVD:
            w = self._writers.get(ev.id)
            if w is not None:
                w._set_acked()

    # -- I/O: writing ---------------------------------------------------------

    def _want_writable(self) -> None:
        if not self._writer_on and not self._closed:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writer_on = True

    def _send(self, w: StreamWriter, data: memoryview, fin: bool) -> int | None:
        """One non-blocking send; None when the socket refused (``w`` then waits)."""
        try:
            return int(self._sock.send_stream(w.stream_id, data, fin=fin,
                                              msg_flags=_MSG_DONTWAIT))
        except BlockingIOError:
            self._want_write[w.stream_id] = w
            self._want_writable()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # this stream's flow-control limit (RFC 9000 §4.1)
                w._flow_blocked = True
                w._retry = self._loop.call_later(_FLOW_RETRY, self._flush, w)
            else:
                w._set_exception(exc if self._close_exc is None else self._close_exc)
        return None

    def _write(self, w: StreamWriter, data: bytes | bytearray | memoryview) -> None:
        """``StreamWriter.write``: send straight from ``data`` when nothing is queued,
        and buffer only what the socket does not take."""
        if w.buffered or w._flow_blocked or w.stream_id in self._want_write or self._closed:
            w._buf += data
            self._flush(w)
            return
        view = memoryview(data).cast("B")
        try:
            sent = 0
            for _ in range(1 << 20):
                if sent >= len(view):
                    break
                n = self._send(w, view[sent:sent + _SEND_CHUNK], False)
                if n is None:
                    break
                sent += n
            if sent < len(view):
                w._buf += view[sent:]
        finally:
            view.release()

    def _flush(self, w: StreamWriter) -> None:
        """Hand ``w``'s buffer (then its FIN) to the socket until it refuses."""
        if w._fin_sent or w._exc is not None or self._closed:
            return
        w._flow_blocked = False
        if w._retry is not None:
            w._retry.cancel()
            w._retry = None
        for _ in range(1 << 20):
            pending = w.buffered
            if not pending and not w._eof:
                break
            fin = w._eof and pending <= _SEND_CHUNK
            view = memoryview(w._buf)
            chunk = view[w._off:w._off + _SEND_CHUNK]
            try:
                n = self._send(w, chunk, fin)
            finally:
                chunk.release()
                view.release()
            if n is None:
                return
            w._consume(n)
            if fin and n >= pending:
                w._fin_sent = True
                break
        w._wake_drain()

    def _on_writable(self) -> None:
        pending, self._want_write = self._want_write, {}
        for w in pending.values():
            self._flush(w)
        for _ in range(len(self._dgram_out)):
            try:
                self._sock.send_datagram(self._dgram_out[0], _MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("queued datagram dropped: %s", exc)
            self._dgram_out.popleft()
        if not self._want_write and not self._dgram_out and self._writer_on:
            self._loop.remove_writer(self._fd)
            self._writer_on = False

    # -- teardown -------------------------------------------------------------

    def _lost(self, exc: ConnectionClosed) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_exc = exc
        self._pause_reading()
        if self._writer_on:
            self._loop.remove_writer(self._fd)
            self._writer_on = False
        for r in self._readers.values():
            r._set_exception(exc)
        for w in self._writers.values():
            w._set_exception(exc)
        for fut in (self._incoming_waiter, self._datagram_waiter, self._event_waiter,
                    *self._stream_credit_waiters):
            _wake(fut)
        _wake(self._closed_fut)


# ---------------------------------------------------------------- opening


def _merged_tp(transport_param: TransportParam | None,
               max_datagram_frame_size: int | None) -> TransportParam | None:
    if max_datagram_frame_size is None:
        return transport_param
    base = transport_param if transport_param is not None else TransportParam()
    return dataclasses.replace(base, max_datagram_frame_size=max_datagram_frame_size)


def _prepare(sock: Any, *, transport_param: TransportParam | None,
             config: Config | None, setup: Callable[[Any], None] | None) -> None:
    if transport_param is not None:
        sock.set_transport_param(transport_param)
    if config is not None:
        sock.set_config(config)
    if setup is not None:
        setup(sock)


async def open_connection(
    host: str,
    port: int,
    *,
    alpns: str | Sequence[str] | None = None,
    hostname: str | None = None,
    cafile: PathLike | None = None,
    verify: bool = True,
    certfile: PathLike | None = None,
    keyfile: PathLike | None = None,
    psk_file: PathLike | None = None,
    session: bytes | None = None,
    early_data: bytes | None = None,
    backend: str | None = None,
    family: int = 0,
    local_addr: tuple[str, int] | None = None,
    max_datagram_frame_size: int | None = None,
    transport_param: TransportParam | None = None,
    config: Config | None = None,
    events: Iterable[EventType | int] = (),
    setup: Callable[[Any], None] | None = None,
    handshake_timeout: float = 30.0,
    read_limit: int | None = DEFAULT_READ_LIMIT,
    high_water: int = DEFAULT_HIGH_WATER,
    keylog: Any = None,
) -> Connection:
    """Connect to a QUIC server and complete the handshake; return a :class:`Connection`.

    ``alpns`` (list or comma-separated), ``hostname`` (SNI and certificate
    name; default ``host``), ``cafile``/``verify``, a client certificate
    (``certfile``/``keyfile``) and ``psk_file`` are passed to
    :func:`pyquic.tls.driver.client_handshake`, which runs in a thread.
    ``session`` (from :meth:`Connection.session_data`) resumes; with
    ``early_data`` too, that data is written before the handshake on a new
    bidirectional stream, so it travels as 0-RTT (RFC 9001 §4.6) when the
    server accepts it; the stream is then ``conn.early_stream``.
    ``max_datagram_frame_size`` (e.g. 1400) allows the peer to send
    datagrams; ``transport_param``/``config`` set those options and ``setup``
    may set any other on the socket before connect(). ``backend`` picks
    ``"kernel"`` or ``"user"`` (default: automatic, see
    :func:`pyquic.socket_api.select_backend`).
    """
    from pyquic.socket_api import socket as quic_socket
    from pyquic.tls.driver import client_handshake, restore_session

    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=_socket.SOCK_DGRAM)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"no address for {host!r}")
    fam, _, _, _, addr = infos[0]
    sock = quic_socket(fam, _socket.SOCK_DGRAM, IPPROTO_QUIC, backend=backend)
    try:
        if local_addr is not None:
            sock.bind(local_addr)
        _prepare(sock, transport_param=_merged_tp(transport_param, max_datagram_frame_size),
                 config=config, setup=setup)
        sock.connect(addr)
        early_sid: int | None = None
        if session is not None and early_data is not None:
            # The peer's remembered limits must be in place before 0-RTT data is queued.
            restore_session(sock, session)
            early_sid = sock.open_stream()
            sock.send_stream(early_sid, early_data)
        result = await asyncio.wait_for(
            asyncio.to_thread(
                client_handshake, sock, hostname if hostname is not None else host, alpns,
                cafile=cafile, verify=verify, certfile=certfile, keyfile=keyfile,
                psk_file=psk_file, session=session, timeout=handshake_timeout, keylog=keylog),
            handshake_timeout + 5.0)
        conn = Connection(sock, is_client=True, handshake=result, events=events,
                          read_limit=read_limit, high_water=high_water)
    except BaseException:
        sock.close()
        raise
    if early_sid is not None:
        conn.early_stream = conn._make_stream(early_sid, local=True)
    return conn


class Server:
    """Listening QUIC sockets that hand each handshaken connection to a callback.

    Made by :func:`start_server`. :meth:`close` stops accepting and leaves
    established connections alone (as :class:`asyncio.Server`); leaving
    ``async with server`` closes it, cancels the handshakes and callbacks
    still running and closes every connection it accepted (as
    ``asyncio.Server.close_clients``), so no socket outlives the block.
    """

    def __init__(self, listeners: list[Any], callback: ClientConnectedCallback,
                 handshake: Callable[[Any], Any], conn_kwargs: dict[str, Any],
                 accept_setup: Callable[[Any], None] | None, handshake_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.sockets = listeners
        self._callback = callback
        self._handshake = handshake
        self._conn_kwargs = conn_kwargs
        self._accept_setup = accept_setup
        self._handshake_timeout = handshake_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[Connection] = set()  # accepted and not yet released
        self._closed = False
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        for s in listeners:
            s.setblocking(False)
            self._loop.add_reader(s.fileno(), self._on_accept, s)

    def __repr__(self) -> str:
        return f"<Server sockets={[s.getsockname() for s in self.sockets]}>"

    @property
    def port(self) -> int:
        """The port of the first listening socket."""
        return int(self.sockets[0].getsockname()[1])

    def is_serving(self) -> bool:
        """True until :meth:`close`."""
        return not self._closed

    def _on_accept(self, listener: Any) -> None:
        for _ in range(64):
            if self._closed:
                return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            task = self._loop.create_task(self._serve(sock, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: Any, peer: Any) -> None:
        try:
            if self._accept_setup is not None:
                self._accept_setup(sock)
            result = await asyncio.wait_for(asyncio.to_thread(self._handshake, sock),
                                            self._handshake_timeout + 5.0)
            conn = Connection(sock, is_client=False, handshake=result, **self._conn_kwargs)
            self._conns.add(conn)
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any handshake failure drops the connection
            log.info("handshake with %s failed: %r", peer, exc)
            sock.close()
            return
        try:
            ret = self._callback(conn)
            if inspect.isawaitable(ret):
                await ret
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:
            log.exception("connection callback failed for %s", peer)
            conn.close(errcode=1, reason=b"internal error")
        if conn.is_closed:  # the callback is done with it: release the socket
            conn.close()
            self._conns.discard(conn)

    def close(self) -> None:
        """Stop listening. Established connections and handshakes in progress go on;
        leaving ``async with server`` also cancels those still running."""
        if self._closed:
            return
        self._closed = True
        for s in self.sockets:
            self._loop.remove_reader(s.fileno())
            s.close()
        _wake(self._closed_fut)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called."""
        await asyncio.shield(self._closed_fut)

    async def serve_forever(self) -> None:
        """Serve until cancelled (then close)."""
        try:
            await self.wait_closed()
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):
            conn.close()


async def start_server(
    client_connected_cb: ClientConnectedCallback,
    host: str | None,
    port: int,
    *,
    alpns: str | Sequence[str] | None = None,
    certfile: PathLike | None = None,
    keyfile: PathLike | None = None,
    psk_file: PathLike | None = None,
    cafile: PathLike | None = None,
    require_client_cert: bool = False,
    ticket_key: bytes | None = None,
    backend: str | None = None,
    family: int = 0,
    backlog: int = 128,
    reuse_port: bool = False,
    preferred_address: tuple[str, int] | None = None,
    max_datagram_frame_size: int | None = None,
    transport_param: TransportParam | None = None,
    config: Config | None = None,
    events: Iterable[EventType | int] = (),
    setup: Callable[[Any], None] | None = None,
    accept_setup: Callable[[Any], None] | None = None,
    handshake_timeout: float = 30.0,
    read_limit: int | None = DEFAULT_READ_LIMIT,
    high_water: int = DEFAULT_HIGH_WATER,
    keylog: Any = None,
) -> Server:
    """Listen on ``host``:``port`` and call ``client_connected_cb(conn)`` (a plain
    function or a coroutine function) for each connection once its handshake is done.

    ``alpns`` is set on the listener (the kernel routes incoming connections
    to the listener whose ALPN list matches, so several servers may share a
    port with different ALPNs). ``certfile``/``keyfile`` and/or ``psk_file``,
    ``cafile``/``require_client_cert`` (client certificates) and
    ``ticket_key`` go to :func:`pyquic.tls.driver.server_handshake`, run in a
    thread per connection. ``preferred_address`` makes clients migrate there
    after the handshake (RFC 9000 §9.6). ``max_datagram_frame_size``,
    ``transport_param`` and ``config`` set those options on the listener
    (and each accepted socket); ``setup(listener)`` runs before listen() and
    ``accept_setup(sock)`` on each accepted socket before its handshake.
    ``host`` None listens on all IPv4 addresses. The server has one socket per
    resolved address family.
    """
    from pyquic.socket_api import socket as quic_socket
    from pyquic.tls.driver import server_handshake

    if certfile is None and psk_file is None:
        raise ValueError("start_server needs certfile (and keyfile) or psk_file")
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host if host is not None else "0.0.0.0", port,
                                   family=family, type=_socket.SOCK_DGRAM,
                                   flags=_socket.AI_PASSIVE)
    tp = _merged_tp(transport_param, max_datagram_frame_size)
    listeners: list[Any] = []
    try:
        seen: set[Any] = set()
        for fam, _, _, _, addr in infos[:1]:  # the first address: one port, one listener
            if addr in seen:
                continue
            seen.add(addr)
            s = quic_socket(fam, _socket.SOCK_DGRAM, IPPROTO_QUIC, backend=backend)
            listeners.append(s)
            if reuse_port:
                s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            s.bind(addr)
            if alpns is not None:
                s.set_alpn(alpns)
            _prepare(s, transport_param=tp, config=config, setup=setup)
            s.listen(backlog)
    except BaseException:
        for s in listeners:
            s.close()
        raise

    def handshake(sock: Any) -> Any:
        return server_handshake(sock, certfile, keyfile, alpns=alpns, psk_file=psk_file,
                                cafile=cafile, require_client_cert=require_client_cert,
                                ticket_key=ticket_key, timeout=handshake_timeout,
                                keylog=keylog)

    def per_socket(sock: Any) -> None:
        if tp is not None:
            sock.set_transport_param(tp)
        if preferred_address is not None:  # before the handshake: the preferred_address TP
            sock.migrate(preferred_address)
        if accept_setup is not None:
            accept_setup(sock)

    conn_kwargs = {"events": tuple(events), "read_limit": read_limit, "high_water": high_water}
    return Server(listeners, client_connected_cb, handshake, conn_kwargs, per_socket,
                  handshake_timeout)
