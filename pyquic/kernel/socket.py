"""The kernel backend: a ``socket.socket`` over a real IPPROTO_QUIC fd.

``KernelSocket`` *is* a standard-library socket (a subclass), so every call
(bind, listen, connect, accept, sendmsg, recvmsg, settimeout, fileno with
select/selectors/asyncio, makefile...) goes straight to the kernel module with
the stdlib's signatures and errors. It changes four things only:

* ``accept()`` returns a ``KernelSocket``, not a plain socket.
* ``getsockopt(SOL_QUIC, opt, buf)`` also takes a bytes object as an in/out
  buffer (its length is the buffer size), and any SOL_QUIC read goes through
  libc ``getsockopt`` via cffi (``pyquic.abi.libc``) with a zeroed buffer:
  CPython's own getsockopt passes an uninitialised buffer to options that read
  input (STREAM_OPEN, EVENT, CONNECTION_ID, TRANSPORT_PARAM) and caps the size
  at 1024 bytes (session tickets reach 4096).
* The typed helpers of ``pyquic.kernel.typed.QuicSocketMixin`` are mixed in
  (``open_stream``, ``send_stream``, ``recv_message``, option getters/setters).
* ``send``/``sendmsg``/``sendall`` on a socket with a timeout try at once and
  retry EAGAIN and ENOSPC (a stream at its flow-control limit) until the
  timeout, except where the caller asked not to wait (MSG_DONTWAIT or the
  stream DONTWAIT flag): see the notes at ``_send_timed``.

``recvmsg(bufsize, ancbufsize, flags)`` keeps the stdlib signature: pass at
least ``pyquic.abi.cmsg.STREAM_INFO_CMSG_SPACE`` (``CMSG_SPACE(16)`` = 32)
ancillary bytes to learn the stream id and FIN; with less, the kernel truncates
the cmsg (MSG_CTRUNC) and ORs FIN into ``msg_flags``. ``recv_message()`` always
passes enough.
"""

from __future__ import annotations

import errno
import functools
import math
import select
import socket as _socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pyquic.abi import libc as _libc
from pyquic.abi.cmsg import unpack_stream_info
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC, CmsgType, StreamFlag
from pyquic.abi.structs import StreamInfo
from pyquic.kernel.typed import QuicSocketMixin

__all__ = ["IPPROTO_QUIC", "SOL_QUIC", "KernelSocket"]

_MIN_BACKOFF = 0.0005
_MAX_BACKOFF = 0.02
# Plain ints for _dont_wait, which runs on every send: Enum attribute loads and
# IntFlag arithmetic cost more than the rest of it.
_MSG_DONTWAIT = int(_socket.MSG_DONTWAIT)  # (an IntFlag: its & runs Python code)
_STREAM_INFO = int(CmsgType.STREAM_INFO)
_STREAM_DONTWAIT = int(StreamFlag.DONTWAIT)


class _Borrowed(_socket.socket):
    """A socket object on an fd it does not own. It never closes it: close()
    and garbage collection only detach, so even a stray reference that
    outlives its owner cannot close a number the kernel has given to another
    file."""

    __slots__ = ()

    def _real_close(self, *args: Any) -> None:  # close(), __exit__
        self.detach()

    def __del__(self) -> None:  # replaces the C finalizer, which would close
        self.detach()


