"""Typed helpers layered on the raw QUIC socket calls, for either backend.

``QuicSocketMixin`` turns the kernel's C-style calls (packed structs through
``setsockopt``/``getsockopt``, cmsgs through ``sendmsg``/``recvmsg``) into
Python calls: ``open_stream()``, ``send_stream()``, ``recv_message()`` returning
a ``QuicMessage`` with a decoded event, and one getter/setter per SOL_QUIC
option taking and returning the ``pyquic.abi`` dataclasses.

It uses nothing but the standard ``socket.socket`` surface, so it works on any
object that offers it: ``pyquic.kernel.socket.KernelSocket`` over a real
IPPROTO_QUIC fd, and the user backend's socket (which only needs to mix it in).
The one extension it relies on is the kernel-style in/out ``getsockopt``:
``getsockopt(level, optname, buf: bytes)`` passes ``buf`` in and returns what
the kernel wrote back (DESIGN.md, "A pyquic socket is a drop-in").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket as _socket
import struct
from collections.abc import Sequence
from typing import Any, Protocol, cast

from pyquic.abi.cmsg import (
    STREAM_INFO_CMSG_SPACE,
    parse_ancdata,
    stream_info_cmsg,
    unpack_stream_info,
)
from pyquic.abi.constants import (
    SOL_QUIC,
    CmsgType,
    CryptoLevel,
    EventType,
    MsgFlag,
    SockOpt,
    StreamFlag,
)
from pyquic.abi.events import Event, decode_event
from pyquic.abi.structs import (
    Config,
    ConnectionClose,
    ConnectionIdInfo,
    CryptoSecret,
    ErrInfo,
    EventOption,
    StreamInfo,
    TransportParam,
)

__all__ = [
    "ALPN_MAX_LEN",
    "SESSION_TICKET_MAX_LEN",
    "TOKEN_BUFSIZE",
    "TRANSPORT_PARAM_EXT_MAX_LEN",
    "QuicMessage",
    "QuicSocketMixin",
    "RawQuicSocket",
    "normalize_alpns",
    "sockaddr_bytes",
]

# Buffer sizes for the variable-length options (kernel socket.c limits).
ALPN_MAX_LEN = 128  # QUIC_ALPN_MAX_LEN
SESSION_TICKET_MAX_LEN = 4096  # QUIC_TICKET_MAX_LEN
TRANSPORT_PARAM_EXT_MAX_LEN = 512  # QUIC_TP_EXT_MAX_LEN
TOKEN_BUFSIZE = 256  # a NEW_TOKEN token the kernel issues fits easily
# Receive buffer of recv_message(): a handshake flight or a large stream read.
DEFAULT_RECV_SIZE = 65536

# plain ints for the per-message flag tests (IntFlag arithmetic costs a
# microsecond or more per operation, on every message of a transfer)
_NOTIFICATION = int(MsgFlag.NOTIFICATION)
_DATAGRAM = int(MsgFlag.DATAGRAM)
_NOT_STREAM = _NOTIFICATION | _DATAGRAM
_FIN = int(StreamFlag.FIN)
_STREAM_INFO = int(CmsgType.STREAM_INFO)


class RawQuicSocket(Protocol):
    """The standard-library socket calls the helpers need."""

    @property
    def family(self) -> int: ...

    def sendmsg(self, buffers: Any, ancdata: Any = ..., flags: int = ..., address: Any = ...,
                /) -> int: ...

    def recvmsg(self, bufsize: int, ancbufsize: int = ..., flags: int = ...,
                /) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]: ...

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int = ...,
                   /) -> None: ...

    def getsockopt(self, level: int, optname: int, buflen: Any = ..., /) -> Any: ...


@dataclasses.dataclass(slots=True)
class QuicMessage:
    """One recvmsg result, decoded: stream data, a handshake message, a datagram or an event.

    ``stream_id`` is None for anything but stream data; ``level`` is set only
    for handshake messages; ``event`` only for notifications.
    """

    data: bytes
    msg_flags: int
    stream_id: int | None = None
    stream_flags: int = 0
    level: CryptoLevel | None = None
    event: Event | None = None

    @property
    def fin(self) -> bool:
        """True when this read ends its stream (cmsg flag, or msg_flags when truncated)."""
        if self.msg_flags & _NOT_STREAM or self.level is not None:
            return False
        return bool((self.stream_flags | self.msg_flags) & _FIN)

    @property
    def is_datagram(self) -> bool:
        """True for an unreliable datagram (RFC 9221)."""
        return bool(self.msg_flags & _DATAGRAM)

    @property
    def is_event(self) -> bool:
        """True for a notification (an event)."""
        return bool(self.msg_flags & _NOTIFICATION)


def normalize_alpns(alpns: str | bytes | Sequence[str | bytes]) -> bytes:
    """Return an ALPN list as the kernel's comma-separated option value.

    Accepts ``"h3, smbd"``, ``b"h3"`` or ``["h3", "smbd"]``; spaces around the
    entries are dropped (the kernel normalises them away too). ValueError for
    an empty entry, a NUL, or more than ``ALPN_MAX_LEN`` bytes.
    """
    if isinstance(alpns, (str, bytes)):
        raw = alpns.encode() if isinstance(alpns, str) else alpns
        items = raw.split(b",")
    else:
        items = [a.encode() if isinstance(a, str) else bytes(a) for a in alpns]
    out = []
    for item in items:
        item = item.strip(b" ")
        if not item:
            raise ValueError(f"ALPN list {alpns!r} has an empty entry")
        if b"\0" in item or b"," in item:
            raise ValueError(f"ALPN entry {item!r} contains a NUL or a comma")
        if len(item) > 255:  # RFC 7301 §3.1: a protocol name is 1..255 bytes
            raise ValueError(f"ALPN entry {item[:16]!r}... is longer than 255 bytes")
        out.append(item)
    value = b",".join(out)
    if len(value) > ALPN_MAX_LEN:
        raise ValueError(f"ALPN list is {len(value)} bytes, the kernel takes at most {ALPN_MAX_LEN}")
    return value


def sockaddr_bytes(address: tuple[Any, ...], family: int | None = None) -> bytes:
    """Encode a Python socket address as a C ``struct sockaddr_in``/``sockaddr_in6``.

    The CONNECTION_MIGRATION option takes a raw sockaddr. The family follows
    from the host (an IPv6 literal gives AF_INET6) unless given.
    """
    host, port = address[0], int(address[1])
    ip = ipaddress.ip_address(host or ("::" if family == _socket.AF_INET6 else "0.0.0.0"))
    if family is None:
        family = _socket.AF_INET6 if ip.version == 6 else _socket.AF_INET
    if family == _socket.AF_INET6:
        if ip.version == 4:
            ip = ipaddress.IPv6Address(f"::ffff:{ip}")
        flowinfo = int(address[2]) if len(address) > 2 else 0
        scope_id = int(address[3]) if len(address) > 3 else 0
        # struct sockaddr_in6: family (host order), port, flowinfo (network order),
        # 16-byte address, scope id (host order): 28 bytes.
        return struct.pack("=H", family) + struct.pack("!HI", port, flowinfo) + \
            ip.packed + struct.pack("=I", scope_id)
    if family == _socket.AF_INET:
        if ip.version != 4:
            raise ValueError(f"{host!r} is not an IPv4 address")
        # struct sockaddr_in: family, port, address, 8 bytes of zero: 16 bytes.
        return struct.pack("=H", family) + struct.pack("!H", port) + ip.packed + bytes(8)
    raise ValueError(f"unsupported address family {family}")


class QuicSocketMixin:
    """Typed QUIC calls over ``sendmsg``/``recvmsg``/``setsockopt``/``getsockopt``.

    Every method is a thin encoding of one kernel call, so errors are the
    kernel's ``OSError`` (errno) unchanged.
    """

    __slots__ = ()

    def _raw(self) -> RawQuicSocket:
        return cast(RawQuicSocket, self)

    def _get(self, opt: SockOpt, buf: bytes | int) -> bytes:
        return cast(bytes, self._raw().getsockopt(SOL_QUIC, opt, buf))

    def _set(self, opt: SockOpt, value: bytes | None) -> None:
        if value is None:
            self._raw().setsockopt(SOL_QUIC, opt, None, 0)
        else:
            self._raw().setsockopt(SOL_QUIC, opt, value)

    # -- streams ---------------------------------------------------------

    def open_stream(self, stream_id: int = -1, *, uni: bool = False,
                    dontwait: bool = False) -> int:
        """Open a stream with STREAM_OPEN and return its id.

        ``stream_id=-1`` takes the next bidirectional (or, with ``uni``, the
        next unidirectional) stream. With ``dontwait`` a stream beyond the
        peer's limit is EAGAIN instead of blocking.
        """
        flags = (StreamFlag.UNI if uni else 0) | (StreamFlag.DONTWAIT if dontwait else 0)
        out = self._get(SockOpt.STREAM_OPEN, StreamInfo(stream_id, int(flags)).pack())
        return StreamInfo.unpack(out).stream_id

    def send_stream(self, stream_id: int, data: bytes | bytearray | memoryview, *,
                    fin: bool = False, flags: int = 0, msg_flags: int = 0) -> int:
        """Send ``data`` on ``stream_id`` (-1: the last opened or next stream).

        ``flags`` are stream flags for the STREAM_INFO cmsg (NEW, UNI,
        DONTWAIT, SNDBLOCK); ``fin`` adds FIN. Returns the bytes accepted.
        """
        sflags = int(flags) | _FIN if fin else int(flags)
        return self._raw().sendmsg([data], [stream_info_cmsg(stream_id, sflags)], msg_flags)

    def send_datagram(self, data: bytes | bytearray | memoryview, msg_flags: int = 0) -> int:
        """Send one unreliable datagram (RFC 9221) with MSG_QUIC_DATAGRAM."""
        return self._raw().sendmsg([data], [], msg_flags | MsgFlag.DATAGRAM)

    def recv_message(self, bufsize: int = DEFAULT_RECV_SIZE, flags: int = 0) -> QuicMessage:
        """Receive one message (stream data, handshake message, datagram or event).

        Always passes ``STREAM_INFO_CMSG_SPACE`` ancillary bytes, the least the
        kernel needs to report the stream id and FIN.
        """
        data, ancdata, msg_flags, _addr = self._raw().recvmsg(
            bufsize, STREAM_INFO_CMSG_SPACE, flags)
        if len(ancdata) == 1 and not msg_flags & _NOT_STREAM:
            level, ctype, cdata = ancdata[0]
            if level == SOL_QUIC and ctype == _STREAM_INFO and len(cdata) >= StreamInfo.SIZE:
                # stream data, the usual message: what parse_ancdata gives, directly
                sid, sflags = unpack_stream_info(cdata)
                return QuicMessage(data, msg_flags, sid, sflags)
        sinfo, hinfo = parse_ancdata(ancdata)
        msg = QuicMessage(data, msg_flags)
        if msg_flags & _NOTIFICATION:
            msg.event = decode_event(data)
        elif hinfo is not None:
            msg.level = CryptoLevel(hinfo.crypto_level)
        elif sinfo is not None and not msg_flags & _DATAGRAM:
            msg.stream_id = sinfo.stream_id
            msg.stream_flags = sinfo.stream_flags
        return msg

    def reset_stream(self, stream_id: int, errcode: int) -> None:
        """Abruptly end sending on a stream (RESET_STREAM, RFC 9000 §19.4)."""
        self._set(SockOpt.STREAM_RESET, ErrInfo(stream_id, errcode).pack())

    def stop_sending(self, stream_id: int, errcode: int) -> None:
        """Ask the peer to stop sending on a stream (STOP_SENDING, RFC 9000 §19.5)."""
        self._set(SockOpt.STREAM_STOP_SENDING, ErrInfo(stream_id, errcode).pack())

    # -- events ----------------------------------------------------------

    def set_event(self, event: EventType | int, on: bool = True) -> None:
        """Enable or disable delivery of one event type (all are off by default)."""
        self._set(SockOpt.EVENT, EventOption(int(event), int(on)).pack())

    def get_event(self, event: EventType | int) -> bool:
        """Return whether an event type is enabled."""
        out = self._get(SockOpt.EVENT, EventOption(int(event), 0).pack())
        return bool(EventOption.unpack(out).on)

    # -- connection ------------------------------------------------------

    def get_connection_id(self, dest: bool = False) -> ConnectionIdInfo:
        """Return the active and lowest connection-ID numbers (source or ``dest``)."""
        out = self._get(SockOpt.CONNECTION_ID, ConnectionIdInfo(int(dest), 0, 0).pack())
        return ConnectionIdInfo.unpack(out)

    def set_connection_id(self, info: ConnectionIdInfo) -> None:
        """Switch the active connection ID and/or retire those below ``prior_to``."""
        self._set(SockOpt.CONNECTION_ID, info.pack())

    def get_close_info(self) -> ConnectionClose:
        """Return the error code and reason phrase sent (or to be sent) at close."""
        return ConnectionClose.unpack(self._get(SockOpt.CONNECTION_CLOSE, ConnectionClose.SIZE))

    def set_close_info(self, errcode: int = 0, phrase: bytes | str = b"", frame: int = 0) -> None:
        """Set the application error code and reason sent in CONNECTION_CLOSE."""
        if isinstance(phrase, str):
            phrase = phrase.encode()
        self._set(SockOpt.CONNECTION_CLOSE, ConnectionClose(errcode, frame, phrase).pack())

    def migrate(self, address: tuple[Any, ...]) -> None:
        """Move to a new local address; on a server before the handshake, set the
        preferred address instead (RFC 9000 §9.6)."""
        self._set(SockOpt.CONNECTION_MIGRATION, sockaddr_bytes(address))

    def key_update(self) -> None:
        """Start a key update (RFC 9001 §6)."""
        self._set(SockOpt.KEY_UPDATE, None)

    # -- parameters and configuration ------------------------------------

    def get_transport_param(self, remote: bool = False) -> TransportParam:
        """Return the local (or the peer's) transport parameters."""
        out = self._get(SockOpt.TRANSPORT_PARAM, TransportParam(remote=int(remote)).pack())
        return TransportParam.unpack(out)

    def set_transport_param(self, param: TransportParam) -> None:
        """Set transport parameters (before the handshake; ``remote=1`` for 0-RTT)."""
        self._set(SockOpt.TRANSPORT_PARAM, param.pack())

    def get_config(self) -> Config:
        """Return the socket's configuration."""
        return Config.unpack(self._get(SockOpt.CONFIG, Config.SIZE))

    def set_config(self, config: Config) -> None:
        """Set the socket's configuration (before the handshake)."""
        self._set(SockOpt.CONFIG, config.pack())

    def get_token(self, bufsize: int = TOKEN_BUFSIZE) -> bytes:
        """Return the address-validation token received in NEW_TOKEN (client)."""
        return self._get(SockOpt.TOKEN, bufsize)

    def set_token(self, token: bytes) -> None:
        """Client: set a token for the next connection. Server: ``b""`` sends NEW_TOKEN."""
        self._set(SockOpt.TOKEN, bytes(token))

    def get_alpn(self, bufsize: int = ALPN_MAX_LEN) -> str:
        """Return the ALPN option: the negotiated (or configured) comma-separated list."""
        return self._get(SockOpt.ALPN, bufsize).decode()

    def set_alpn(self, alpns: str | bytes | Sequence[str | bytes]) -> None:
        """Set the ALPN list (before listen() on a server; routes connections by ALPN)."""
        self._set(SockOpt.ALPN, normalize_alpns(alpns))

    def get_session_ticket(self, bufsize: int = SESSION_TICKET_MAX_LEN) -> bytes:
        """Client: the NewSessionTicket message. Server: the 64-byte ticket key."""
        return self._get(SockOpt.SESSION_TICKET, bufsize)

    def set_session_ticket(self, data: bytes) -> None:
        """Set session-ticket data (client resumption state, or a server's ticket key)."""
        self._set(SockOpt.SESSION_TICKET, bytes(data))

    # -- raw handshake options (the handshake driver's side) ------------------

    def get_transport_param_ext(self, bufsize: int = TRANSPORT_PARAM_EXT_MAX_LEN) -> bytes:
        """Return the encoded local quic_transport_parameters extension (RFC 9000 §18)."""
        return self._get(SockOpt.TRANSPORT_PARAM_EXT, bufsize)

    def set_transport_param_ext(self, data: bytes) -> None:
        """Install the peer's encoded transport-parameters extension."""
        self._set(SockOpt.TRANSPORT_PARAM_EXT, bytes(data))

    def set_crypto_secret(self, secret: CryptoSecret) -> None:
        """Install one traffic secret (send side before receive side)."""
        self._set(SockOpt.CRYPTO_SECRET, secret.pack())
