"""Helpers shared by the ``pyquic`` commands: sockets, handshakes, waiting, errors.

Every command talks to QUIC only through the socket API (``pyquic.socket_api``
and the typed helpers both backends mix in), so each one runs unchanged on the
kernel and the user backend. What a user may get wrong (a busy port, a
missing certificate, nobody answering) is turned into :class:`CliError`, whose
message is printed as one line by ``pyquic.__main__``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from pyquic import abi
from pyquic.socket_api import select_backend
from pyquic.socket_api import socket as quic_socket

__all__ = [
    "CIPHER_SUITE_NAMES",
    "CliError",
    "Progress",
    "StreamWriter",
    "addr_text",
    "backend_label",
    "backend_of",
    "bind_and_listen",
    "check_cert_key",
    "check_psk",
    "cipher_name",
    "client_handshake",
    "connect_socket",
    "format_rate",
    "format_size",
    "new_socket",
    "parse_hostport",
    "reason",
    "recv_message",
    "resolve",
    "run_loop",
    "server_handshake",
    "set_config",
    "set_transport_param",
    "temporary_certificate",
    "wait_readable",
]

# RFC 8446 §B.4 cipher suites, by IANA value.
CIPHER_SUITE_NAMES = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
}

CIPHERS_BY_NAME = {
    "aes128gcm": abi.TlsCipher.AES_GCM_128,
    "aes256gcm": abi.TlsCipher.AES_GCM_256,
    "aes128ccm": abi.TlsCipher.AES_CCM_128,
    "chacha20": abi.TlsCipher.CHACHA20_POLY1305,
}


class CliError(Exception):
    """An error to show the user as a single line (no traceback unless --debug)."""


def backend_label(backend: str) -> str:
    """Human-readable name of a backend ("user" or "kernel")."""
    return {"user": "user (pure Python)", "kernel": "kernel (IPPROTO_QUIC module)"}.get(
        backend, backend)


def cipher_name(suite: int) -> str:
    """The RFC 8446 name of a TLS 1.3 cipher suite value."""
    return CIPHER_SUITE_NAMES.get(suite, f"cipher suite 0x{suite:04x}")


def format_size(n: float) -> str:
    """Bytes in binary units: ``1 KiB``, ``2.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            if unit == "B" or float(n).is_integer():
                return f"{int(n)} {unit}"
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop always returns


