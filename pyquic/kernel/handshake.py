"""Handshakes of kernel QUIC sockets: libquic or pyquic's TLS driver, one call shape.

``client_handshake``/``server_handshake`` here take the arguments of
``pyquic.tls.driver``'s functions and run either that driver or libquic
(``pyquic.kernel.libquic``), chosen by ``driver=`` or ``$PYQUIC_HANDSHAKE``
("libquic", "pyquic", or "auto": libquic where it loads, else pyquic's own).
So a machine with the module but without libquic still handshakes.

The libquic path drives a ``GnutlsSession`` through ``quic_handshake()`` and
returns a ``LibquicResult`` with the attributes tests and applications read
from the driver's ``HandshakeResult`` (alpn, session_resumed,
early_data_accepted, get_session_data). Its session data is libquic's own
format: GnuTLS session data plus the peer's TRANSPORT_PARAM (for 0-RTT), not
interchangeable with the pyquic driver's.

libquic has no handshake timeout; ``timeout`` here shuts the socket down when
it expires (the blocked libquic call then fails) and raises TimeoutError.
"""

from __future__ import annotations

import os
import socket as _socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyquic.abi.constants import SOL_QUIC, SockOpt
from pyquic.abi.structs import TransportParam
from pyquic.kernel.libquic import GnutlsSession, Libquic, LibquicNotFound, load_libquic

__all__ = [
    "HANDSHAKE_ENV",
    "LibquicResult",
    "client_handshake",
    "libquic_client_handshake",
    "libquic_restore_session",
    "libquic_server_handshake",
    "restore_session",
    "select_driver",
    "server_handshake",
]

HANDSHAKE_ENV = "PYQUIC_HANDSHAKE"
_SESSION_MAGIC = b"PQLQ"  # pyquic libquic session blob, version 1
PathLike = str | os.PathLike[str]


def select_driver(driver: str | None = None) -> str:
    """Return "libquic" or "pyquic" for ``driver`` (default ``$PYQUIC_HANDSHAKE``)."""
    choice = (driver if driver is not None else os.environ.get(HANDSHAKE_ENV, "")).strip().lower()
    if choice in ("", "auto"):
        try:
            load_libquic()
        except LibquicNotFound:
            return "pyquic"
        return "libquic"
    if choice not in ("libquic", "pyquic"):
        raise ValueError(f"unknown handshake driver {choice!r} (use 'libquic' or 'pyquic')")
    return choice


@dataclass
class LibquicResult:
    """What a libquic handshake negotiated; the GnuTLS session stays open for
    ``get_session_data`` until ``close()``."""

    alpn: str | None
    session_resumed: bool
    early_data_accepted: bool
    session: GnutlsSession = field(repr=False)
    _sock: Any = field(default=None, repr=False)
    _data: bytes | None = field(default=None, repr=False)

    @property
    def session_data(self) -> bytes | None:
        """Session data already fetched by ``get_session_data``."""
        return self._data

    def get_session_data(self, timeout: float = 1.0) -> bytes | None:
        """Client: wait up to ``timeout`` s for the server's ticket and return
        resumption data (GnuTLS session + peer transport parameters), or None."""
        if self._data is not None:
            return self._data
        deadline = time.monotonic() + max(0.0, timeout)
        data = b""
        for _ in range(100_000):
            data = self.session.get_session_data()
            if data or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if not data:
            return None
        tp = _getopt(self._sock, SockOpt.TRANSPORT_PARAM, TransportParam(remote=1).pack())
        self._data = _SESSION_MAGIC + struct.pack("!I", len(data)) + data + tp
        return self._data

    def close(self) -> None:
        """Free the GnuTLS session."""
        self.session.close()


def _getopt(sock: Any, opt: int, buf: bytes | int) -> bytes:
    if hasattr(sock, "getsockopt"):
        return bytes(sock.getsockopt(SOL_QUIC, opt, buf))
    from pyquic.abi import libc

    return libc.getsockopt(sock, SOL_QUIC, opt, buf)


def _socket_alpns(sock: Any) -> str | None:
    """The socket's ALPN option (the default list, as the pyquic driver uses)."""
    try:
        raw = _getopt(sock, SockOpt.ALPN, 128)
    except OSError:
        return None
    return raw.decode() or None


def _split_session(session: bytes) -> tuple[bytes, bytes]:
    if not session.startswith(_SESSION_MAGIC) or len(session) < 8:
        raise ValueError("not a libquic session blob from LibquicResult.get_session_data()")
    (n,) = struct.unpack_from("!I", session, 4)
    data = session[8:8 + n]
    if len(data) != n:
        raise ValueError("truncated libquic session blob")
    return data, session[8 + n:]


