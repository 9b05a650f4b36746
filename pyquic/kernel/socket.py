"""The kernel backend: a ``socket.socket`` over a real IPPROTO_QUIC fd.

``KernelSocket`` *is* a standard-library socket (a subclass), so every call
(bind, listen, connect, accept, sendmsg, recvmsg, settimeout, fileno with
select/selectors/asyncio, makefile...) goes straight to the kernel module with
the stdlib's signatures and errors. It changes three things only:

* ``accept()`` returns a ``KernelSocket``, not a plain socket.
* ``getsockopt(SOL_QUIC, opt, buf)`` also takes a bytes object as an in/out
  buffer (its length is the buffer size), and any SOL_QUIC read goes through
  libc ``getsockopt`` via cffi (``pyquic.abi.libc``) with a zeroed buffer:
  CPython's own getsockopt passes an uninitialised buffer to options that read
  input (STREAM_OPEN, EVENT, CONNECTION_ID, TRANSPORT_PARAM) and caps the size
  at 1024 bytes (session tickets reach 4096).
* The typed helpers of ``pyquic.kernel.typed.QuicSocketMixin`` are mixed in
  (``open_stream``, ``send_stream``, ``recv_message``, option getters/setters).

``recvmsg(bufsize, ancbufsize, flags)`` keeps the stdlib signature: pass at
least ``pyquic.abi.cmsg.STREAM_INFO_CMSG_SPACE`` (``CMSG_SPACE(16)`` = 32)
ancillary bytes to learn the stream id and FIN; with less, the kernel truncates
the cmsg (MSG_CTRUNC) and ORs FIN into ``msg_flags``. ``recv_message()`` always
passes enough.
"""

from __future__ import annotations

import socket as _socket
from typing import Any

from pyquic.abi import libc as _libc
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC
from pyquic.kernel.typed import QuicSocketMixin

__all__ = ["IPPROTO_QUIC", "SOL_QUIC", "KernelSocket"]


class KernelSocket(_socket.socket, QuicSocketMixin):
    """A QUIC socket of the in-kernel module: ``socket(family, type, IPPROTO_QUIC)``.

    ``KernelSocket()`` is ``socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC)``;
    SOCK_STREAM works as well. ``KernelSocket(fileno=fd)`` adopts an existing
    fd (family, type and protocol read from it); the protocol is not checked
    then, which lets the plumbing be tested over a UDP socket.
    Creating one where the module is not loaded raises the kernel's
    OSError (EPROTONOSUPPORT).
    """

    __slots__ = ()

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                 fileno: int | None = None) -> None:
        if fileno is None:
            if proto not in (-1, IPPROTO_QUIC):
                raise ValueError(f"KernelSocket protocol must be IPPROTO_QUIC, not {proto}")
            family = _socket.AF_INET if family == -1 else family
            type = _socket.SOCK_DGRAM if type == -1 else type
            proto = IPPROTO_QUIC
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

    # CPython's send calls on a socket with a timeout poll for POLLOUT before
    # the first attempt. The module reports POLLOUT only while the peer's
    # connection flow-control window has room, which is zero until the
    # handshake brings the peer's max_data (protocol.c quic_inet_poll,
    # outqueue.c quic_outq_wspace), although sendmsg of handshake messages and
    # early stream data would succeed at once. So with a timeout, try once
    # without waiting (through a non-owning twin object with timeout 0), and
    # wait for POLLOUT only if the kernel says EAGAIN.

    def _try_now(self) -> _socket.socket | None:
        timeout = self.gettimeout()
        if timeout is None or timeout == 0.0:
            return None
        twin = _socket.socket(self.family, self.type, self.proto, fileno=self.fileno())
        twin.settimeout(0.0)
        return twin

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,  # type: ignore[override]
                address: Any = None) -> int:
        """``socket.sendmsg``; with a timeout it sends at once when the kernel can."""
        args = ((buffers, ancdata, flags) if address is None
                else (buffers, ancdata, flags, self._addr(address)))
        twin = self._try_now()
        if twin is not None:
            try:
                return twin.sendmsg(*args)
            except BlockingIOError:
                pass
            finally:
                twin.detach()
        return super().sendmsg(*args)

    def send(self, data: Any, flags: int = 0) -> int:
        """``socket.send``; with a timeout it sends at once when the kernel can."""
        twin = self._try_now()
        if twin is not None:
            try:
                return twin.send(data, flags)
            except BlockingIOError:
                pass
            finally:
                twin.detach()
        return super().send(data, flags)

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
