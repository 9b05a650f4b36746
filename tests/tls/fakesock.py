"""An in-memory pair of "QUIC sockets" at the handshake-message level.

Each end implements exactly the calls the handshake driver makes on a kernel
socket (sendmsg/recvmsg with QUIC_HANDSHAKE_INFO, get/setsockopt at SOL_QUIC,
fileno for readiness), with the kernel's rules where they matter to the
driver: an APP-level handshake message arriving at a client is kept as the
session ticket (not delivered by recvmsg), the server's SESSION_TICKET read
gives a 64-byte key, TRANSPORT_PARAM_EXT get/set, CRYPTO_SECRET is recorded.
Readiness uses an os.pipe per end.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass, field

from pyquic import abi


@dataclass
class FakeState:
    """What one end saw, for assertions."""

    secrets: list[abi.CryptoSecret] = field(default_factory=list)
    sent: list[tuple[int, int, int]] = field(default_factory=list)  # (level, len, flags)
    peer_tp: bytes | None = None
    alpn_set: bytes | None = None
    close: abi.ConnectionClose | None = None
    remote_param: bytes | None = None


class FakeQuicSocket:
    """One end; create two with :func:`socket_pair`."""

    def __init__(self, is_server: bool, tp: bytes, alpn: str = "",
                 config: abi.Config | None = None, ticket_key: bytes | None = None) -> None:
        self.is_server = is_server
        self.tp = tp
        self.alpn = alpn.encode()
        self.config = config or abi.Config()
        self.ticket_key = ticket_key if ticket_key is not None else bytes(range(64))
        self.session_ticket = b""  # client: NST from the peer, or data set by the app
        self.peer: FakeQuicSocket | None = None
        self.state = FakeState()
        self._queue: deque[tuple[int, bytes]] = deque()
        self._lock = threading.Lock()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.closed = False
        #: drop/alter hook for outgoing messages: f(level, data) -> (level, data) | None
        self.tamper = None

    # --- readiness -----------------------------------------------------
    def fileno(self) -> int:
        return self._r

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)

    def _deliver(self, level: int, data: bytes) -> None:
        with self._lock:
            if not self.is_server and level == abi.CryptoLevel.APP:
                self.session_ticket = data  # the kernel keeps it for getsockopt
                return
            self._queue.append((level, data))
            os.write(self._w, b"x")

    # --- data ------------------------------------------------------------
    def sendmsg(self, buffers, ancdata=(), flags=0, address=None) -> int:
        data = b"".join(bytes(b) for b in buffers)
        _s, hinfo = abi.parse_ancdata(ancdata)
        if hinfo is None:
            raise OSError(errno.EINVAL, "handshake sendmsg without HANDSHAKE_INFO")
        assert flags & socket.MSG_NOSIGNAL
        self.state.sent.append((hinfo.crypto_level, len(data), flags))
        level = hinfo.crypto_level
        if self.tamper is not None:
            out = self.tamper(level, data)
            if out is None:
                return len(data)
            level, data = out
        assert self.peer is not None
        self.peer._deliver(level, data)
        return len(data)

    def recvmsg(self, bufsize, ancbufsize=0, flags=0):
        assert flags & socket.MSG_DONTWAIT
        with self._lock:
            if not self._queue:
                raise BlockingIOError(errno.EAGAIN, "no handshake data")
            level, data = self._queue.popleft()
            try:
                os.read(self._r, 1)
            except BlockingIOError:
                pass
        msg_flags = 0
        if len(data) > bufsize:
            data, msg_flags = data[:bufsize], socket.MSG_TRUNC
        anc = []
        if ancbufsize >= socket.CMSG_SPACE(1):
            anc.append(abi.handshake_info_cmsg(level))
        return data, anc, msg_flags, None

    # --- options -------------------------------------------------------
    def getsockopt(self, level, opt, buflen=None):
        assert level == abi.SOL_QUIC
        size = len(buflen) if isinstance(buflen, (bytes, bytearray)) else int(buflen)

        def fit(value: bytes) -> bytes:
            if size < len(value):
                raise OSError(errno.EINVAL, "buffer too small")
            return value

        if opt == abi.SockOpt.TRANSPORT_PARAM_EXT:
            return fit(self.tp)
        if opt == abi.SockOpt.ALPN:
            return fit(self.alpn)
        if opt == abi.SockOpt.CONFIG:
            return self.config.pack()[:size]
        if opt == abi.SockOpt.SESSION_TICKET:
            return fit(self.ticket_key if self.is_server else self.session_ticket)
        if opt == abi.SockOpt.TRANSPORT_PARAM:
            p = abi.TransportParam.unpack_prefix(bytes(buflen) if isinstance(buflen, bytes) else b"")
            if p.remote:
                return abi.TransportParam(remote=1, max_data=12345, max_streams_bidi=7).pack()
            return abi.TransportParam(max_data=999).pack()
        raise OSError(errno.ENOPROTOOPT, f"fake: option {opt}")

    def setsockopt(self, level, opt, value) -> None:
        assert level == abi.SOL_QUIC
        value = bytes(value)
        if opt == abi.SockOpt.CRYPTO_SECRET:
            self.state.secrets.append(abi.CryptoSecret.unpack(value))
        elif opt == abi.SockOpt.TRANSPORT_PARAM_EXT:
            self.state.peer_tp = value
        elif opt == abi.SockOpt.ALPN:
            self.state.alpn_set = value
        elif opt == abi.SockOpt.CONNECTION_CLOSE:
            self.state.close = abi.ConnectionClose.unpack_prefix(value)
        elif opt == abi.SockOpt.SESSION_TICKET:
            self.session_ticket = value
        elif opt == abi.SockOpt.TRANSPORT_PARAM:
            self.state.remote_param = value
        else:
            raise OSError(errno.ENOPROTOOPT, f"fake: option {opt}")


def socket_pair(
    client_tp: bytes = b"\x01\x02client-tp", server_tp: bytes = b"\x03\x04server-tp", **kw: object
) -> tuple[FakeQuicSocket, FakeQuicSocket]:
    """(client, server) connected ends. ``server_*``/``client_*`` kwargs go to each end."""
    ckw = {k[7:]: v for k, v in kw.items() if k.startswith("client_")}
    skw = {k[7:]: v for k, v in kw.items() if k.startswith("server_")}
    c = FakeQuicSocket(False, client_tp, **ckw)  # type: ignore[arg-type]
    s = FakeQuicSocket(True, server_tp, **skw)  # type: ignore[arg-type]
    c.peer, s.peer = s, c
    return c, s
