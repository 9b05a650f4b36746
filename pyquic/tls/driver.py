"""The handshake driver: pyquic's TLS 1.3 over a QUIC socket's handshake API.

It talks to the socket only as libquic does (KERNEL-API.md, "The user-space
handshake"), so the same code drives a kernel ``IPPROTO_QUIC`` fd and the user
backend's ``QuicSocket``:

- ``getsockopt(SOL_QUIC, TRANSPORT_PARAM_EXT, 512)`` gives our transport
  parameters for extension 0x39; the peer's go back with ``setsockopt``;
- every traffic secret is installed with ``setsockopt(CRYPTO_SECRET)``, send
  side before receive side;
- handshake messages go out with ``sendmsg`` and a ``QUIC_HANDSHAKE_INFO`` cmsg
  (MSG_NOSIGNAL, MSG_MORE on all but the last of a flight) and come in with
  ``recvmsg(65536, ..., MSG_DONTWAIT)``, waiting on ``fileno()`` readiness
  (or on ``sock.wait_readable(timeout)`` where the socket has it: the user
  backend's QuicSocket, which then needs no readiness fd);
- ALPN, SESSION_TICKET, TRANSPORT_PARAM (remote=1) and CONFIG options as
  libquic and its tests (and tlshd) use them.

Order on a server (libquic's, through GnuTLS's extension callbacks): the
client's transport parameters are set with setsockopt(TRANSPORT_PARAM_EXT)
while the ClientHello is processed, and only then are ours read, so they
reflect what the ClientHello negotiated (a compatible upgrade to v2 changes
version_information, RFC 9368). A connection that dies during the handshake
(ENOTCONN/EPIPE from the socket) fails at once with the cause from SO_ERROR
(the user backend sets it; else ENOTCONN) and the close information.

Version Negotiation (user backend): after a VN the socket hands the client an
empty handshake message at level INITIAL; the driver then starts over with a
new ClientHello built on a fresh TRANSPORT_PARAM_EXT (whose
version_information names the new version, RFC 9368 §4) and sends it at level
INITIAL, which replaces the stale one. A kernel socket never sends this signal.

Extensions beyond contracts §6: :class:`HandshakeResult` (negotiated values and
session data for resumption), keylog to a path, a callable or ``SSLKEYLOGFILE``,
and CONFIG honoured (payload_cipher_type restricts the cipher suite,
receive_session_ticket makes a client wait for its ticket and store the session
data with SESSION_TICKET, certificate_request 1/2 makes a server request or
require a client certificate).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol, Union

from cryptography import x509

from pyquic import abi
from pyquic.tls.context import TlsConfig, TlsContext
from pyquic.tls.keyschedule import SUITES
from pyquic.tls.messages import TlsAlert
from pyquic.tls.psk import load_psk_file
from pyquic.tls.session import SessionTicket
from pyquic.tls.x509 import load_certificates, load_private_key, load_trust_store

SOL_QUIC = abi.SOL_QUIC
_OPT = abi.SockOpt
# plain ints (the socket module's are IntFlag members, slow in ``&``/``|``)
_MSG_NOSIGNAL = int(socket.MSG_NOSIGNAL)
_MSG_MORE = int(socket.MSG_MORE)
_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_MSG_TRUNC = int(socket.MSG_TRUNC)
_OPT_CRYPTO_SECRET = int(_OPT.CRYPTO_SECRET)
_OPT_TRANSPORT_PARAM_EXT = int(_OPT.TRANSPORT_PARAM_EXT)
#: the QUIC_HANDSHAKE_INFO cmsg of each crypto level, built once
_HS_CMSG = {int(lv): abi.handshake_info_cmsg(int(lv)) for lv in abi.CryptoLevel}

RECV_BUFSIZE = 65536
TRANSPORT_PARAM_EXT_MAX = 512
ALPN_MAX = 128
SESSION_TICKET_MAX = 4096
TICKET_KEY_LEN = 64

KeylogTarget = Union[str, "os.PathLike[str]", Callable[[str], None], IO[str], None]


class QuicSocketLike(Protocol):
    """The socket calls the driver needs (kernel fd wrapper or QuicSocket)."""

    def sendmsg(self, buffers: Any, ancdata: Any = ..., flags: int = ..., address: Any = ...) -> int: ...
    def recvmsg(self, bufsize: int, ancbufsize: int = ..., flags: int = ...) -> Any: ...
    def setsockopt(self, level: int, optname: int, value: Any) -> None: ...
    def getsockopt(self, level: int, optname: int, buflen: Any = ...) -> Any: ...
    def fileno(self) -> int: ...


@dataclass
class HandshakeResult:
    """What a completed handshake negotiated."""

    alpn: str | None
    cipher: int  # linux/tls.h TLS_CIPHER_*
    cipher_suite: int
    group: int | None
    peer_certificates: list[x509.Certificate]
    early_data_accepted: bool
    session_resumed: bool
    psk: bool
    peer_transport_parameters: bytes
    server_name: str | None
    context: TlsContext = field(repr=False)
    _sock: Any = field(default=None, repr=False)
    _session: bytes | None = field(default=None, repr=False)

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        return self.peer_certificates[0] if self.peer_certificates else None

    @property
    def session_data(self) -> bytes | None:
        """Session data for resumption, if already fetched (see get_session_data)."""
        return self._session

    def get_session_data(self, timeout: float = 1.0) -> bytes | None:
        """Client: read the server's ticket from the socket and return session data.

        Like libquic's ``quic_session_get_data``: the NewSessionTicket message is
        read with ``getsockopt(SESSION_TICKET)`` (polled up to ``timeout``
        seconds, as it arrives after the handshake), turned into a resumption
        PSK, and saved together with the peer's transport parameters
        (``TRANSPORT_PARAM`` with remote=1) for 0-RTT. None if no ticket came.
        """
        if self._session is not None:
            return self._session
        ctx = self.context
        if not ctx.is_client:
            raise ValueError("session data is a client-side thing")
        ticket = ctx.session_ticket
        deadline = time.monotonic() + max(0.0, timeout)
        for _ in range(100_000):
            if ticket is not None:
                break
            raw = _get(self._sock, _OPT.SESSION_TICKET, SESSION_TICKET_MAX)
            if raw and len(raw) >= 4:
                ticket = ctx.process_session_ticket(raw, time.time())
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        if ticket is None:
            return None
        try:
            ticket.kernel_transport_param = _get(
                self._sock, _OPT.TRANSPORT_PARAM, abi.TransportParam(remote=1).pack()
            )
        except OSError:
            ticket.kernel_transport_param = b""
        self._session = ticket.to_bytes()
        return self._session


# ---------------------------------------------------------------- socket helpers


def _get(sock: Any, opt: int, buf: int | bytes) -> bytes:
    """getsockopt at SOL_QUIC; a plain ``socket.socket`` goes through libc (in/out, >1 KiB)."""
    if type(sock) is socket.socket:
        from pyquic.abi import libc

        return libc.getsockopt(sock.fileno(), SOL_QUIC, opt, buf)
    return bytes(sock.getsockopt(SOL_QUIC, opt, buf))


def _set(sock: Any, opt: int, value: bytes) -> None:
    sock.setsockopt(SOL_QUIC, opt, value)


_LOAD_CACHE: dict[tuple[str, str, int, int], Any] = {}
_LOAD_CACHE_MAX = 64


def _cached_load(kind: str, loader: Callable[[Any], Any], path: str | os.PathLike[str]) -> Any:
    """``loader(path)`` cached by (path, mtime, size): a server handshaking many
    clients parses its certificate chain and key once; an edited file is reread."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError:
        return loader(path)  # let the loader report the problem
    key = (kind, name, st.st_mtime_ns, st.st_size)
    hit = _LOAD_CACHE.get(key)
    if hit is None:
        hit = loader(path)
        if len(_LOAD_CACHE) >= _LOAD_CACHE_MAX:
            _LOAD_CACHE.clear()
        _LOAD_CACHE[key] = hit
    return list(hit) if isinstance(hit, list) else hit


