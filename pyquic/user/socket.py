"""The user backend's QUIC socket: the kernel's socket API over UDP and the engine.

:class:`QuicSocket` reproduces what a program sees of an in-kernel
``socket(AF_INET[6], SOCK_DGRAM|SOCK_STREAM, IPPROTO_QUIC)`` (net/quic/socket.c
and protocol.c), with the method names and signatures of ``socket.socket``:

- ``connect()`` only installs the Initial keys and returns at once, like the
  kernel's ``quic_connect`` (blocking or not: there is no EINPROGRESS); the
  handshake is then driven through sendmsg/recvmsg/setsockopt by a handshake
  driver (``pyquic.tls.driver``), exactly as libquic drives a kernel socket.
- ``accept()`` returns a socket that already holds the client's Initial and
  inherits the listener's QUIC settings; it returns ``(sock, peer)``.
- ``sendmsg``/``recvmsg`` take and return the kernel's cmsgs
  (QUIC_STREAM_INFO, QUIC_HANDSHAKE_INFO) and MSG_QUIC_* flags.
- ``setsockopt``/``getsockopt`` at SOL_QUIC take the kernel's packed structs;
  ``getsockopt`` takes a buffer length or a bytes object (in/out options).
- ``fileno()`` is a readiness fd (one end of a socketpair) that is readable
  when recv/accept would not block and writable when sendmsg would not, with
  the kernel's poll semantics (net/quic/protocol.c ``quic_inet_poll``).

Blocking calls honour ``settimeout``: None blocks, 0 raises
``BlockingIOError`` (EAGAIN), a positive timeout raises ``TimeoutError`` when
it expires, as ``socket.socket`` does. MSG_DONTWAIT makes one call
non-blocking.

Deviations and extensions (documented for the lead):
- ``setsockopt(SOL_QUIC, CONNECTION_MIGRATION, value)`` also accepts an
  address tuple besides a packed sockaddr (``pack_sockaddr`` builds one).
- SOL_SOCKET/IPPROTO_IP/IPPROTO_IPV6 options are stored per socket (the UDP
  socket is shared between QUIC sockets), with SO_TYPE, SO_PROTOCOL,
  SO_DOMAIN, SO_ERROR and SO_ACCEPTCONN computed; SO_REUSEPORT lets listeners
  with the same ALPNs share a port, as in the kernel.
- A connection the engine ended (peer CONNECTION_CLOSE, idle timeout,
  stateless reset, protocol error; CLOSING/DRAINING count as closed) polls
  readable and writable and wakes every blocked call. recvmsg then raises
  ENOTCONN and sendmsg EPIPE, the kernel's errnos (socket.c
  quic_wait_for_packet / quic_wait_for_stream), with the cause in the message;
  the cause itself (the engine's ``error``: ETIMEDOUT, ECONNRESET, EPROTO) is
  reported once by SO_ERROR, where the kernel, which never sets sk_err, gives 0.
- Version Negotiation restart (client): the kernel resends the old
  ClientHello after a VN, whose version_information (RFC 9368 §4) still names
  the old version, so an RFC 9368 server refuses it. Here ``connect`` sets the
  engine's ``hold_initial_after_vn``; after a VN that switched versions the
  handshake reader gets, once, an empty message with a QUIC_HANDSHAKE_INFO
  cmsg of level INITIAL (the socket polls readable for it): the driver then
  builds a new ClientHello on a fresh ``getsockopt(TRANSPORT_PARAM_EXT)`` and
  sends it at level INITIAL, which replaces the Initial CRYPTO stream
  (``restart_initial``). ``pyquic.tls.driver`` does this; a driver unaware of it
  sees an empty handshake message and fails rather than hanging.
- ``getsockopt(SOL_QUIC, opt, buflen)`` never allocates ``buflen`` bytes (the
  kernel copies at most what it has); a length beyond a C int raises
  OverflowError as ``socket.socket`` does for such arguments.
- Corking: handshake messages read with recvmsg, CRYPTO_SECRET and
  TRANSPORT_PARAM_EXT setsockopts and ``accept`` leave what they make the
  engine send (mostly ACKs) queued, like MSG_MORE, so it leaves with the
  driver's next flight; the next flushing call, a blocking wait or the next
  I/O batch sends it. ``flush()`` (extension) sends it at once; the handshake
  driver calls it when done. getsockopt never sends by itself.
- A thread blocked in a call polls the UDP sockets itself (leader/follower,
  see pyquic.user.loop), and a control call on an established connection
  first processes what already arrived, as the kernel processes on arrival.
- Datagrams leave from the endpoint of the source address the engine names
  (``datagrams_to_send_from``), so path probes and answers on a preferred
  address use the right UDP socket.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket as _socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar

from pyquic import abi
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.kernel.typed import QuicSocketMixin
from pyquic.user import endpoint as _ep
from pyquic.user.endpoint import Addr, Endpoint, Request
from pyquic.user.loop import LOOP, Readiness

__all__ = ["QuicSocket", "pack_sockaddr", "unpack_sockaddr"]

_S = TypeVar("_S", bound="QuicSocket")

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
SOCK_DGRAM = _socket.SOCK_DGRAM
SOCK_STREAM = _socket.SOCK_STREAM
IPPROTO_QUIC = abi.IPPROTO_QUIC
SOL_QUIC = abi.SOL_QUIC

# plain ints: arithmetic on socket.MsgFlag members runs in Python (enum)
MSG_DONTWAIT = int(_socket.MSG_DONTWAIT)
MSG_PEEK = int(_socket.MSG_PEEK)
MSG_CTRUNC = int(_socket.MSG_CTRUNC)
MSG_MORE = 0x8000
MSG_BATCH = 0x40000
MSG_NOSIGNAL = int(getattr(_socket, "MSG_NOSIGNAL", 0x4000))
MSG_WAITALL = int(_socket.MSG_WAITALL)

_STREAM_NEW = int(abi.StreamFlag.NEW)
_STREAM_FIN = int(abi.StreamFlag.FIN)
_STREAM_UNI = int(abi.StreamFlag.UNI)
_STREAM_DONTWAIT = int(abi.StreamFlag.DONTWAIT)
_STREAM_SNDBLOCK = int(abi.StreamFlag.SNDBLOCK)
_MSG_DATAGRAM = int(abi.MsgFlag.DATAGRAM)
# socket.c QUIC_MSG_STREAM_FLAGS / QUIC_MSG_FLAGS
_STREAM_FLAGS = _STREAM_NEW | _STREAM_FIN | _STREAM_UNI | _STREAM_DONTWAIT | _STREAM_SNDBLOCK
_MSG_FLAGS = (
    _STREAM_FLAGS | MSG_BATCH | MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL | MSG_WAITALL | _MSG_DATAGRAM
)

_OPTLEN_MAX = 4096  # QUIC_TICKET_MAX_LEN: the largest setsockopt value
_INT_MAX = 0x7FFFFFFF
_ALPN_MAX_LEN = 128
_TP_EXT_MAX_LEN = 512
_SESSION_TICKET_MIN = 64
_STREAM_INFO_DEFAULT = abi.StreamInfo(-1, 0).pack()
# struct quic_stream_info's layout on the data path, where abi.StreamInfo's
# dataclass round trip would cost more (as abi.cmsg does)
_SINFO = abi.StreamInfo._struct
_CMSG_HDR = _socket.CMSG_LEN(0)
_SINFO_CMSG_LEN = _socket.CMSG_LEN(_SINFO.size)
_HINFO = int(abi.CmsgType.HANDSHAKE_INFO)
_SINFO_TYPE = int(abi.CmsgType.STREAM_INFO)
_DEFAULT_BUF = 212992

_CRYPTO_LEVELS = {int(v): v for v in abi.CryptoLevel}
_OPT_CRYPTO_SECRET = int(abi.SockOpt.CRYPTO_SECRET)
_CLOSED_STATES = frozenset({ConnState.CLOSED, ConnState.CLOSING, ConnState.DRAINING})
_ESTABLISHED = ConnState.ESTABLISHED  # (a global load: cheaper than the Enum attribute)
_CORKING_OPTS = frozenset({int(abi.SockOpt.CRYPTO_SECRET), int(abi.SockOpt.TRANSPORT_PARAM_EXT)})
# options that only store a setting: they never make the engine send, so the
# call neither flushes nor corks (the kernel sends nothing there either)
_QUIET_OPTS = frozenset({int(abi.SockOpt.EVENT), int(abi.SockOpt.CONNECTION_CLOSE),
                         int(abi.SockOpt.ALPN), int(abi.SockOpt.SESSION_TICKET)})

#: destinations whose route's source address is the destination itself (the
#: loopback addresses the kernel routes via ``lo`` with that source), so
#: connect() needs no probe socket to learn it
_SELF_SOURCED = frozenset({"127.0.0.1", "::1"})


def _route_source(fam: int, remote: Addr) -> str:
    """The source address the kernel's route towards ``remote`` uses (what an
    unbound UDP socket connected to it would get): a connected probe socket's
    name, or the address itself for the loopback addresses."""
    host = remote[0]
    if host in _SELF_SOURCED and (len(remote) < 4 or not remote[3]):
        return host
    with _socket.socket(fam, SOCK_DGRAM) as probe:
        probe.connect(remote)
        return str(probe.getsockname()[0])


def _err(code: int, what: str = "") -> OSError:
    return OSError(code, what or os.strerror(code))


def pack_sockaddr(addr: tuple) -> bytes:
    """A ``struct sockaddr_in`` (2-tuple) or ``sockaddr_in6`` (4-tuple) as bytes."""
    host, port = addr[0], addr[1]
    try:
        raw4 = _socket.inet_pton(AF_INET, host)
    except OSError:
        raw4 = None
    if raw4 is not None and len(addr) == 2:
        return struct.pack("=H", AF_INET) + struct.pack("!H", port) + raw4 + bytes(8)
    raw6 = _socket.inet_pton(AF_INET6, host)
    flow = addr[2] if len(addr) > 2 else 0
    scope = addr[3] if len(addr) > 3 else 0
    return (struct.pack("=H", AF_INET6) + struct.pack("!HI", port, flow) + raw6
            + struct.pack("=I", scope))


def unpack_sockaddr(buf: bytes) -> Addr:
    """The address tuple of a packed sockaddr_in / sockaddr_in6 (EINVAL if malformed)."""
    if len(buf) < 2:
        raise _err(errno.EINVAL)
    (family,) = struct.unpack_from("=H", buf)
    if family == AF_INET and len(buf) >= 16:
        (port,) = struct.unpack_from("!H", buf, 2)
        return (_socket.inet_ntop(AF_INET, bytes(buf[4:8])), port)
    if family == AF_INET6 and len(buf) >= 28:
        port, _flow = struct.unpack_from("!HI", buf, 2)
        (scope,) = struct.unpack_from("=I", buf, 24)
        return _ep.normalize_addr((_socket.inet_ntop(AF_INET6, bytes(buf[8:24])), port, 0, scope))
    raise _err(errno.EINVAL)


class QuicSocket(QuicSocketMixin):
    """A QUIC socket of the user backend (see the module docstring)."""

    def __init__(self, family: int = AF_INET, type: int = SOCK_DGRAM,
                 proto: int = IPPROTO_QUIC, *, _conn: QuicConnection | None = None) -> None:
        if family not in (AF_INET, AF_INET6):
            raise _err(errno.EAFNOSUPPORT)
        if type not in (SOCK_DGRAM, SOCK_STREAM) or proto not in (IPPROTO_QUIC, 0):
            raise _err(errno.EPROTONOSUPPORT)
        self._family = family
        self._type = type
        self._proto = IPPROTO_QUIC
        # accept() passes the server connection it built (internal)
        self._conn = QuicConnection(True) if _conn is None else _conn
        self._timeout: float | None = _socket.getdefaulttimeout()
        self._ready: Readiness | None = None  # made by fileno(): blocking users never need it
        self._cond = threading.Condition(LOOP.lock)  # this socket's waiters
        self._gen = 0  # bumped whenever waiters should look again
        self._nwait = 0  # threads blocked in a call of this socket
        self._nsend = 0  # ... of which wait for send buffer room
        self._closed = False
        self._connected = False  # hashed as a connection (connect/accept)
        self._shut = False  # shutdown(): CLOSED for the socket layer
        self._listening = False
        self._backlog = 0
        self._queue: deque[Request] = deque()
        self._alpns: list[bytes] = []
        self._endpoint: Endpoint | None = None
        self._endpoints: dict[Addr, Endpoint] = {}
        #: (engine's peer address object, endpoint, destination) of the last
        #: send with one endpoint: the next send to that object skips resolving
        self._route: tuple[Any, Endpoint, Addr] | None = None
        self._local: Addr | None = None
        self._remote: Addr | None = None
        self._odcid: bytes | None = None
        self._sockopts: dict[tuple[int, int], int | bytes] = {}
        self._error_taken = False
        self._vn_signalled = False
        self._corked = False  # the engine may hold data queued without a flush
        self._hold = False  # a corking call of this socket polls: the batch must not flush it
        with LOOP.lock:
            self._update_readiness()

    # -- socket.socket look-alike attributes --------------------------------------
    @property
    def family(self) -> _socket.AddressFamily:
        return _socket.AddressFamily(self._family)

    @property
    def type(self) -> _socket.SocketKind:
        return _socket.SocketKind(self._type)

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def backend(self) -> str:
        """Always "user" (the kernel backend's socket says "kernel")."""
        return "user"

    def fileno(self) -> int:
        """The readiness fd for select/poll/selectors/asyncio (-1 once closed)."""
        with LOOP.lock:
            if self._closed:
                return -1
            if self._ready is None:
                self._ready = Readiness()
                self._update_readiness()
            return self._ready.fileno()

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "listening" if self._listening else self._conn.state.name.lower())
        fd = -1 if self._closed or self._ready is None else self._ready.fileno()
        return (f"<pyquic.user.QuicSocket fd={fd}, family={self.family.name}, "
                f"type={self.type.name}, proto={self._proto}, state={state}, "
                f"laddr={self._local_addr()}, raddr={self._peer_addr()}>")

    def __enter__(self: _S) -> _S:  # noqa: PYI019
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(OSError):
                self.close()

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    # -- state helpers (lock held) -----------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise _err(errno.EBADF)

    def _is_closed(self) -> bool:
        """The kernel's quic_is_closed(): not connected, shut down or closed by the peer."""
        return self._shut or not self._connected or self._conn.state in _CLOSED_STATES

    def _update_readiness(self) -> None:
        ready = self._ready
        if ready is None or self._closed:
            return
        if self._listening:
            ready.set(bool(self._queue), False)
            return
        if self._is_closed():
            ready.set(True, True)
            return
        ready.set(self._conn.readable() or self._vn_restart_due(), self._conn.writable())

    def _wake(self, io: bool = False) -> None:
        """Let this socket's blocked calls look again (lock held). From the I/O
        thread (``io``) a thread waiting only for send room is woken once a third
        of the send buffer is free (a low-water mark, like TCP's sk_stream_wspace)."""
        if not self._nwait:
            return
        if io and self._nwait == self._nsend and not self._low_water():
            return
        self._gen += 1
        if LOOP.has_followers(self):  # a leader among the waiters sees _gen
            self._cond.notify_all()
        LOOP.kick(self)

    def _low_water(self) -> bool:
        c: Any = self._conn
        if self._is_closed() or c.state is not _ESTABLISHED:
            return True
        try:
            return bool(c._buffered() * 3 <= c._sndbuf() * 2)
        except AttributeError:  # an engine without these: no low-water mark
            return True

    def _poll_first(self) -> None:
        """Before a control call on an established connection: process what
        already arrived (when no thread polls), so e.g. a migration sees the
        peer's NEW_CONNECTION_IDs as the kernel's would (lock held)."""
        if self._connected and self._conn.state is _ESTABLISHED:
            LOOP.poll_now(time.monotonic(), force=True)

    def _after(self, now: float | None = None, flush: bool = True) -> None:
        """After an application call: send, re-arm timers, wake waiters."""
        if now is None:
            now = time.monotonic()
        if flush and self._connected:
            self._flush_out(now)  # re-reads the timers too
        elif self._connected:
            self._update_readiness()
            # corked: the next flushing call, wait or I/O batch sends it; not
            # the batch this call itself polls (the caller's next message,
            # e.g. the rest of its flight, would then leave in another datagram)
            self._corked = True
            LOOP.schedule(self)
            self._wake()
            self._hold = True
            try:
                LOOP.poll_now(now)
            finally:
                self._hold = False
            if self._corked:
                LOOP.mark(self)
            return
        else:
            self._update_readiness()
        self._wake()
        LOOP.poll_now(now)

    def _after_quiet(self, now: float | None = None, timers: bool = True) -> None:
        """After a call that cannot make the engine send (an option that only
        stores a setting, a read): no flush and no cork, like the kernel.
        ``timers``: the call may have moved a timer (not a stream read)."""
        if now is None:
            now = time.monotonic()
        self._update_readiness()
        if timers and self._connected:
            LOOP.schedule(self)
        self._wake()
        LOOP.poll_now(now)

    def _deadline(self, nonblock: bool) -> float | None:
        if nonblock or self._timeout == 0.0:
            return 0.0
        if self._timeout is None:
            return None
        return time.monotonic() + self._timeout

    def _wait(self, deadline: float | None, send: bool = False, flush: bool = False) -> None:
        """Wait until the I/O thread (or another call) signals this socket (lock
        held); EAGAIN / TimeoutError at the deadline. ``send``: waiting for
        send buffer room (see :meth:`_wake`)."""
        if deadline == 0.0:
            LOOP.poll_now(time.monotonic())
            raise _err(errno.EAGAIN, "Resource temporarily unavailable")
        if self._connected and (send or flush or self._corked):
            # push out what is queued (corked data too) before sleeping; any
            # other call flushed when it returned, the poller after each batch
            self._flush_out(time.monotonic())
        gen = self._gen
        self._nwait += 1
        if send:
            self._nsend += 1

        def done() -> bool:
            return self._gen != gen or self._closed

        try:
            while not done():
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out")
                # leader/follower (pyquic.user.loop): poll in this thread when
                # nobody else does, else wait to be signalled
                if LOOP.lead(self, done, deadline):
                    continue
                LOOP.follow(self)
                try:
                    self._cond.wait(left)
                finally:
                    LOOP.unfollow(self)
        finally:
            self._nwait -= 1
            if send:
                self._nsend -= 1
        self._check_open()

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Extension: block until recvmsg/accept would not block (True) or
        ``timeout`` passes (False), without a readiness fd. The handshake driver
        uses it instead of polling ``fileno()``."""
        with LOOP.lock:
            self._check_open()
            deadline = None if timeout is None else time.monotonic() + timeout
            for _ in range(1 << 30):
                if self._listening:
                    if self._queue:
                        return True
                elif (self._is_closed() or self._vn_restart_due()
                      or (self._connected and self._conn.readable())):
                    return True
                if deadline is not None and deadline - time.monotonic() <= 0:
                    return False
                try:
                    self._wait(deadline)
                except TimeoutError:
                    return False
            return False

    def _conn_error(self) -> int:
        """Why the engine ended the connection (ETIMEDOUT, ECONNRESET, EPROTO...), or 0."""
        if not self._connected or self._shut:
            return 0
        return int(getattr(self._conn, "error", 0) or 0)

    def _take_error(self) -> int:
        """SO_ERROR: the connection's errno, reported once (like sock_error())."""
        code = self._conn_error()
        if code and not self._error_taken:
            self._error_taken = True
            return code
        return 0

    def _closed_err(self, code: int) -> OSError:
        """The kernel's errno for a dead connection (ENOTCONN on receive, EPIPE on
        send: socket.c quic_wait_for_packet / quic_wait_for_send), naming the cause."""
        cause = self._conn_error()
        what = os.strerror(code)
        if cause:
            what = f"{what} (connection closed: {os.strerror(cause)})"
        return _err(code, what)

    def _local_addr(self) -> Addr | None:
        if self._connected:
            local = getattr(self._conn, "local_addr", None)
            if local:
                return _ep.normalize_addr(tuple(local))
        return self._local

    def _peer_addr(self) -> Addr | None:
        if self._connected:
            remote = getattr(self._conn, "remote_addr", None)
            if remote:
                return _ep.normalize_addr(tuple(remote))
        return self._remote

    def _resolve(self, addr: Any) -> tuple[int, Addr]:
        """(UDP family, normalised address) for a bind/connect argument."""
        if not isinstance(addr, tuple) or len(addr) < 2:
            raise TypeError(f"{self.family.name} address must be a tuple (host, port)")
        host, port = addr[0], addr[1]
        if not isinstance(port, int):
            raise TypeError("'port' must be an integer")
        if not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535.")
        if isinstance(host, bytes):
            host = host.decode()
        if self._family == AF_INET:
            if host == "":
                return AF_INET, ("0.0.0.0", port)
            try:
                _socket.inet_pton(AF_INET, host)
                return AF_INET, (host, port)
            except OSError:
                info = _socket.getaddrinfo(host, port, AF_INET, SOCK_DGRAM)
                return AF_INET, (info[0][4][0], port)
        scope = addr[3] if len(addr) > 3 else 0
        if host == "":
            return AF_INET6, ("::", port, 0, scope)
        try:
            _socket.inet_pton(AF_INET, host)
            return AF_INET, (host, port)  # AF_INET6 sockets take IPv4 addresses
        except OSError:
            pass
        try:
            _socket.inet_pton(AF_INET6, host)
        except OSError:
            info = _socket.getaddrinfo(host, port, 0, SOCK_DGRAM)
            v6 = [i for i in info if i[0] == AF_INET6]
            pick = (v6 or info)[0]
            if pick[0] == AF_INET:
                return AF_INET, (pick[4][0], port)
            host = pick[4][0]
        norm = _ep.normalize_addr((host, port, 0, scope))
        return _ep.addr_family(norm), norm

    # -- loop callbacks (lock held) ------------------------------------------------
    def _io_cids(self) -> set[bytes]:
        cids = set(self._conn.source_cids())
        if self._odcid:
            cids.add(self._odcid)
        return cids

    def _io_datagram(self, data: bytes, remote: Addr, local: Addr, now: float) -> None:
        if self._closed:
            return
        self._conn.receive_datagram(data, remote, local, now)
        LOOP.mark(self)

    def _io_datagrams(self, datagrams: list[bytes], remote: Addr, local: Addr,
                      now: float) -> None:
        """Several datagrams from one peer, in order (a GRO batch)."""
        if self._closed:
            return
        self._conn.receive_datagrams(datagrams, remote, local, now)
        LOOP.mark(self)

    def _io_is_reset(self, token: bytes) -> bool:
        dest = getattr(self._conn, "dest", None)
        return bool(dest is not None and not self._closed and dest.is_stateless_reset(token))

    def _io_conn(self) -> QuicConnection:
        return self._conn

    def _io_next_timer(self) -> float | None:
        if self._closed or not self._connected:
            return None
        return self._conn.next_timer()

    def _io_timer(self, now: float) -> None:
        if not self._closed and self._connected:
            self._conn.handle_timer(now)

    def _io_flush(self, now: float) -> None:
        """The poller's flush after a batch; held while a corking call of this
        socket polls (see :meth:`_after`)."""
        if self._hold or self._closed or not self._connected:
            return
        self._flush(now)

    def _flush_out(self, now: float) -> None:
        """Send what the engine has now (the socket's own calls)."""
        if self._closed or not self._connected:
            return
        self._flush(now)

    def _io_defer_flush(self, now: float) -> bool:
        """The leader polling for this socket may leave its flush to the caller
        it returns to, when something became readable and nobody waits for
        send room: during the handshake (the driver answers at once, so the
        ACKs share its flight) and, once established, when nothing is due now
        (a reply takes the ACK along; the loop settles the socket, see
        :meth:`_io_settle`, before anyone sleeps). Lock held."""
        conn = self._conn
        if self._nsend or not (self._connected and conn.readable()):
            return False
        if conn.state is _ESTABLISHED:
            if conn.output_due(now):
                return False
        else:
            self._corked = True
        self._update_readiness()
        return True

    def _io_settle(self, now: float) -> None:
        """After a deferred flush, before a poller sleeps: send what the engine's
        deferred receive work queued (the loop then re-reads the timers)."""
        if self._hold or self._closed or not self._connected:
            return
        if self._conn.has_output(now):
            self._flush(now)
        else:
            self._update_readiness()
        if self._conn.readable():  # e.g. a stream event of the settled ACK
            self._wake()

    def _io_wake(self) -> None:
        if self._nwait:
            self._wake(io=True)

    def flush(self) -> None:
        """Extension: send what corked calls left queued (MSG_MORE data, the
        ACKs of handshake messages); the handshake driver calls it when done."""
        with LOOP.lock:
            if not self._closed and self._connected:
                self._after()

    def _flush(self, now: float) -> None:
        self._corked = False
        conn: Any = self._conn
        for _ in range(2):
            self._send_out(conn, now)
            # the engine's deferred ACK bookkeeping, after the datagrams left
            # (off the round trip's path); a retransmission it queued goes now
            if not conn.settle():
                break
        # the timers (re-armed lazily by the engine) after the datagrams left
        LOOP.schedule(self)
        self._update_readiness()

    def _send_out(self, conn: Any, now: float) -> None:
        sender = getattr(conn, "datagrams_to_send_from", None)
        # (datagram, destination[, source]): with the source, each datagram leaves
        # from the endpoint of that address (path probes, preferred address)
        items = sender(now) if sender is not None else conn.datagrams_to_send(now)
        if not items:
            return
        route = self._route
        if route is not None and len(items) == 1 and items[0][1] is route[0] \
                and route[1] is self._endpoint and len(self._endpoints) == 1:
            # the reply of a request/response exchange: the peer's address
            # object as last time, and one endpoint (which is then the source)
            route[1].sendto(items[0][0], route[2])
            return
        ep = self._endpoint
        local = getattr(self._conn, "local_addr", None)
        if local and len(self._endpoints) > 1:
            # the engine switches the local address at once on migration
            ep = self._endpoints.get(_ep.normalize_addr(tuple(local)), ep)
        base = ep
        run: list[bytes] = []  # consecutive datagrams to one peer: one GSO send
        run_ep: Endpoint | None = None
        run_dest: Addr | None = None
        last_addrs: tuple[Any, Any] | None = None
        dest: Addr = ()
        for item in items:
            data, remote = item[0], item[1]
            src = item[2] if len(item) > 2 else None
            if last_addrs is None or remote is not last_addrs[0] or src is not last_addrs[1]:
                # a run of datagrams shares its address objects: resolve once
                last_addrs = (remote, src)
                ep = base
                if src is not None:
                    ep = self._endpoints.get(_ep.normalize_addr(tuple(src)), base)
                dest = _ep.normalize_addr(tuple(remote))
                if ep is not None and len(dest) != len(ep.local) and (
                        ep.family == AF_INET or ep.local[0] != "::"):
                    # another family (e.g. a preferred address): only a dual-stack
                    # wildcard socket reaches it, else use (or bind) one of its family
                    ep = self._endpoint_towards(dest)
                self._route = (remote, ep, dest) if (
                    ep is not None and ep is self._endpoint
                    and len(self._endpoints) == 1) else None
            if ep is None:
                continue
            if ep is not run_ep or dest != run_dest:
                if run and run_ep is not None and run_dest is not None:
                    run_ep.send_many(run, run_dest)
                run = []
                run_ep, run_dest = ep, dest
            run.append(data)
        if run and run_ep is not None and run_dest is not None:
            run_ep.send_many(run, run_dest)

    def _endpoint_towards(self, dest: Addr) -> Endpoint | None:
        """An endpoint of ``dest``'s family, bound to the route's source address."""
        fam = _ep.addr_family(dest)
        for ep in self._endpoints.values():
            if ep.family == fam:
                return ep
        try:
            src = _route_source(fam, dest)
            local: Addr = (src, 0) if fam == AF_INET else (src, 0, 0, 0)
            ep = _ep.acquire(fam, local)
        except OSError:
            return None
        self._endpoints[ep.local] = ep
        ep.add_member(self)
        return ep

    def _io_alpns(self) -> list[bytes]:
        return self._alpns

    def _io_reuseport(self) -> bool:
        return bool(self._sockopts.get((_socket.SOL_SOCKET, getattr(_socket, "SO_REUSEPORT", 15))))

    def _io_offer(self, req: Request) -> bool:
        # sk_acceptq_is_full(): more than backlog requests refuse (socket.c).
        if self._closed or not self._listening or len(self._queue) > self._backlog:
            return False
        self._queue.append(req)
        self._update_readiness()
        LOOP.wake_later(self)
        return True

    def _add_endpoint(self, ep: Endpoint) -> None:
        self._endpoints[ep.local] = ep
        if self._endpoint is None:
            self._endpoint = ep
            self._local = ep.local

    # -- connection set-up ------------------------------------------------------------
    def bind(self, address: tuple) -> None:
        """Bind the local address (EINVAL if already bound)."""
        fam, addr = self._resolve(address)
        with LOOP.lock:
            self._check_open()
            if self._endpoint is not None:
                raise _err(errno.EINVAL)
            self._add_endpoint(_ep.acquire(fam, addr))

    def connect(self, address: tuple) -> None:
        """Install the Initial keys for ``address``; returns at once (socket.c quic_connect)."""
        fam, remote = self._resolve(address)
        with LOOP.lock:
            self._check_open()
            if self._connected or self._listening:
                raise _err(errno.EINVAL)
            if self._endpoint is None:
                src = _route_source(fam, remote)
                local: Addr = (src, 0) if fam == AF_INET else (src, 0, 0, 0)
                self._add_endpoint(_ep.acquire(fam, local))
            ep = self._endpoint
            assert ep is not None
            now = time.monotonic()
            # after a Version Negotiation the driver sends a new ClientHello
            # (see "Version Negotiation restart" in the module docstring)
            self._conn.hold_initial_after_vn = True
            # the preferred address is chosen by the socket's family (family.c)
            self._conn.family = self.family
            self._conn.connect(remote, ep.local, now)
            self._remote = remote
            self._connected = True
            for e in self._endpoints.values():
                e.add_member(self)
            LOOP.add_client(self)
            # the Initial keys alone send nothing: the ClientHello comes with sendmsg
            self._after_quiet(now)

    def connect_ex(self, address: tuple) -> int:
        """connect() returning an errno instead of raising."""
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0

    def listen(self, backlog: int | None = None) -> None:
        """Start (or, with backlog 0, stop) listening; protocol.c quic_inet_listen."""
        if backlog is None:
            backlog = min(_socket.SOMAXCONN, 128)
        backlog = max(0, backlog)
        with LOOP.lock:
            self._check_open()
            if not backlog:
                if self._listening:
                    self._stop_listening()
                    self._update_readiness()
                    self._wake()
                    return
                raise _err(errno.EINVAL)
            if self._connected:
                raise _err(errno.EINVAL)
            if self._listening:
                self._backlog = backlog
                return
            if self._endpoint is None:
                wild: Addr = ("0.0.0.0", 0) if self._family == AF_INET else ("::", 0, 0, 0)
                self._add_endpoint(_ep.acquire(self._family, wild))
            ep = self._endpoint
            assert ep is not None
            server = QuicConnection(False)
            server.inherit(self._conn)
            server.listen()
            alpn = server.get_alpn()
            self._alpns = [a.encode() for a in alpn.split(",") if a] if alpn else []
            ep.add_listener(self)
            self._conn = server
            self._listening = True
            self._backlog = backlog
            self._update_readiness()

    def _stop_listening(self) -> None:
        self._listening = False
        for ep in self._endpoints.values():
            ep.remove_listener(self)
        for req in self._queue:
            req.drop()
        self._queue.clear()

    def accept(self) -> tuple[QuicSocket, Addr]:
        """Take the next connection: a socket holding the client's Initial, and its address."""
        with LOOP.lock:
            self._check_open()
            if not self._listening:
                raise _err(errno.EINVAL)
            deadline = self._deadline(False)
            while not self._queue:
                self._wait(deadline)
                if not self._listening:
                    raise _err(errno.EINVAL)
            req = self._queue.popleft()
            req.drop()
            conn = QuicConnection(False)
            conn.inherit(self._conn)
            child = QuicSocket(self._family, self._type, self._proto, _conn=conn)
            child._sockopts = dict(self._sockopts)
            ep = req.endpoint
            ep.refs += 1
            child._add_endpoint(ep)
            child._remote = req.remote
            child._odcid = req.dcid
            now = time.monotonic()
            try:
                conn.accept(req.datagrams[0], req.remote, req.local, now)
                for data in req.datagrams[1:]:
                    conn.receive_datagram(data, req.remote, req.local, now)
            except BaseException:
                child.close()
                raise
            child._connected = True
            ep.add_member(child)
            LOOP.add_client(child)
            # the ACK of the Initial waits (corked) for the server's first
            # flight, which the handshake driver sends right away
            child._after(now, flush=False)
            self._update_readiness()
            return child, child._peer_addr() or req.remote

    def getsockname(self) -> Addr:
        """The local address (follows migrations); IPv4 as a 2-tuple."""
        with LOOP.lock:
            self._check_open()
            local = self._local_addr()
            if local is None:
                return ("0.0.0.0", 0) if self._family == AF_INET else ("::", 0, 0, 0)
            return local

    def getpeername(self) -> Addr:
        """The peer's address (follows migrations); ENOTCONN when not connected."""
        with LOOP.lock:
            self._check_open()
            peer = self._peer_addr()
            if peer is None or not self._connected:
                raise _err(errno.ENOTCONN)
            return peer

    def shutdown(self, how: int) -> None:
        """SHUT_WR/SHUT_RDWR send the close; the socket is CLOSED after (socket.c quic_shutdown)."""
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise _err(errno.EINVAL)
        with LOOP.lock:
            self._check_open()
            if self._listening:
                if how != _socket.SHUT_WR:
                    raise _err(errno.EOPNOTSUPP)
                return
            was_closed = self._is_closed()
            if self._connected and not was_closed and how != _socket.SHUT_RD:
                now = time.monotonic()
                self._conn.close(now)
                self._flush_out(now)
            self._shut = True
            self._update_readiness()
            self._wake()
            if was_closed and not self._connected:
                raise _err(errno.ENOTCONN)

    def close(self) -> None:
        """Send the close (with the CONNECTION_CLOSE option's info) and free everything."""
        with LOOP.lock:
            if self._closed:
                return
            if self._listening:
                self._stop_listening()
            if self._connected and not self._is_closed():
                now = time.monotonic()
                try:
                    self._conn.close(now)
                    self._flush_out(now)
                except OSError:
                    pass
            self._closed = True
            for ep in list(self._endpoints.values()):
                ep.remove_member(self)
                _ep.release(ep)
            self._endpoints.clear()
            self._endpoint = None
            LOOP.remove_client(self)
            if self._ready is not None:
                self._ready.close()
            self._wake()
        LOOP.join_stopped()

    def detach(self) -> int:
        raise _err(errno.EOPNOTSUPP)

    # -- data path --------------------------------------------------------------------
    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[tuple[int, int, Any]] = (),
                flags: int = 0, address: Any = None) -> int:
        """Send handshake, stream or datagram data with the kernel's cmsgs and flags."""
        if type(buffers) is list and len(buffers) == 1 and type(buffers[0]) is bytes:
            data = buffers[0]  # the usual call: no copy
        else:
            data = b"".join(b if isinstance(b, bytes) else bytes(b) for b in buffers)
        if flags & ~_MSG_FLAGS:
            raise _err(errno.EINVAL)
        with LOOP.lock:
            self._check_open()
            if self._listening or self._is_closed():
                raise self._closed_err(errno.EPIPE)
            has_sinfo = has_hinfo = False
            level = 0
            sid, sflags = -1, 0
            for clevel, ctype, cdata in ancdata:
                if clevel != SOL_QUIC:
                    continue
                if type(cdata) is not bytes:
                    cdata = bytes(cdata)
                if ctype == _SINFO_TYPE:
                    if len(cdata) < 16:
                        cdata = cdata + _STREAM_INFO_DEFAULT[len(cdata):]
                    sid, sflags = _SINFO.unpack_from(cdata)
                    if sflags & ~_STREAM_FLAGS:
                        raise _err(errno.EINVAL)
                    has_sinfo = True
                elif ctype == _HINFO:
                    level = cdata[0] if cdata else 0
                    has_hinfo = True
                else:
                    raise _err(errno.EINVAL)
            flush = not flags & MSG_MORE
            if has_hinfo:
                return self._send_handshake(level, data, flags, flush)
            if flags & _MSG_DATAGRAM:
                return self._send_datagram(data, flags, flush)
            if not has_sinfo:
                sflags = flags & _STREAM_FLAGS
            return self._send_stream(sid, sflags, flags, has_sinfo, data, flush)

    def _vn_restart_due(self) -> bool:
        """A Version Negotiation wants a new ClientHello the driver was not told of."""
        return (not self._vn_signalled and self._connected
                and bool(getattr(self._conn, "initial_restart_pending", False)))

    def _send_handshake(self, level: int, data: bytes, flags: int, flush: bool) -> int:
        if level >= abi.CryptoLevel.EARLY:
            raise _err(errno.EINVAL)
        if level == abi.CryptoLevel.INITIAL and getattr(
                self._conn, "initial_restart_pending", False):
            self._conn.restart_initial(data)  # the new ClientHello replaces the old
            self._after(flush=flush)
            return len(data)
        deadline = self._deadline(bool(flags & MSG_DONTWAIT))
        while True:
            try:
                lv = _CRYPTO_LEVELS.get(level)
                self._conn.send_handshake(abi.CryptoLevel(level) if lv is None else lv, data)
                break
            except BlockingIOError:
                self._wait(deadline, flush=True)
                if self._is_closed():
                    raise self._closed_err(errno.EPIPE) from None
        self._after(flush=flush)
        return len(data)

    def _send_datagram(self, data: bytes, flags: int, flush: bool) -> int:
        deadline = self._deadline(bool(flags & MSG_DONTWAIT))
        while True:
            try:
                self._conn.send_datagram(data)
                break
            except BlockingIOError:
                self._wait(deadline, flush=True)
                if self._is_closed():
                    raise self._closed_err(errno.EPIPE) from None
        self._after(flush=flush)
        return len(data)

    def _send_stream(self, sid: int, sflags: int, flags: int, has_sinfo: bool, data: bytes,
                     flush: bool) -> int:
        cur = sflags | (flags & ~_STREAM_FLAGS)
        deadline = self._deadline(bool(flags & MSG_DONTWAIT))
        sent = 0
        total = len(data)
        try:
            while True:
                try:
                    n = self._conn.send_stream(sid, data[sent:] if sent else data,
                                               cur, has_sinfo)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.ENOSPC):
                        raise
                    if sent:
                        if deadline == 0.0:
                            return sent
                    elif (exc.errno == errno.EAGAIN and sflags & _STREAM_DONTWAIT
                          and self._conn.writable()):
                        raise  # beyond the peer's stream limit, DONTWAIT (socket.c)
                    elif deadline == 0.0:
                        raise
                    try:
                        self._wait(deadline, send=True)
                    except TimeoutError:
                        if sent:
                            return sent
                        raise
                    if self._is_closed():
                        if sent:
                            return sent
                        raise self._closed_err(errno.EPIPE) from None
                    continue
                sent += n
                cur &= ~_STREAM_NEW
                if sent >= total:
                    return sent
                if deadline == 0.0:
                    return sent
                try:
                    self._wait(deadline, send=True)
                except TimeoutError:
                    return sent
        finally:
            self._after(flush=flush)

    def send(self, data: Any, flags: int = 0) -> int:
        """sendmsg() of one buffer without cmsg (stream flags taken from ``flags``)."""
        return self.sendmsg([data], (), flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """send() until every byte is queued."""
        view = memoryview(bytes(data))
        total = len(view)
        sent = self.send(view, flags)
        for _ in range(1 << 30):
            if sent >= total:
                return
            sent += self.send(view[sent:], flags & ~_STREAM_NEW)

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        """send(); the address is ignored, as the kernel ignores msg_name."""
        flags = flags_or_addr if addr is not None else 0
        return self.send(data, flags)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0,
                flags: int = 0) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """Receive one handshake message, stream chunk, datagram or event (socket.c quic_recvmsg)."""
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if ancbufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        with LOOP.lock:
            self._check_open()
            if self._listening:
                raise _err(errno.ENOTCONN)
            deadline = self._deadline(bool(flags & MSG_DONTWAIT))
            peek = bool(flags & MSG_PEEK)
            while True:
                # (only a handshake restarts after Version Negotiation)
                if self._conn.state is not _ESTABLISHED and self._vn_restart_due():
                    if not peek:
                        self._vn_signalled = True
                    self._after(flush=False)
                    restart = abi.HandshakeInfo(int(abi.CryptoLevel.INITIAL)).pack()
                    anc0: list[tuple[int, int, bytes]] = []
                    mf = self._put_cmsg(anc0, ancbufsize, abi.CmsgType.HANDSHAKE_INFO, restart)
                    return b"", anc0, mf, None
                item = self._conn.recv(bufsize, peek) if self._connected else None
                if item is not None:
                    break
                if self._is_closed():
                    raise self._closed_err(errno.ENOTCONN)
                self._wait(deadline)
            if item.stream_id is not None:
                now = time.monotonic()
                if self._conn.read_output:  # the read's MAX_STREAM_DATA, MAX_DATA
                    self._conn.read_output = False
                    self._after(now)
                else:
                    # the usual read: nothing to send, no timer moved (the
                    # batch the read's data came in settles the timers)
                    self._after_quiet(now, timers=False)
            else:
                # a handshake message leaves the ACKs it causes corked: the
                # driver answers at once (secrets, then its flight), so they
                # share its datagrams; its next wait or send flushes them
                self._after(flush=not item.level)
        msg_flags = item.msg_flags
        if item.stream_id is not None:
            payload = _SINFO.pack(item.stream_id, item.stream_flags)
            if ancbufsize >= _SINFO_CMSG_LEN:  # the usual buffer: the whole cmsg fits
                return item.data, [(SOL_QUIC, _SINFO_TYPE, payload)], msg_flags, None
            anc: list[tuple[int, int, bytes]] = []
            msg_flags |= self._put_cmsg(anc, ancbufsize, _SINFO_TYPE, payload)
            if msg_flags & MSG_CTRUNC:
                msg_flags |= item.stream_flags
            return item.data, anc, msg_flags, None
        anc = []
        if item.level:
            payload = abi.HandshakeInfo(int(item.level)).pack()
            msg_flags |= self._put_cmsg(anc, ancbufsize, _HINFO, payload)
        return item.data, anc, msg_flags, None

    @staticmethod
    def _put_cmsg(anc: list[tuple[int, int, bytes]], space: int, ctype: int,
                  payload: bytes) -> int:
        """Append a cmsg as the kernel's put_cmsg() would fit it in ``space`` bytes."""
        if space < _CMSG_HDR:
            return MSG_CTRUNC
        need = _SINFO_CMSG_LEN if len(payload) == _SINFO.size else \
            _socket.CMSG_LEN(len(payload))
        if space < need:
            anc.append((SOL_QUIC, ctype, payload[: space - _CMSG_HDR]))
            return MSG_CTRUNC
        anc.append((SOL_QUIC, ctype, payload))
        return 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """recvmsg() data only."""
        return self.recvmsg(bufsize, 0, flags)[0]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """recv() into a writable buffer."""
        view = memoryview(buffer).cast("B")
        size = nbytes or len(view)
        data = self.recv(size, flags)
        view[: len(data)] = data
        return len(data)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        """recv() with the (absent) source address."""
        return self.recv(bufsize, flags), None

    # -- options ------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        """Set an option; SOL_QUIC values are the kernel's packed structs (or an int)."""
        if level != SOL_QUIC:
            with LOOP.lock:
                self._check_open()
                self._sockopts[(level, optname)] = value if value is not None else 0
            return
        if value is None:
            buf = b""
        elif isinstance(value, int) and not isinstance(value, bool):
            buf = struct.pack("=i", value)
        elif isinstance(value, tuple):
            buf = pack_sockaddr(value)
        else:
            buf = bytes(value)
        if optlen is not None:
            buf = buf[:optlen]
        if len(buf) > _OPTLEN_MAX:
            raise _err(errno.EINVAL)
        with LOOP.lock:
            self._check_open()
            self._poll_first()
            try:
                self._set_quic(optname, buf)
            finally:
                if optname in _QUIET_OPTS:
                    self._after_quiet()
                else:
                    # handshake keys and parameters cork like a handshake message
                    self._after(flush=optname not in _CORKING_OPTS)

    def _set_quic(self, opt: int, buf: bytes) -> None:
        c = self._conn
        if opt == _OPT_CRYPTO_SECRET:  # the frequent one (4 per handshake) first
            c.set_crypto_secret(abi.CryptoSecret.unpack_prefix(buf))
            return
        O = abi.SockOpt
        if opt == O.EVENT:
            e = abi.EventOption.unpack_prefix(buf)
            if not e.type or e.type >= len(abi.EventType):
                raise _err(errno.EINVAL)
            c.set_event(abi.EventType(e.type), bool(e.on))
        elif opt == O.STREAM_RESET:
            info = abi.ErrInfo.unpack_prefix(buf)
            c.stream_reset(info.stream_id, info.errcode)
        elif opt == O.STREAM_STOP_SENDING:
            info = abi.ErrInfo.unpack_prefix(buf)
            c.stream_stop_sending(info.stream_id, info.errcode)
        elif opt == O.CONNECTION_ID:
            c.set_connection_id(abi.ConnectionIdInfo.unpack_prefix(buf))
        elif opt == O.CONNECTION_CLOSE:
            size = abi.ConnectionClose.SIZE - 1  # the phrase keeps its NUL
            c.set_close_info(abi.ConnectionClose.unpack_prefix(buf[:size]))
        elif opt == O.CONNECTION_MIGRATION:
            self._migrate(buf)
        elif opt == O.KEY_UPDATE:
            c.key_update()
        elif opt == O.TRANSPORT_PARAM:
            c.set_transport_param(abi.TransportParam.unpack_prefix(buf))
        elif opt == O.CONFIG:
            c.set_config(abi.Config.unpack_prefix(buf))
        elif opt == O.TOKEN:
            c.set_token(buf)
        elif opt == O.ALPN:
            if not buf or len(buf) > _ALPN_MAX_LEN or self._listening:
                raise _err(errno.EINVAL)
            c.set_alpn(buf.split(b"\0", 1)[0].decode("latin-1"))
        elif opt == O.SESSION_TICKET:
            if len(buf) < _SESSION_TICKET_MIN:
                raise _err(errno.EINVAL)
            c.set_session_ticket(buf)
        elif opt == O.TRANSPORT_PARAM_EXT:
            if len(buf) > _TP_EXT_MAX_LEN:
                raise _err(errno.EINVAL)
            c.set_transport_param_ext(buf)
        else:
            raise _err(errno.ENOPROTOOPT, "Protocol not available")

    def _migrate(self, buf: bytes) -> None:
        """CONNECTION_MIGRATION: bind the new local address, then let the engine migrate."""
        addr = unpack_sockaddr(buf)
        if self._family == AF_INET and len(addr) != 2:
            raise _err(errno.EINVAL)
        if not addr[1]:
            raise _err(errno.EINVAL)
        if self._listening or self._is_closed():
            raise _err(errno.EPIPE, "Broken pipe")
        local = _ep.normalize_addr(addr)
        if local in self._endpoints:
            ep: Endpoint | None = None
        else:
            ep = _ep.acquire(_ep.addr_family(local), local)
        try:
            self._conn.migrate(local)
        except BaseException:
            if ep is not None:
                _ep.release(ep)
            raise
        if ep is not None:
            self._endpoints[ep.local] = ep
            ep.add_member(self)

    def getsockopt(self, level: int, optname: int, buflen: int | bytes | bytearray | None = None
                   ) -> int | bytes:
        """Get an option; for SOL_QUIC ``buflen`` may be the in/out buffer itself."""
        if level != SOL_QUIC:
            return self._get_other(level, optname, buflen)
        as_int = buflen is None or (isinstance(buflen, int) and buflen == 0)
        if buflen is None or as_int:
            inbuf = bytes(4)
            n = 4
        elif isinstance(buflen, int):
            # socket.c: the length is a C int (negative: EINVAL) and the kernel
            # copies at most what it has, so never allocate the caller's size
            if buflen > _INT_MAX:
                raise OverflowError("getsockopt buflen does not fit a C int")
            if buflen < 0:
                raise _err(errno.EINVAL)
            n = buflen
            inbuf = bytes(min(buflen, _OPTLEN_MAX))
        else:
            inbuf = bytes(buflen)
            n = len(inbuf)
        with LOOP.lock:
            self._check_open()
            self._poll_first()
            try:
                out = self._get_quic(optname, inbuf, n)
            finally:
                if optname == abi.SockOpt.STREAM_OPEN:
                    # a stream limit hit may queue STREAMS_BLOCKED
                    self._after(flush=not self._corked)
                else:
                    self._after_quiet()  # reading sends nothing new
        if as_int:
            return int.from_bytes(out[:4].ljust(4, b"\0"), "little", signed=True)
        return out

    def _get_quic(self, opt: int, inbuf: bytes, n: int) -> bytes:
        """One SOL_QUIC option; ``inbuf`` holds the caller's input (at most
        _OPTLEN_MAX bytes of it), ``n`` is the caller's buffer length."""
        c = self._conn
        O = abi.SockOpt
        if opt == O.EVENT:
            e = abi.EventOption.unpack_prefix(inbuf)
            if not e.type or e.type >= len(abi.EventType):
                raise _err(errno.EINVAL)
            on = c.get_event(abi.EventType(e.type))
            return abi.EventOption(e.type, int(bool(on))).pack()[: min(n, abi.EventOption.SIZE)]
        if opt == O.STREAM_OPEN:
            return self._stream_open(inbuf)
        if opt == O.CONNECTION_ID:
            want = abi.ConnectionIdInfo.unpack_prefix(inbuf)
            info = c.get_connection_id(bool(want.dest))
            info.dest = want.dest
            return info.pack()[: min(n, abi.ConnectionIdInfo.SIZE)]
        if opt == O.CONNECTION_CLOSE:
            return c.get_close_info().pack()[: min(n, abi.ConnectionClose.SIZE)]
        if opt == O.TRANSPORT_PARAM:
            want_p = abi.TransportParam.unpack_prefix(inbuf)
            p = c.get_transport_param(bool(want_p.remote))
            return p.pack()[: min(n, abi.TransportParam.SIZE)]
        if opt == O.CONFIG:
            return c.get_config().pack()[: min(n, abi.Config.SIZE)]
        if opt == O.ALPN:
            alpn = c.get_alpn()
            if not alpn:
                return b""
            names = [a for a in alpn.split(",") if a]
            wire_len = sum(len(a) + 1 for a in names)
            if n < wire_len:
                raise _err(errno.EINVAL)
            return ",".join(names).encode("latin-1")
        if opt == O.TOKEN:
            token = c.get_token()
            if n < len(token):
                raise _err(errno.EINVAL)
            return token
        if opt == O.SESSION_TICKET:
            if self._listening:
                raise _err(errno.EPIPE, "Broken pipe")
            ticket = c.get_session_ticket()
            if n < len(ticket):
                raise _err(errno.EINVAL)
            return ticket
        if opt == O.TRANSPORT_PARAM_EXT:
            ext = c.get_transport_param_ext()
            if n < len(ext):
                raise _err(errno.EINVAL)
            return ext
        raise _err(errno.ENOPROTOOPT, "Protocol not available")

    def _stream_open(self, inbuf: bytes) -> bytes:
        """STREAM_OPEN (socket.c quic_sock_stream_open): waits on the stream limit
        unless MSG_QUIC_STREAM_DONTWAIT or a non-blocking socket."""
        if self._listening or self._is_closed():
            raise _err(errno.EPIPE, "Broken pipe")
        size = min(len(inbuf), abi.StreamInfo.SIZE)
        info = abi.StreamInfo.unpack_prefix(inbuf[:size])
        if info.stream_flags & ~_STREAM_FLAGS:
            raise _err(errno.EINVAL)
        nonblock = bool(info.stream_flags & _STREAM_DONTWAIT) or self._timeout is not None
        deadline = 0.0 if nonblock else None
        while True:
            try:
                sid = self._conn.stream_open(info.stream_id, info.stream_flags)
                break
            except BlockingIOError:
                self._wait(deadline)
                if self._is_closed():
                    raise self._closed_err(errno.EPIPE) from None
        return abi.StreamInfo(sid, info.stream_flags | _STREAM_NEW).pack()[:size]

    def _get_other(self, level: int, optname: int, buflen: Any) -> int | bytes:
        with LOOP.lock:
            self._check_open()
            value: Any
            if level == _socket.SOL_SOCKET and optname == _socket.SO_TYPE:
                value = self._type
            elif level == _socket.SOL_SOCKET and optname == getattr(_socket, "SO_PROTOCOL", 38):
                value = self._proto
            elif level == _socket.SOL_SOCKET and optname == getattr(_socket, "SO_DOMAIN", 39):
                value = self._family
            elif level == _socket.SOL_SOCKET and optname == _socket.SO_ERROR:
                value = self._take_error()
            elif level == _socket.SOL_SOCKET and optname == _socket.SO_ACCEPTCONN:
                value = int(self._listening)
            elif (level, optname) in self._sockopts:
                value = self._sockopts[(level, optname)]
            elif level == _socket.SOL_SOCKET and optname in (_socket.SO_RCVBUF,
                                                             _socket.SO_SNDBUF):
                value = _DEFAULT_BUF
            elif level == _socket.SOL_SOCKET:
                value = 0
            else:
                raise _err(errno.ENOPROTOOPT, "Protocol not available")
        if isinstance(value, (bytes, bytearray)):
            raw = bytes(value)
        else:
            if not buflen:
                return int(value)
            raw = struct.pack("=i", int(value))
        if not buflen:
            return int.from_bytes(raw[:4].ljust(4, b"\0"), "little", signed=True)
        size = buflen if isinstance(buflen, int) else len(buflen)
        return raw[:size]