def format_rate(nbytes: int, seconds: float) -> str:
    """Throughput in Mbit/s (decimal megabits, as iperf prints)."""
    seconds = max(seconds, 1e-9)
    return f"{nbytes * 8 / seconds / 1e6:.2f} Mbit/s"


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or ``v6`` into (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if text.count(":") == 1:
        host, _, port_s = text.partition(":")
        return host, int(port_s)
    return text, default_port


def resolve(host: str, port: int, *, passive: bool = False) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) for a host and port; IPv4 preferred, as the interop tools do."""
    try:
        infos = socket.getaddrinfo(host or None, port, 0, socket.SOCK_DGRAM, 0,
                                   socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as exc:
        raise CliError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    fam, _t, _p, _c, addr = infos[0]
    return int(fam), tuple(addr)


def backend_of(sock: Any) -> str:
    """"user" or "kernel": which backend a QUIC socket object belongs to."""
    return str(getattr(sock, "backend", "kernel"))


def new_socket(family: int, backend: str | None) -> Any:
    """A QUIC socket on the chosen backend, with a clear error if that is impossible."""
    try:
        return quic_socket(family, socket.SOCK_DGRAM, abi.IPPROTO_QUIC, backend=backend)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    except (OSError, RuntimeError) as exc:
        which = select_backend(backend) if backend in (None, "", "auto", "user", "kernel") else backend
        raise CliError(f"cannot create a QUIC socket on the {which} backend: {exc}") from exc


def set_transport_param(sock: Any, **fields: int) -> None:
    """Set some TRANSPORT_PARAM fields (the kernel keeps the ones left at zero)."""
    sock.setsockopt(abi.SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM, abi.TransportParam(**fields).pack())


def set_config(sock: Any, **fields: int) -> None:
    """Set some CONFIG fields (zero fields keep their current value, as in the kernel)."""
    sock.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG, abi.Config(**fields).pack())


def check_cert_key(certfile: str | None, keyfile: str | None) -> None:
    """Load a certificate and its key up front, turning any problem into one line."""
    from pyquic.tls.x509 import load_certificates, load_private_key

    def why(exc: BaseException, path: str) -> str:
        text = reason(exc)
        if text.startswith(f"{path}: "):
            text = text[len(path) + 2:]
        return text.split(". See ", 1)[0]

    if certfile is not None:
        try:
            load_certificates(certfile)
        except (OSError, ValueError, TypeError) as exc:
            raise CliError(f"bad certificate file {certfile}: {why(exc, certfile)}") from exc
    if keyfile is not None:
        try:
            load_private_key(keyfile)
        except (OSError, ValueError, TypeError) as exc:
            raise CliError(f"bad private key file {keyfile}: {why(exc, keyfile)}") from exc


def check_psk(path: str | None) -> None:
    """Read a PSK file (libquic's ``identity:hexkey`` lines) up front, with a one-line error."""
    if path is None:
        return
    from pyquic.tls.psk import load_psk_file

    try:
        load_psk_file(path)
    except (OSError, ValueError) as exc:
        raise CliError(f"bad PSK file {path}: {reason(exc)}") from exc


def reason(exc: BaseException) -> str:
    """A short one-line description of an exception."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def temporary_certificate(hostname: str = "localhost",
                          names: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
                          ) -> Iterator[tuple[str, str]]:
    """A fresh self-signed certificate and key as files in a temporary directory.

    Yields ``(certfile, keyfile)``; the directory is removed afterwards.
    """
    from pyquic.tls.x509 import generate_self_signed

    cert_pem, key_pem = generate_self_signed(hostname, names)
    with tempfile.TemporaryDirectory(prefix="pyquic-") as tmp:
        certfile = os.path.join(tmp, "cert.pem")
        keyfile = os.path.join(tmp, "key.pem")
        with open(certfile, "wb") as f:
            f.write(cert_pem)
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        yield certfile, keyfile


def bind_and_listen(sock: Any, addr: tuple[Any, ...], alpns: Sequence[str] = (),
                    backlog: int = 16) -> None:
    """ALPN, bind and listen, with one-line errors for a busy or foreign address."""
    if alpns:
        sock.set_alpn(list(alpns))
    try:
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        where = addr_text(addr)
        if exc.errno == errno.EADDRINUSE:
            raise CliError(f"cannot listen on {where}: port {addr[1]} is already in use") from exc
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise CliError(f"cannot listen on {where}: address not available here") from exc
        if exc.errno == errno.EACCES:
            raise CliError(f"cannot listen on {where}: permission denied "
                           f"(ports below 1024 need privileges)") from exc
        raise CliError(f"cannot listen on {where}: {reason(exc)}") from exc


def addr_text(addr: Any) -> str:
    """``host:port`` or ``[v6]:port`` for an address tuple."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        return str(addr)
    host = str(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def connect_socket(sock: Any, addr: tuple[Any, ...]) -> None:
    """connect() (installs the Initial keys) with a one-line error."""
    try:
        sock.connect(addr)
    except OSError as exc:
        raise CliError(f"cannot connect to {addr_text(addr)}: {reason(exc)}") from exc


def _handshake_error(exc: BaseException, peer: str, timeout: float | None,
                     side: str) -> CliError:
    from pyquic.tls.messages import TlsAlert

    if isinstance(exc, TlsAlert):
        text = str(exc).split(" (encountered", 1)[0]  # drop cryptography's certificate dump
        return CliError(f"handshake with {peer} failed: {text}")
    if isinstance(exc, TimeoutError):
        if side == "client":
            return CliError(f"no answer from {peer} within {timeout:g} s "
                            f"(is a QUIC server listening there?)")
        return CliError(f"handshake with {peer} timed out after {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError):
        return CliError(f"connection refused by {peer} (nothing listening on that port)")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or (
            isinstance(exc, OSError) and exc.errno in (errno.ENOTCONN, errno.EPIPE)):
        return CliError(f"handshake refused by {peer}: the peer closed the connection")
    if isinstance(exc, OSError):
        return CliError(f"handshake with {peer} failed: {reason(exc)}")
    return CliError(f"handshake with {peer} failed: {exc}")


def client_handshake(sock: Any, peer: tuple[Any, ...], hostname: str | None,
                     alpns: Sequence[str], *, timeout: float, cafile: str | None = None,
                     verify: bool = True, psk_file: str | None = None,
                     session: bytes | None = None, keylog: Any = None) -> Any:
    """Run pyquic's TLS client over ``sock``; returns the driver's HandshakeResult."""
    from pyquic.tls import driver

    try:
        return driver.client_handshake(sock, hostname, list(alpns), cafile=cafile, verify=verify,
                                       psk_file=psk_file, session=session, timeout=timeout,
                                       keylog=keylog)
    except (OSError, driver.TlsAlert) as exc:
        closed = _close_reason(sock) if isinstance(exc, TimeoutError) else None
        if closed:  # the connection was closed with an error: say why, not "no answer"
            raise CliError(f"handshake with {addr_text(peer)} failed: {closed}") from exc
        raise _handshake_error(exc, addr_text(peer), timeout, "client") from exc


def _close_reason(sock: Any) -> str | None:
    """The error code and phrase of a connection closed with an error, if the socket says."""
    try:
        info = sock.get_close_info()
    except (OSError, ValueError, AttributeError):
        return None
    if not info.errcode and not info.phrase:
        return None
    phrase = info.phrase.decode("utf-8", "replace")
    return f"connection closed with error 0x{info.errcode:x}" + (f" ({phrase})" if phrase else "")


def server_handshake(sock: Any, peer: tuple[Any, ...], certfile: str | None,
                     keyfile: str | None, alpns: Sequence[str], *, timeout: float,
                     psk_file: str | None = None, keylog: Any = None) -> Any:
    """Run pyquic's TLS server over an accepted ``sock``; returns the HandshakeResult."""
    from pyquic.tls import driver

    try:
        return driver.server_handshake(sock, certfile, keyfile, alpns=list(alpns),
                                       psk_file=psk_file, timeout=timeout, keylog=keylog)
    except (OSError, driver.TlsAlert) as exc:
        raise _handshake_error(exc, addr_text(peer), timeout, "server") from exc


def wait_readable(sock: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``sock`` to become readable (the user
    backend's ``wait_readable``, else ``poll`` on ``sock.fileno()``)."""
    wait = getattr(sock, "wait_readable", None)
    if wait is not None:
        return bool(wait(max(0.0, timeout)))
    fd = sock.fileno()
    if fd < 0:
        return True
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000))))


def recv_message(sock: Any, deadline: float, what: str = "data", wait_first: bool = False) -> Any:
    """Next QuicMessage, waiting until the monotonic ``deadline`` (CliError on timeout).

    Returns None when the connection is closed (ENOTCONN/ECONNRESET/EPIPE).
    ``wait_first``: nothing is expected yet (e.g. right after a request), so
    wait for readability before the first read instead of after a failed one.
    """
    if wait_first:
        wait_readable(sock, min(max(deadline - time.monotonic(), 0.0), 0.5))
    for _ in range(10_000_000):
        try:
            return sock.recv_message(65536, socket.MSG_DONTWAIT)
        except InterruptedError:
            continue
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno in (errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE):
                return None
            raise
        left = deadline - time.monotonic()
        if left <= 0:
            raise CliError(f"timed out waiting for {what}")
        wait_readable(sock, min(left, 0.5))
    raise CliError(f"gave up waiting for {what}")  # pragma: no cover


class Progress:
    """A once-a-second progress line on stderr (rewritten in place on a terminal)."""

    def __init__(self, label: str, stream: IO[str] | None = None, interval: float = 1.0,
                 enabled: bool = True) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.start = time.monotonic()
        self._last_t = self.start
        self._last_n = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lines = 0

    def update(self, nbytes: int, extra: str = "", now: float | None = None) -> None:
        """Report ``nbytes`` done so far if a second has passed since the last line."""
        now = time.monotonic() if now is None else now
        if not self.enabled or now - self._last_t < self.interval:
            return
        rate = format_rate(nbytes - self._last_n, now - self._last_t)
        line = (f"{self.label}: {format_size(nbytes)} in {now - self.start:.1f} s, "
                f"{rate}{extra}")
        self.stream.write(("\r" + line + "\033[K") if self._tty else line + "\n")
        self.stream.flush()
        self.lines += 1
        self._last_t, self._last_n = now, nbytes

    def done(self) -> None:
        """End the in-place line on a terminal."""
        if self.enabled and self._tty and self.lines:
            self.stream.write("\n")
            self.stream.flush()


class _Outgoing:
    __slots__ = ("chunk", "eof", "fin", "offset", "sid", "source")

    def __init__(self, sid: int, source: bytes | IO[bytes], fin: bool) -> None:
        self.sid = sid
        self.source = source
        self.chunk: bytes | memoryview = source if isinstance(source, bytes) else b""
        self.offset = 0
        self.fin = fin
        self.eof = isinstance(source, bytes)


class StreamWriter:
    """Queued stream sends written without blocking, so one thread can read and write.

    A peer that is itself blocked writing to us only unblocks when we read, so
    every command that both sends and receives queues its sends here and
    interleaves :meth:`flush` with reads (see :func:`run_loop`). Sources are
    bytes or binary files (read lazily, ``CHUNK`` bytes at a time).
    """

    CHUNK = 65536

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.pending: list[_Outgoing] = []
        self.sent = 0

    @property
    def busy(self) -> bool:
        """True while some data is still queued."""
        return bool(self.pending)

    def queue(self, sid: int, source: bytes | IO[bytes], fin: bool = True) -> None:
        """Send ``source`` on stream ``sid`` (already open), ending it with FIN if ``fin``."""
        self.pending.append(_Outgoing(sid, source, fin))

    def flush(self) -> bool:
        """Write as much as the socket takes now; True if anything was written."""
        progressed = False
        blocked: set[int] = set()  # keep each stream's queued items in order
        for out in list(self.pending):
            if out.sid in blocked:
                continue
            blocked.add(out.sid)
            for _ in range(1024):  # bounded: each turn sends a chunk or stops
                if out.offset >= len(out.chunk) and not out.eof:
                    assert not isinstance(out.source, bytes)
                    out.chunk = out.source.read(self.CHUNK)
                    out.offset = 0
                    if len(out.chunk) < self.CHUNK:
                        out.eof = True
                view = memoryview(out.chunk)[out.offset:out.offset + self.CHUNK]
                last = out.eof and out.offset + len(view) >= len(out.chunk)
                if not len(view) and not last:
                    continue
                try:
                    n = self.sock.send_stream(out.sid, view, fin=last and out.fin,
                                              msg_flags=socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break  # send buffer full
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # this stream's flow-control limit (socket.c: ENOSPC with a cmsg)
                out.offset += n
                self.sent += n
                progressed = progressed or n > 0 or last
                if n < len(view):
                    break
                if last:
                    self.pending.remove(out)
                    blocked.discard(out.sid)
                    if not isinstance(out.source, bytes):
                        out.source.close()
                    break
        return progressed


def run_loop(sock: Any, writer: StreamWriter | None, on_message: Any, done: Any,
             deadline: float, what: str = "the peer", tick: Any = None) -> bool:
    """Read messages (``on_message(msg)``) and flush ``writer`` until ``done()``.

    ``tick()``, if given, runs every turn and returns True when it made
    progress (e.g. opened streams). Returns True when ``done()`` became true,
    False when the connection closed first; raises CliError at the monotonic
    ``deadline``.
    """
    for _ in range(100_000_000):
        if done():
            return True
        progressed = bool(tick()) if tick is not None else False
        if writer is not None and writer.flush():
            progressed = True
        drained = False  # the last read found nothing, or an answer went out
        for _ in range(256):
            try:
                msg = sock.recv_message(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                drained = True
                break
            except OSError as exc:
                if exc.errno in (errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE):
                    return bool(done())
                raise
            if (not msg.data and not msg.msg_flags and msg.stream_id is None
                    and msg.level is None):
                return bool(done())  # a 0-byte read without cmsg: the connection ended
            progressed = True
            idle = writer is not None and not writer.busy
            on_message(msg)
            if done():
                return True
            if idle and writer is not None and writer.busy:
                # the answer leaves now (a request/response peer waits for it);
                # then wait instead of reading again: a request seldom has
                # another behind it, and the wait returns at once if it has.
                # (With a backlog queued, reading goes on: the turn flushes.)
                writer.flush()
                drained = True
                break
        if progressed:
            if not drained or tick is not None or (writer is not None and writer.busy):
                continue  # more to read, to tick or to write: go round at once
            if done():
                return True
            # nothing left to read or write: wait (at once if more arrived)
        left = deadline - time.monotonic()
        if left <= 0:
            raise CliError(f"timed out waiting for {what}")
        busy = writer is not None and writer.busy
        wait_readable(sock, 0.002 if busy else min(left, 0.2))
    return bool(done())  # pragma: no cover