def _coalesce(out: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Join consecutive handshake messages of one level into one send.

    CRYPTO data is a byte stream per encryption level (RFC 9000 §19.6,
    RFC 9001 §4.1.3): the peer sees the same bytes whether a server's
    EncryptedExtensions..Finished go out in four sendmsg calls or in one, and
    one call is a quarter of the socket work.
    """
    if len(out) < 2:
        return out
    merged: list[tuple[int, bytes]] = []
    run: list[bytes] = []
    run_level = out[0][0]
    for level, data in out:
        if level != run_level:
            merged.append((run_level, run[0] if len(run) == 1 else b"".join(run)))
            run = []
            run_level = level
        run.append(data)
    merged.append((run_level, run[0] if len(run) == 1 else b"".join(run)))
    return merged


def _wait_readable(sock: Any, timeout: float) -> None:
    waiter = getattr(sock, "wait_readable", None)
    if waiter is not None:
        # the user backend waits on its own condition: no readiness fd needed
        waiter(timeout)
        return
    fd = sock.fileno()
    if hasattr(select, "poll"):
        p = select.poll()
        p.register(fd, select.POLLIN)
        p.poll(max(0, int(timeout * 1000)))
    else:  # pragma: no cover - non-Linux
        select.select([fd], [], [], timeout)


def _open_keylog(keylog: KeylogTarget) -> tuple[Callable[[str], None] | None, Callable[[], None]]:
    """A line writer for NSS key-log output and a closer."""
    if keylog is None:
        path = os.environ.get("SSLKEYLOGFILE")
        if not path:
            return None, lambda: None
        keylog = path
    if callable(keylog):
        return keylog, lambda: None
    if isinstance(keylog, (str, os.PathLike)):
        f = open(keylog, "a", encoding="ascii")  # noqa: SIM115 - closed by the returned closer

        def write_file(line: str) -> None:
            f.write(line + "\n")
            f.flush()

        return write_file, f.close
    stream = keylog

    def write_stream(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write_stream, lambda: None


def parse_alpns(alpns: str | Sequence[str] | None) -> list[str]:
    """ALPN list from the kernel's comma-separated form or a sequence; validated."""
    if alpns is None:
        return []
    items = alpns.split(",") if isinstance(alpns, str) else list(alpns)
    out = [a.strip() for a in items if a.strip()]
    for a in out:
        if len(a.encode()) > 255:
            raise ValueError(f"ALPN {a!r} is longer than 255 bytes")
    return out


def _socket_alpns(sock: Any) -> list[str]:
    try:
        raw = _get(sock, _OPT.ALPN, ALPN_MAX)
    except OSError:
        return []
    return parse_alpns(raw.split(b"\0", 1)[0].decode("ascii", "replace"))


def _socket_config(sock: Any) -> abi.Config:
    try:
        return abi.Config.unpack_prefix(_get(sock, _OPT.CONFIG, abi.Config.SIZE))
    except (OSError, ValueError):
        return abi.Config()


def _suites_for(config: abi.Config) -> list[int] | None:
    if config.payload_cipher_type:
        return [s for s, i in SUITES.items() if i.kernel_cipher == config.payload_cipher_type] or None
    return None


def _set_close_info(sock: Any, alert: TlsAlert) -> None:
    """Report the alert as CRYPTO_ERROR 0x100+alert in the CONNECTION_CLOSE (RFC 9001 §4.8)."""
    phrase = str(alert).encode("ascii", "replace")[:63]
    try:
        _set(sock, _OPT.CONNECTION_CLOSE, abi.ConnectionClose(alert.error_code, 0, phrase).pack())
    except (OSError, ValueError):
        pass


def _closed_error(sock: Any, exc: OSError) -> OSError:
    """The error for a connection that died during the handshake.

    Both backends report a dead connection as ENOTCONN (recvmsg) or EPIPE
    (sendmsg), as socket.c does; the cause comes from SO_ERROR where the
    backend sets it (the user backend: ETIMEDOUT, ECONNRESET, EPROTO) and the
    close information from getsockopt(CONNECTION_CLOSE).
    """
    code = 0
    try:
        code = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    except (OSError, TypeError, ValueError):
        code = 0
    detail = ""
    try:
        info = abi.ConnectionClose.unpack_prefix(
            _get(sock, _OPT.CONNECTION_CLOSE, abi.ConnectionClose.SIZE))
        if info.errcode:
            detail = f", error 0x{info.errcode:x}"
            if info.phrase:
                detail += f" {info.phrase.decode('utf-8', 'replace')!r}"
    except (OSError, ValueError):
        pass
    errno_ = code or exc.errno or errno.ENOTCONN
    return OSError(errno_, f"QUIC connection closed during the handshake "
                           f"({os.strerror(errno_)}{detail})")


# ---------------------------------------------------------------- the loop


class _Driver:
    def __init__(self, sock: Any, ctx: TlsContext | None, timeout: float | None) -> None:
        self.sock = sock
        self.ctx: TlsContext = ctx  # type: ignore[assignment]  # set before run()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.peer_tp_set = False
        #: client: builds a new context after a Version Negotiation (see run())
        self.restart: Callable[[], TlsContext] | None = None

    def local_transport_parameters(self, peer: bytes | None) -> bytes:
        """TlsContext's source of our extension 0x39: install the peer's first."""
        if peer is not None and not self.peer_tp_set:
            _set(self.sock, _OPT_TRANSPORT_PARAM_EXT, peer)
            self.peer_tp_set = True
        return _get(self.sock, _OPT.TRANSPORT_PARAM_EXT, TRANSPORT_PARAM_EXT_MAX)

    def flush(self) -> None:
        ctx = self.ctx
        # The peer's transport parameters go in before the keys of that flight.
        if not self.peer_tp_set and ctx.peer_transport_parameters is not None:
            _set(self.sock, _OPT_TRANSPORT_PARAM_EXT, ctx.peer_transport_parameters)
            self.peer_tp_set = True
        for s in ctx.secrets_to_install():
            _set(
                self.sock,
                _OPT_CRYPTO_SECRET,
                abi.CryptoSecret(int(s.send), s.level, s.cipher, s.secret).pack(),
            )
        out = _coalesce(ctx.data_to_send())
        last = len(out) - 1
        for i, (level, data) in enumerate(out):
            self._sendmsg(data, level, _MSG_NOSIGNAL | _MSG_MORE if i < last else _MSG_NOSIGNAL)

    def _sendmsg(self, data: bytes, level: int, flags: int) -> None:
        cmsg = _HS_CMSG.get(level)
        if cmsg is None:
            cmsg = abi.handshake_info_cmsg(level)
        for _ in range(100_000):
            try:
                n = self.sock.sendmsg([data], [cmsg], flags)
            except InterruptedError:
                continue
            except BlockingIOError:
                self._check_deadline()
                time.sleep(0.001)
                continue
            except (BrokenPipeError, ConnectionError) as exc:
                raise _closed_error(self.sock, exc) from exc
            except OSError as exc:
                if exc.errno in (errno.ENOTCONN, errno.EPIPE):
                    raise _closed_error(self.sock, exc) from exc
                raise
            if n != len(data):
                raise OSError(errno.EMSGSIZE, f"short handshake sendmsg ({n} of {len(data)})")
            return
        raise OSError(errno.EAGAIN, "handshake sendmsg kept blocking")

    def _check_deadline(self) -> float:
        if self.deadline is None:
            return 1.0
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "QUIC handshake timed out")
        return min(left, 1.0)

    def run(self) -> None:
        ancbuf = abi.HANDSHAKE_INFO_CMSG_SPACE
        self.flush()
        # Bounded: each turn either processes a message or waits (<= 1 s) on the deadline.
        for _ in range(10_000_000):
            ctx = self.ctx
            if ctx.handshake_complete:
                break
            try:
                data, anc, mflags, _addr = self.sock.recvmsg(RECV_BUFSIZE, ancbuf, _MSG_DONTWAIT)
            except InterruptedError:
                continue
            except BlockingIOError:
                _wait_readable(self.sock, self._check_deadline())
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET):
                    raise _closed_error(self.sock, exc) from exc
                raise
            if mflags & _MSG_CTRUNC:
                raise OSError(errno.EBADMSG, "handshake cmsg truncated")
            _sinfo, hinfo = abi.parse_ancdata(anc) if anc else (None, None)
            if not data:
                if (hinfo is not None and hinfo.crypto_level == abi.CryptoLevel.INITIAL
                        and self.restart is not None):
                    # the user backend after a Version Negotiation: a new
                    # ClientHello on the new version's transport parameters
                    self.ctx = self.restart()
                    self.peer_tp_set = False
                    self.flush()
                    continue
                raise ConnectionResetError(errno.ECONNRESET, "connection closed during handshake")
            if mflags & _MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "handshake message truncated")
            if hinfo is None:
                raise OSError(errno.EBADMSG, "recvmsg without QUIC_HANDSHAKE_INFO")
            ctx.now = time.time()
            ctx.receive(hinfo.crypto_level, bytes(data))
            self.flush()
        else:  # pragma: no cover
            raise OSError(errno.ETIMEDOUT, "handshake loop bound reached")
        self.flush()
        # the user backend corks the ACKs of handshake messages (and key
        # installs) until the next send or wait: send them now
        sock_flush = getattr(self.sock, "flush", None)
        if callable(sock_flush):
            sock_flush()