def libquic_restore_session(sock: Any, session: bytes) -> None:
    """Before connecting again: install the peer's transport parameters saved
    in ``session`` (TRANSPORT_PARAM, remote=1) so 0-RTT data can be sent."""
    _data, tp = _split_session(session)
    if tp:
        sock.setsockopt(SOL_QUIC, SockOpt.TRANSPORT_PARAM, tp)


def _run(session: GnutlsSession, sock: Any, timeout: float | None) -> None:
    if timeout is None:
        session.handshake(sock)
        return
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        fd = sock if isinstance(sock, int) else sock.fileno()
        try:  # shutdown through a dup: it acts on the shared socket, not the fd
            with _socket.socket(fileno=os.dup(fd)) as dup:
                dup.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        session.handshake(sock)
    except OSError as exc:
        if fired.is_set():
            raise TimeoutError(f"QUIC handshake did not finish in {timeout} s") from exc
        raise
    finally:
        timer.cancel()


def libquic_client_handshake(sock: Any, hostname: str | None = None,
                             alpns: str | Sequence[str] | None = None, *,
                             cafile: PathLike | None = None, verify: bool = True,
                             psk_file: PathLike | None = None, session: bytes | None = None,
                             timeout: float | None = None,
                             libquic: Libquic | None = None, **_ignored: Any) -> LibquicResult:
    """Client handshake through libquic's ``quic_handshake()`` on a GnuTLS session.

    ``verify`` checks the server certificate against ``cafile`` (else the
    system store) and ``hostname``; ``session`` (from ``get_session_data``)
    resumes and allows 0-RTT.
    """
    data = _split_session(session)[0] if session else None
    if alpns is None:
        alpns = _socket_alpns(sock)
    gs = GnutlsSession(True, hostname=hostname, alpns=alpns, cafile=cafile,
                       psk_file=psk_file, session_data=data,
                       verify=verify and psk_file is None, libquic=libquic)
    try:
        _run(gs, sock, timeout)
    except BaseException:
        gs.close()
        raise
    return LibquicResult(gs.get_alpn(), gs.resumed, gs.early_data_accepted, gs, sock)


def libquic_server_handshake(sock: Any, certfile: PathLike | None = None,
                             keyfile: PathLike | None = None, *,
                             alpns: str | Sequence[str] | None = None,
                             psk_file: PathLike | None = None, ticket_key: bytes | None = None,
                             timeout: float | None = None, libquic: Libquic | None = None,
                             **_ignored: Any) -> LibquicResult:
    """Server handshake through libquic on an accepted kernel socket; tickets
    are sealed with ``ticket_key`` or the socket's SESSION_TICKET key."""
    if certfile is None and psk_file is None:
        raise ValueError("server_handshake needs certfile or psk_file")
    if alpns is None:
        alpns = _socket_alpns(sock)
    gs = GnutlsSession(False, alpns=alpns, certfile=certfile,
                       keyfile=keyfile if keyfile is not None else certfile,
                       psk_file=psk_file if certfile is None else None,
                       ticket_key=ticket_key, libquic=libquic)
    try:
        _run(gs, sock, timeout)
    except BaseException:
        gs.close()
        raise
    return LibquicResult(gs.get_alpn(), gs.resumed, gs.early_data_accepted, gs, sock)


def client_handshake(sock: Any, hostname: str | None = None,
                     alpns: str | Sequence[str] | None = None, *, driver: str | None = None,
                     **kwargs: Any) -> Any:
    """Client handshake with the selected driver (see ``select_driver``)."""
    if select_driver(driver) == "libquic":
        return libquic_client_handshake(sock, hostname, alpns, **kwargs)
    from pyquic.tls import driver as tls_driver

    return tls_driver.client_handshake(sock, hostname, alpns, **kwargs)


def server_handshake(sock: Any, certfile: PathLike | None = None,
                     keyfile: PathLike | None = None, *, driver: str | None = None,
                     **kwargs: Any) -> Any:
    """Server handshake with the selected driver (see ``select_driver``)."""
    if select_driver(driver) == "libquic":
        return libquic_server_handshake(sock, certfile, keyfile, **kwargs)
    from pyquic.tls import driver as tls_driver

    return tls_driver.server_handshake(sock, certfile, keyfile, **kwargs)


def restore_session(sock: Any, session: Any, *, driver: str | None = None) -> None:
    """Install saved peer transport parameters before a resumed connect."""
    if select_driver(driver) == "libquic":
        libquic_restore_session(sock, session)
        return
    from pyquic.tls import driver as tls_driver

    tls_driver.restore_session(sock, session)