class KernelSocket(_socket.socket, QuicSocketMixin):
    """A QUIC socket of the in-kernel module: ``socket(family, type, IPPROTO_QUIC)``.

    ``KernelSocket()`` is ``socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC)``;
    SOCK_STREAM works as well. ``KernelSocket(fileno=fd)`` adopts an existing
    fd (family, type and protocol read from it); the protocol is not checked
    then, which lets the plumbing be tested over a UDP socket.
    Creating one where the module is not loaded raises the kernel's
    OSError (EPROTONOSUPPORT).
    """

    __slots__ = ("_twin",)
    _twin: _Borrowed | None
    # Serialises making a twin with dropping it (close/detach); shared by all
    # sockets, as both happen once per socket. Reentrant: a garbage collection
    # while it is held may close() another socket (a makefile object's
    # finalizer) on this thread. A class attribute, not a global: close() may
    # run at interpreter shutdown.
    _twin_lock = threading.RLock()

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        if fileno is None:
            if proto not in (-1, IPPROTO_QUIC):
                raise ValueError(f"KernelSocket protocol must be IPPROTO_QUIC, not {proto}")
            family = _socket.AF_INET if family == -1 else family
            type = _socket.SOCK_DGRAM if type == -1 else type
            proto = IPPROTO_QUIC
        self._twin = None
        super().__init__(family, type, proto, fileno)

    @classmethod
    def wrap(cls, sock: _socket.socket) -> KernelSocket:
        """Adopt a standard socket's fd (the original is detached), keeping its timeout."""
        timeout = sock.gettimeout()
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.settimeout(timeout)
        return new

    def accept(self) -> tuple[KernelSocket, Any]:  # type: ignore[override]
        """Accept a connection: a new ``KernelSocket`` (already holding the
        client's Initial; the handshake follows) and the peer address."""
        fd, addr = self._accept()  # type: ignore[attr-defined]
        sock = KernelSocket(self.family, self.type, self.proto, fileno=fd)
        # As socket.socket.accept(): a timeout on the listener makes the
        # accepted fd non-blocking at the OS level; give it the default mode.
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, addr

    # An AF_INET6 QUIC socket takes IPv4 peers and local addresses (the module
    # accepts a sockaddr_in, or a v4-mapped sockaddr_in6, family.c
    # quic_v6_get_user_addr), but CPython resolves the host of an AF_INET6
    # socket as IPv6 only, so "127.0.0.1" fails there. Map IPv4 literals.

    def _addr(self, address: Any) -> Any:
        if self.family != _socket.AF_INET6 or not isinstance(address, tuple) or not address:
            return address
        host = address[0]
        if isinstance(host, str) and host.count(".") == 3 and ":" not in host:
            try:
                _socket.inet_pton(_socket.AF_INET, host)
            except OSError:
                return address
            return ("::ffff:" + host, *address[1:])
        return address

    def bind(self, address: Any) -> None:
        """``socket.bind``; an AF_INET6 socket also takes an IPv4 address."""
        super().bind(self._addr(address))

    def connect(self, address: Any) -> None:
        """``socket.connect``; an AF_INET6 socket also takes an IPv4 peer."""
        super().connect(self._addr(address))

    def connect_ex(self, address: Any) -> int:
        """``socket.connect_ex``; an AF_INET6 socket also takes an IPv4 peer."""
        return super().connect_ex(self._addr(address))

    # Sends on a socket with a timeout. CPython's own path polls for POLLOUT
    # before the first attempt and then retries EAGAIN until the timeout. That
    # does not fit the module:
    # * POLLOUT is reported only while the peer's connection flow-control
    #   window has room, which is zero until the handshake brings the peer's
    #   max_data (protocol.c quic_inet_poll, outqueue.c quic_outq_wspace),
    #   although handshake messages and early data could be sent at once. So
    #   the first attempt is made at once.
    # * A socket with a timeout is O_NONBLOCK underneath, so the kernel never
    #   waits, and a stream blocked by its own flow-control limit gives ENOSPC
    #   when the sendmsg carries a STREAM_INFO cmsg (socket.c
    #   quic_wait_for_stream_send), which CPython raises at once. POLLOUT does
    #   not cover stream-level limits either. So ENOSPC and EAGAIN are retried
    #   here until the timeout: waiting for POLLOUT while it is not set, and
    #   backing off (0.5 ms doubling to 20 ms) while it is.
    # * An EAGAIN (or ENOSPC) the caller asked for is the answer, not a reason
    #   to wait: with MSG_DONTWAIT, or MSG_QUIC_STREAM_DONTWAIT in the flags or
    #   in the STREAM_INFO cmsg (socket.c quic_wait_for_stream: a stream past
    #   the peer's MAX_STREAMS limit gives EAGAIN at once). It is raised as is.
    # The attempts go through a twin socket object on the same fd with timeout
    # 0 (a direct system call). A new one per send added more than half the
    # cost of a small send, so each socket makes one on first use
    # (_nonblocking_twin) and keeps it. The twin is a _Borrowed, which never
    # closes the fd; the owner detaches it where the fd goes away (_real_close,
    # detach), under the lock that also guards making it, so no later attempt
    # (another thread's retry) reaches a number the kernel may have given to
    # another file: it fails with EBADF as on a closed socket. A socket
    # collected unclosed closes its fd in C and its twin goes with it, only
    # detaching. Threads may send through one twin at once, as through any
    # socket.

    def _send_timed(self, call: Callable[[_socket.socket], int], dont_wait: bool,
                    deadline: float | None = None) -> int | None:
        """Run ``call(twin)`` as described above; None if the socket has no
        timeout (blocking or non-blocking: the stdlib path is right then)."""
        timeout = self.gettimeout()
        if timeout is None or timeout == 0.0:
            return None
        if deadline is None:
            deadline = time.monotonic() + timeout
        twin = self._nonblocking_twin()
        delay = _MIN_BACKOFF
        # bounded by the deadline; the count bound is a safety net only
        for _ in range(10_000_000):
            try:
                return call(twin)
            except BlockingIOError:
                if dont_wait:
                    raise
            except OSError as exc:
                if exc.errno != errno.ENOSPC or dont_wait:
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            wait = min(remaining, delay)
            if _writable(self.fileno(), wait):
                time.sleep(wait)  # POLLOUT set: a stream-level limit
            delay = min(delay * 2, _MAX_BACKOFF)
        raise TimeoutError("timed out")

    def _nonblocking_twin(self) -> _socket.socket:
        """The socket object ``_send_timed`` sends through: this fd with
        timeout 0, so CPython makes the system call at once. Made on first
        use and kept until the fd goes away (see the notes above)."""
        twin = self._twin
        if twin is not None:
            return twin
        with self._twin_lock:  # two first sends at once make one twin
            twin = self._twin
            if twin is None:
                fd = self.fileno()
                if fd < 0:  # closed since the caller looked
                    raise OSError(errno.EBADF, "Bad file descriptor")
                twin = _Borrowed(self.family, self.type, self.proto, fileno=fd)
                twin.settimeout(0.0)  # the fd is O_NONBLOCK already (timeout set)
                self._twin = twin
        return twin

    def _drop_twin(self) -> None:
        """Detach the twin before this socket gives up its fd."""
        with self._twin_lock:
            twin = getattr(self, "_twin", None)  # (set unless __init__ was bypassed)
            self._twin = None
            if twin is not None:
                twin.detach()

    def _real_close(self, *args: Any) -> None:
        # socket.close() calls this once no makefile() object uses the fd.
        self._drop_twin()
        super()._real_close(*args)  # type: ignore[misc]

    def detach(self) -> int:
        """``socket.detach``; the twin lets go of the fd first."""
        self._drop_twin()
        return super().detach()

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,  # type: ignore[override]
                address: Any = None) -> int:
        """``socket.sendmsg``; with a timeout, see the notes above."""
        args = ((buffers, ancdata, flags) if address is None
                else (buffers, ancdata, flags, self._addr(address)))
        if not self.gettimeout():  # blocking or non-blocking: the stdlib path
            return super().sendmsg(*args)
        n = self._send_timed(lambda t: t.sendmsg(*args), _dont_wait(flags, ancdata))
        return super().sendmsg(*args) if n is None else n

    def send(self, data: Any, flags: int = 0) -> int:
        """``socket.send``; with a timeout, see the notes above."""
        if not self.gettimeout():  # blocking or non-blocking: the stdlib path
            return super().send(data, flags)
        n = self._send_timed(lambda t: t.send(data, flags), _dont_wait(flags, ()))
        return super().send(data, flags) if n is None else n

    def sendall(self, data: Any, flags: int = 0) -> None:
        """``socket.sendall``; with a timeout (a bound on the whole call), the
        sends retry as :meth:`send` does. As on any socket, ``flags`` go with
        every partial send, so MSG_SYN (open a stream) fails on the second."""
        timeout = self.gettimeout()
        if timeout is None or timeout == 0.0:
            super().sendall(data, flags)
            return
        deadline = time.monotonic() + timeout
        view = memoryview(data).cast("B")
        dont_wait = _dont_wait(flags, ())
        sent = 0
        # one call at least (an empty send with FIN ends a stream); each later
        # one sends at least a byte, so len(view) + 1 calls bound the loop
        for _ in range(len(view) + 1):
            n = self._send_timed(functools.partial(_send_part, view[sent:], flags),
                                 dont_wait, deadline)
            sent += int(n or 0)
            if sent >= len(view):
                return

    def getsockopt(self, level: int, optname: int,  # type: ignore[override]
                   buflen: int | bytes | bytearray | memoryview | None = None) -> Any:
        """``socket.getsockopt`` plus in/out buffers.

        ``buflen`` as bytes: an in/out buffer (the kernel reads it and writes
        back); the bytes written back are returned. At SOL_QUIC an int
        ``buflen`` reads into a zeroed buffer of that size (any size). Other
        levels with an int or None behave as the standard library.
        """
        if isinstance(buflen, (bytes, bytearray, memoryview)):
            return _libc.getsockopt(self.fileno(), level, optname, bytes(buflen))
        if level == SOL_QUIC and buflen is not None:
            return _libc.getsockopt(self.fileno(), level, optname, int(buflen))
        if buflen is None:
            return super().getsockopt(level, optname)
        return super().getsockopt(level, optname, buflen)


def _dont_wait(flags: int, ancdata: Any) -> bool:
    """The sendmsg asked the kernel not to wait: MSG_DONTWAIT, or the stream
    DONTWAIT flag where socket.c quic_msghdr_parse takes the stream flags from
    (the STREAM_INFO cmsg if there is one, else ``flags``)."""
    if flags & _MSG_DONTWAIT:
        return True
    stream_flags = flags
    if ancdata:
        for level, ctype, data in ancdata:
            if level == SOL_QUIC and ctype == _STREAM_INFO:
                # The last full one counts; shorter data is ignored here
                # (the kernel copies the bytes there are over a zeroed
                # struct, quic_copy_common; pyquic always packs 16).
                raw = data if type(data) is bytes else bytes(data)
                if len(raw) >= StreamInfo.SIZE:
                    stream_flags = unpack_stream_info(raw)[1]
    return bool(stream_flags & _STREAM_DONTWAIT)


def _writable(fd: int, wait: float) -> bool:
    """poll(POLLOUT) for up to ``wait`` seconds."""
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return bool(p.poll(max(1, math.ceil(wait * 1000))))


def _send_part(part: memoryview, flags: int, sock: _socket.socket) -> int:
    return sock.send(part, flags)