def _run(drv: _Driver) -> None:
    try:
        drv.run()
    except TlsAlert as alert:
        _set_close_info(drv.sock, alert)
        raise


def _result(sock: Any, ctx: TlsContext) -> HandshakeResult:
    assert ctx.cipher_suite is not None
    if ctx.alpn:
        try:  # like tlshd: the socket then reports the negotiated protocol
            _set(sock, _OPT.ALPN, ctx.alpn.encode())
        except OSError:
            pass
    return HandshakeResult(
        alpn=ctx.alpn,
        cipher=SUITES[ctx.cipher_suite].kernel_cipher,
        cipher_suite=int(ctx.cipher_suite),
        group=None if ctx.group is None else int(ctx.group),
        peer_certificates=list(ctx.peer_certificates),
        early_data_accepted=ctx.early_data_accepted,
        session_resumed=ctx.session_resumed,
        psk=ctx.psk_accepted,
        peer_transport_parameters=ctx.peer_transport_parameters or b"",
        server_name=ctx.server_name,
        context=ctx,
        _sock=sock,
    )


# ---------------------------------------------------------------- public API


def restore_session(sock: QuicSocketLike, session: bytes | SessionTicket) -> SessionTicket:
    """Client, before the handshake: restore the peer's transport parameters for 0-RTT.

    Call it before sending early data (the kernel needs the peer's limits);
    ``client_handshake(session=...)`` calls it too. Returns the parsed session.
    """
    ticket = session if isinstance(session, SessionTicket) else SessionTicket.from_bytes(session)
    if ticket.kernel_transport_param:
        try:
            _set(sock, _OPT.TRANSPORT_PARAM, ticket.kernel_transport_param)
        except OSError:
            pass
    return ticket


def client_handshake(
    sock: QuicSocketLike,
    hostname: str | None = None,
    alpns: str | Sequence[str] | None = None,
    *,
    cafile: str | os.PathLike[str] | None = None,
    verify: bool = True,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    psk_file: str | os.PathLike[str] | None = None,
    session: bytes | SessionTicket | None = None,
    timeout: float | None = None,
    keylog: KeylogTarget = None,
) -> HandshakeResult:
    """Run the client side of the handshake on a connected QUIC socket.

    ``hostname`` is sent as SNI and checked against the server certificate;
    ``alpns`` is a list or a comma-separated string (default: the socket's
    ALPN option). X.509 mode verifies against ``cafile`` (default: the system
    store) unless ``verify`` is false; ``psk_file`` uses libquic's PSK file
    (first entry). ``session`` resumes an earlier connection (and may carry
    0-RTT). Raises TlsAlert on a TLS failure, TimeoutError, or OSError.
    """
    cfg_sock = _socket_config(sock)
    alpn_list = parse_alpns(alpns) if alpns is not None else _socket_alpns(sock)
    config = TlsConfig(is_client=True, alpn_protocols=alpn_list, server_name=hostname,
                       verify_peer=verify)
    suites = _suites_for(cfg_sock)
    if suites:
        config.cipher_suites = suites
    if verify and cafile is not None:
        config.trust_store = _cached_load("store", load_trust_store, cafile)  # else system
    if certfile is not None:
        config.certificate_chain = _cached_load("chain", load_certificates, certfile)
        config.private_key = _cached_load(
            "key", load_private_key, keyfile if keyfile is not None else certfile)
    if psk_file is not None:
        config.psk = load_psk_file(psk_file)[0]
    if session is None:
        try:  # a session stored on the socket with SESSION_TICKET (tlshd style)
            raw = _get(sock, _OPT.SESSION_TICKET, SESSION_TICKET_MAX)
            if raw:
                session = SessionTicket.from_bytes(raw)
        except (OSError, ValueError):
            session = None
    if session is not None:
        config.session = restore_session(sock, session)
    write, close = _open_keylog(keylog)
    config.keylog = write
    def new_context() -> TlsContext:
        # our transport parameters name the version in use (RFC 9368 §4)
        tp = _get(sock, _OPT.TRANSPORT_PARAM_EXT, TRANSPORT_PARAM_EXT_MAX)
        fresh = TlsContext(config, tp, now=time.time())
        fresh.start()
        return fresh

    try:
        drv = _Driver(sock, new_context(), timeout)
        drv.restart = new_context
        _run(drv)
        ctx = drv.ctx
    finally:
        close()
    result = _result(sock, ctx)
    if cfg_sock.receive_session_ticket:
        data = result.get_session_data(timeout=timeout if timeout is not None else 1.0)
        if data is not None:
            try:
                _set(sock, _OPT.SESSION_TICKET, data)
            except OSError:
                pass
    return result


def server_handshake(
    sock: QuicSocketLike,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    *,
    alpns: str | Sequence[str] | None = None,
    psk_file: str | os.PathLike[str] | None = None,
    cafile: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
    ticket_key: bytes | None = None,
    timeout: float | None = None,
    keylog: KeylogTarget = None,
) -> HandshakeResult:
    """Run the server side of the handshake on an accepted QUIC socket.

    X.509 mode with ``certfile``/``keyfile`` (key defaults to ``certfile``);
    PSK mode with ``psk_file`` (any identity in the file); both may be given.
    ``alpns`` in preference order (default: the socket's ALPN list). Client
    certificates are requested when ``cafile`` is given or CONFIG's
    certificate_request is set, and required with ``require_client_cert``.
    Tickets for resumption and 0-RTT are sealed with ``ticket_key`` (default:
    the socket's SESSION_TICKET key). Raises TlsAlert, TimeoutError, OSError.
    """
    if certfile is None and psk_file is None:
        raise ValueError("server_handshake needs certfile or psk_file")
    cfg_sock = _socket_config(sock)
    alpn_list = parse_alpns(alpns) if alpns is not None else _socket_alpns(sock)
    config = TlsConfig(is_client=False, alpn_protocols=alpn_list)
    suites = _suites_for(cfg_sock)
    if suites:
        config.cipher_suites = suites
    if certfile is not None:
        config.certificate_chain = _cached_load("chain", load_certificates, certfile)
        config.private_key = _cached_load(
            "key", load_private_key, keyfile if keyfile is not None else certfile)
    if psk_file is not None:
        config.psk_keys = dict(load_psk_file(psk_file))
    if require_client_cert:
        config.client_auth = 2
    elif cfg_sock.certificate_request:
        config.client_auth = 2 if cfg_sock.certificate_request >= 2 else 1
    elif cafile is not None:
        config.client_auth = 1
    if config.client_auth:
        config.trust_store = (load_trust_store(None) if cafile is None
                              else _cached_load("store", load_trust_store, cafile))
    if ticket_key is None:
        try:
            ticket_key = _get(sock, _OPT.SESSION_TICKET, TICKET_KEY_LEN) or None
        except OSError:
            ticket_key = None
    config.ticket_key = ticket_key
    write, close = _open_keylog(keylog)
    config.keylog = write
    drv = _Driver(sock, None, timeout)
    try:
        # libquic's order (handshake.c quic_tp_recv/quic_tp_send through GnuTLS):
        # the client's parameters go in with setsockopt before ours are read, so
        # ours reflect what the ClientHello negotiated (e.g. a v2 upgrade).
        ctx = TlsContext(config, drv.local_transport_parameters, now=time.time())
        drv.ctx = ctx
        _run(drv)
    finally:
        close()
    return _result(sock, ctx)


__all__ = [
    "HandshakeResult",
    "TlsAlert",
    "client_handshake",
    "parse_alpns",
    "restore_session",
    "server_handshake",
]
