"""libquic (lxin/quic's user-space handshake library) through cffi ABI mode.

libquic performs the TLS 1.3 handshake of a kernel QUIC socket with GnuTLS:
``quic_client_handshake()`` / ``quic_server_handshake()`` take an fd, a PSK or
key file, a host name and an ALPN list; ``quic_handshake()`` drives a GnuTLS
session the caller configured (needed for resumption and 0-RTT, with
``quic_session_get_data``/``quic_session_set_data``). pyquic opens the library
at run time with ``ffi.dlopen`` (no compiler, no header), so ``import pyquic``
never needs it; a missing library raises ``LibquicNotFound`` only when used.

Search order: an explicit path, ``$PYQUIC_LIBQUIC``, ``ctypes.util.find_library
("quic")``, then ``libquic.so.1`` through the dynamic linker (so
``LD_LIBRARY_PATH`` works). GnuTLS (for ``GnutlsSession``) is found the same
way, or from ``$PYQUIC_GNUTLS``.

Deviations and additions (not in contracts.md):

* ALPN lists are checked before any call (libquic copies them into a 64-byte
  buffer and an array of 5 without checking): ``validate_alpns``.
* A negative return becomes ``LibquicError`` (an OSError) with ``errno =
  -ret``. libquic returns either ``-errno`` or a GnuTLS error code; the two
  ranges overlap, so the message also names the GnuTLS code when one exists.
* ``quic_client_handshake`` in certificate mode loads the system trust store
  but does not verify the server's certificate (libquic never asks GnuTLS
  to); ``GnutlsSession(cafile=..., verify=True)`` does.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno as _errno
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import cffi

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "ALPN_LIST_MAX",
    "ALPN_MAX_ENTRIES",
    "GnutlsSession",
    "Libquic",
    "LibquicError",
    "LibquicNotFound",
    "find_libquic",
    "load_libquic",
    "log_to_logging",
    "quic_client_handshake",
    "quic_server_handshake",
    "quic_set_log_func",
    "quic_set_log_level",
    "validate_alpns",
]

LOGGER = logging.getLogger("pyquic.libquic")

# libquic's quic_session_set_alpn(): a 64-byte buffer (the size must be < 64)
# split into at most 5 gnutls_datum_t entries.
ALPN_LIST_MAX = 63
ALPN_MAX_ENTRIES = 5

INSTALL_HINT = (
    "libquic, the user-space handshake library of the in-kernel QUIC module, was not found. "
    "Build and install it from https://github.com/lxin/quic (./autogen.sh && ./configure "
    "--prefix=PREFIX && make && make install; it needs the GnuTLS development package), "
    "then make it visible with LD_LIBRARY_PATH=PREFIX/lib, or set PYQUIC_LIBQUIC to the "
    "path of libquic.so. Without it, use pyquic's own TLS driver (pyquic.tls.driver)."
)

# Prototypes as in libquic/netinet/quic.h; gnutls types are opaque pointers.
CDEF = """
typedef struct gnutls_session_int *gnutls_session_t;
typedef void (*quic_set_log_func_t)(int level, const char *msg);

int quic_client_handshake(int sockfd, const char *pkey_file,
                          const char *hostname, const char *alpns);
int quic_server_handshake(int sockfd, const char *pkey_file,
                          const char *cert_file, const char *alpns);
int quic_handshake(gnutls_session_t session);
int quic_session_get_data(gnutls_session_t session, void *data, size_t *size);
int quic_session_set_data(gnutls_session_t session, const void *data, size_t size);
int quic_session_get_alpn(gnutls_session_t session, void *data, size_t *size);
int quic_session_set_alpn(gnutls_session_t session, const void *data, size_t size);
ssize_t quic_sendmsg(int sockfd, const void *msg, size_t len, int64_t sid, uint32_t flags);
ssize_t quic_recvmsg(int sockfd, void *msg, size_t len, int64_t *sid, uint32_t *flags);
quic_set_log_func_t quic_set_log_func(quic_set_log_func_t func);
int quic_set_log_level(int level);
"""

# The GnuTLS calls a GnutlsSession needs (gnutls/gnutls.h, 3.7+).
GNUTLS_CDEF = """
typedef struct { unsigned char *data; unsigned int size; } gnutls_datum_t;
typedef struct gnutls_certificate_credentials_st *gnutls_certificate_credentials_t;
typedef struct gnutls_psk_client_credentials_st *gnutls_psk_client_credentials_t;
typedef struct gnutls_psk_server_credentials_st *gnutls_psk_server_credentials_t;

int gnutls_init(gnutls_session_t *session, unsigned int flags);
void gnutls_deinit(gnutls_session_t session);
int gnutls_priority_set_direct(gnutls_session_t session, const char *priorities,
                               const char **err_pos);
int gnutls_credentials_set(gnutls_session_t session, int type, void *cred);
int gnutls_server_name_set(gnutls_session_t session, int type, const void *name,
                           size_t name_length);
void gnutls_transport_set_int2(gnutls_session_t session, int r, int s);
void gnutls_session_set_verify_cert(gnutls_session_t session, const char *hostname,
                                    unsigned int flags);
int gnutls_session_ticket_enable_server(gnutls_session_t session, const gnutls_datum_t *key);
int gnutls_record_set_max_early_data_size(gnutls_session_t session, size_t size);
int gnutls_session_is_resumed(gnutls_session_t session);
unsigned int gnutls_session_get_flags(gnutls_session_t session);
unsigned int gnutls_session_get_verify_cert_status(gnutls_session_t session);
int gnutls_certificate_verification_status_print(unsigned int status, int type,
                                                 gnutls_datum_t *out, unsigned int flags);
extern void (*gnutls_free)(void *ptr);

int gnutls_certificate_allocate_credentials(gnutls_certificate_credentials_t *res);
void gnutls_certificate_free_credentials(gnutls_certificate_credentials_t sc);
int gnutls_certificate_set_x509_system_trust(gnutls_certificate_credentials_t cred);
int gnutls_certificate_set_x509_trust_file(gnutls_certificate_credentials_t cred,
                                           const char *cafile, int type);
int gnutls_certificate_set_x509_key_file(gnutls_certificate_credentials_t res,
                                         const char *certfile, const char *keyfile, int type);

int gnutls_psk_allocate_client_credentials(gnutls_psk_client_credentials_t *sc);
void gnutls_psk_free_client_credentials(gnutls_psk_client_credentials_t sc);
int gnutls_psk_set_client_credentials(gnutls_psk_client_credentials_t res,
                                      const char *username, const gnutls_datum_t *key,
                                      int flags);
int gnutls_psk_allocate_server_credentials(gnutls_psk_server_credentials_t *sc);
void gnutls_psk_free_server_credentials(gnutls_psk_server_credentials_t sc);
int gnutls_psk_set_server_credentials_file(gnutls_psk_server_credentials_t res,
                                           const char *password_file);

const char *gnutls_strerror(int error);
const char *gnutls_strerror_name(int error);
"""

# gnutls.h constants.
_GNUTLS_SERVER = 1
_GNUTLS_CLIENT = 1 << 1
_GNUTLS_ENABLE_EARLY_DATA = 1 << 20
_GNUTLS_NO_AUTO_SEND_TICKET = 1 << 21
_GNUTLS_NO_END_OF_EARLY_DATA = 1 << 22
_GNUTLS_CRD_CERTIFICATE = 1
_GNUTLS_CRD_PSK = 4
_GNUTLS_NAME_DNS = 1
_GNUTLS_X509_FMT_PEM = 1
_GNUTLS_PSK_KEY_RAW = 0
_GNUTLS_E_SHORT_MEMORY_BUFFER = -51
_GNUTLS_SFLAGS_EARLY_DATA = 1 << 10
_GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR = -348
_GNUTLS_CRT_X509 = 1
# libquic's netinet/quic.h QUIC_PRIORITY: TLS 1.3 only, QUIC's cipher suites, no compat mode.
QUIC_PRIORITY = (
    b"NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:+ECDHE-PSK:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    b"+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-SECP256R1:"
    b"+GROUP-X25519:+GROUP-SECP384R1:+GROUP-SECP521R1:"
    b"%DISABLE_TLS13_COMPAT_MODE"
)
# The server's session-ticket key the kernel hands out (QUIC_TICKET_MASTER_KEY_LEN).
_TICKET_KEY_LEN = 64
_SOL_QUIC = 288
_QUIC_SOCKOPT_SESSION_TICKET = 12

# syslog priorities (sys/syslog.h) used by libquic, and their logging levels.
LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7
_SYSLOG_TO_LOGGING = {
    0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, LOG_ERR: logging.ERROR,
    LOG_WARNING: logging.WARNING, LOG_NOTICE: logging.INFO, LOG_INFO: logging.INFO,
    LOG_DEBUG: logging.DEBUG,
}


class LibquicNotFound(ImportError):
    """libquic (or GnuTLS) could not be loaded; the message says what to install."""


class LibquicError(OSError):
    """A libquic call returned a negative value; ``errno`` is ``-ret``, ``code`` is ``ret``."""

    code: int

    def __init__(self, func: str, ret: int, gnutls_name: str | None = None) -> None:
        err = -ret
        try:
            text = os.strerror(err)
        except ValueError:
            text = "unknown error"
        msg = f"{func} failed: {text} ({ret})"
        if gnutls_name:
            msg += f"; as a GnuTLS code: {gnutls_name}"
        super().__init__(err, msg)
        self.code = ret


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


SockLike = int | _HasFileno


def _fd(sock: SockLike) -> int:
    return sock if isinstance(sock, int) else sock.fileno()


def validate_alpns(alpns: str | bytes | Sequence[str | bytes] | None) -> bytes | None:
    """Check an ALPN list against libquic's limits and return it comma-joined.

    libquic splits the string on ',' into at most 5 entries (skipping leading
    spaces) inside a 64-byte buffer and does not check either bound. ValueError
    for: more than 5 entries, an empty entry, a NUL, or 64 bytes or more.
    """
    if alpns is None:
        return None
    if isinstance(alpns, (str, bytes)):
        raw = alpns.encode() if isinstance(alpns, str) else bytes(alpns)
        items = raw.split(b",")
    else:
        items = [a.encode() if isinstance(a, str) else bytes(a) for a in alpns]
    if len(items) > ALPN_MAX_ENTRIES:
        raise ValueError(f"ALPN list has {len(items)} entries, libquic takes at most "
                         f"{ALPN_MAX_ENTRIES}")
    cleaned = []
    for item in items:
        item = item.strip(b" ")
        if not item:
            raise ValueError(f"ALPN list {alpns!r} has an empty entry")
        if b"\0" in item or b"," in item:
            raise ValueError(f"ALPN entry {item!r} contains a NUL or a comma")
        cleaned.append(item)
    value = b",".join(cleaned)
    if len(value) > ALPN_LIST_MAX:
        raise ValueError(f"ALPN list is {len(value)} bytes, libquic takes at most "
                         f"{ALPN_LIST_MAX}")
    return value


def _cstr(value: str | bytes | os.PathLike[str] | None) -> bytes | Any:
    if value is None:
        return _ffi.NULL
    if isinstance(value, bytes):
        data = value
    else:
        data = os.fsencode(value)
    if b"\0" in data:
        raise ValueError(f"{value!r} contains a NUL byte")
    return data


def find_libquic(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the names ``load_libquic`` will try, in order."""
    names: list[str] = []
    if path is not None:
        return [os.fspath(path)]
    env = os.environ.get("PYQUIC_LIBQUIC")
    if env:
        return [env]
    found = ctypes.util.find_library("quic")
    if found:
        names.append(found)
    names.append("libquic.so.1")
    return names


_ffi = cffi.FFI()
_ffi.cdef(CDEF)
_ffi.cdef(GNUTLS_CDEF)


def _dlopen(names: Sequence[str], what: str, hint: str) -> Any:
    errors = []
    for name in names:
        try:
            return _ffi.dlopen(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise LibquicNotFound(f"{hint} (tried {'; '.join(errors) or 'nothing'})", name=what)


class Libquic:
    """One loaded libquic: its handshake, session and log calls.

    Methods release the GIL while libquic runs (cffi does so for every call),
    so a blocking handshake does not stall other Python threads.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        names = find_libquic(path)
        self.lib: Any = _dlopen(names, "libquic", INSTALL_HINT)
        self.path: str = names[0]
        self.ffi = _ffi
        self._gnutls: Any = None
        self._log_cb: Any = None
        self._lock = threading.Lock()
        missing = [n for n in ("quic_client_handshake", "quic_server_handshake",
                               "quic_handshake") if not hasattr(self.lib, n)]
        if missing:
            raise LibquicNotFound(f"{self.path} lacks {', '.join(missing)}: not libquic? "
                                  + INSTALL_HINT, name="libquic")

    # -- errors ------------------------------------------------------------

    @property
    def gnutls(self) -> Any:
        """GnuTLS, loaded on first use (libquic already depends on it)."""
        if self._gnutls is None:
            env = os.environ.get("PYQUIC_GNUTLS")
            names = [env] if env else [n for n in (ctypes.util.find_library("gnutls"),
                                                   "libgnutls.so.30") if n]
            self._gnutls = _dlopen(names, "gnutls",
                                   "GnuTLS (libgnutls.so.30) was not found: install it "
                                   "(Debian: libgnutls30) or set PYQUIC_GNUTLS")
        return self._gnutls

    def gnutls_error_name(self, code: int) -> str | None:
        """The GnuTLS name of an error code, or None (also when GnuTLS is absent)."""
        try:
            name = self.gnutls.gnutls_strerror_name(code)
        except LibquicNotFound:
            return None
        return _ffi.string(name).decode() if name != _ffi.NULL else None

    def check(self, func: str, ret: int) -> int:
        """Raise ``LibquicError`` for a negative return, else return it."""
        if ret < 0:
            raise LibquicError(func, ret, self.gnutls_error_name(ret))
        return ret

    # -- handshakes ----------------------------------------------------------

    def client_handshake(self, sock: SockLike, psk_file: str | os.PathLike[str] | None = None,
                         hostname: str | None = None,
                         alpns: str | bytes | Sequence[str | bytes] | None = None) -> None:
        """``quic_client_handshake``: PSK mode with ``psk_file`` (``identity:hexkey``
        lines, the first is used), else X.509 with SNI ``hostname``."""
        alpn = validate_alpns(alpns)
        ret = self.lib.quic_client_handshake(
            _fd(sock), _cstr(psk_file), _cstr(hostname.encode() if hostname else None),
            _cstr(alpn))
        self.check("quic_client_handshake", ret)

    def server_handshake(self, sock: SockLike, pkey_file: str | os.PathLike[str],
                         cert_file: str | os.PathLike[str] | None = None,
                         alpns: str | bytes | Sequence[str | bytes] | None = None) -> None:
        """``quic_server_handshake``: X.509 with ``cert_file`` and its private key
        ``pkey_file``, or PSK mode with ``pkey_file`` a PSK file and no cert."""
        alpn = validate_alpns(alpns)
        ret = self.lib.quic_server_handshake(_fd(sock), _cstr(pkey_file), _cstr(cert_file),
                                             _cstr(alpn))
        self.check("quic_server_handshake", ret)

    # -- logging -------------------------------------------------------------

    def set_log_level(self, level: int) -> int:
        """Set libquic's syslog-style log level (LOG_ERR..LOG_DEBUG); return the old one."""
        return int(self.lib.quic_set_log_level(level))

    def set_log_func(self, func: Callable[[int, str], None] | None) -> None:
        """Route libquic's messages to ``func(syslog_level, text)``; None restores printf.

        The C callback stays referenced here while installed. Exceptions from
        ``func`` are logged, never propagated into libquic.
        """
        with self._lock:
            if func is None:
                self.lib.quic_set_log_func(_ffi.NULL)
                self._log_cb = None
                return

            def _onerror(exc: Any, value: Any, tb: Any) -> None:
                LOGGER.error("libquic log callback failed: %r", value)

            @_ffi.callback("void(int, const char *)", onerror=_onerror)
            def _cb(level: int, msg: Any) -> None:
                text = _ffi.string(msg).decode("utf-8", "replace") if msg != _ffi.NULL else ""
                func(level, text)

            self.lib.quic_set_log_func(_cb)
            self._log_cb = _cb

    def log_to_logging(self, logger: logging.Logger = LOGGER,
                       level: int | None = None) -> None:
        """Send libquic's messages to ``logger`` (Python ``logging``).

        ``level`` (a logging level) sets how much libquic produces; by default
        it follows the logger's effective level.
        """
        def _emit(syslog_level: int, text: str) -> None:
            logger.log(_SYSLOG_TO_LOGGING.get(syslog_level, logging.DEBUG), "%s", text)

        self.set_log_func(_emit)
        lvl = logger.getEffectiveLevel() if level is None else level
        if lvl <= logging.DEBUG:
            self.set_log_level(LOG_DEBUG)
        elif lvl <= logging.INFO:
            self.set_log_level(LOG_NOTICE)
        else:
            self.set_log_level(LOG_ERR)


_loaded: dict[str, Libquic] = {}
_load_lock = threading.Lock()


def load_libquic(path: str | os.PathLike[str] | None = None) -> Libquic:
    """Load (once per path) and return libquic; ``LibquicNotFound`` if absent."""
    key = os.fspath(path) if path is not None else os.environ.get("PYQUIC_LIBQUIC", "")
    with _load_lock:
        lq = _loaded.get(key)
        if lq is None:
            lq = _loaded[key] = Libquic(path)
        return lq


def quic_client_handshake(sock: SockLike, psk_file: str | os.PathLike[str] | None = None,
                          hostname: str | None = None,
                          alpns: str | bytes | Sequence[str | bytes] | None = None) -> None:
    """Run libquic's client handshake on a kernel QUIC socket (see ``Libquic``)."""
    load_libquic().client_handshake(sock, psk_file, hostname, alpns)


def quic_server_handshake(sock: SockLike, pkey_file: str | os.PathLike[str],
                          cert_file: str | os.PathLike[str] | None = None,
                          alpns: str | bytes | Sequence[str | bytes] | None = None) -> None:
    """Run libquic's server handshake on an accepted kernel QUIC socket."""
    load_libquic().server_handshake(sock, pkey_file, cert_file, alpns)


def quic_set_log_level(level: int) -> int:
    """libquic's ``quic_set_log_level`` (syslog levels); returns the previous level."""
    return load_libquic().set_log_level(level)


def quic_set_log_func(func: Callable[[int, str], None] | None) -> None:
    """libquic's ``quic_set_log_func`` with a Python callable ``func(level, text)``."""
    load_libquic().set_log_func(func)


def log_to_logging(logger: logging.Logger = LOGGER, level: int | None = None) -> None:
    """Route libquic's log to Python ``logging`` (logger ``pyquic.libquic``)."""
    load_libquic().log_to_logging(logger, level)


def read_psk_file(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """Return the first ``(identity, key)`` of a libquic PSK file (``identity:hexkey``)."""
    with open(path, "rb") as f:
        for line in f.read().splitlines():
            line = line.strip()
            if not line:
                continue
            ident, sep, hexkey = line.partition(b":")
            if not sep or not ident:
                raise ValueError(f"{os.fspath(path)}: expected 'identity:hexkey' lines")
            return ident, bytes.fromhex(hexkey.decode("ascii"))
    raise ValueError(f"{os.fspath(path)}: no PSK entry")


class GnutlsSession:
    """A GnuTLS session for ``quic_handshake()``: resumption, 0-RTT, verification.

    Client: ``hostname`` (SNI and, with ``verify``, the name checked),
    ``cafile`` (else the system store), ``psk_file`` for PSK mode,
    ``session_data`` from an earlier connection's ``get_session_data()`` to
    resume (and allow 0-RTT). ``verify`` defaults to True when ``cafile`` is
    given. Server: ``certfile``/``keyfile`` or ``psk_file``; with
    ``session_tickets`` tickets are sealed with ``ticket_key`` or else the key
    read from the socket (SESSION_TICKET) at handshake time, and early data
    is accepted.

    The session must outlive the handshake until ``get_session_data()`` is
    done; ``close()`` (or ``with``) frees it.
    """

    def __init__(self, is_client: bool, *, hostname: str | None = None,
                 alpns: str | bytes | Sequence[str | bytes] | None = None,
                 cafile: str | os.PathLike[str] | None = None,
                 certfile: str | os.PathLike[str] | None = None,
                 keyfile: str | os.PathLike[str] | None = None,
                 psk_file: str | os.PathLike[str] | None = None,
                 session_data: bytes | None = None, verify: bool | None = None,
                 session_tickets: bool = True, ticket_key: bytes | None = None,
                 libquic: Libquic | None = None) -> None:
        self.libquic = libquic or load_libquic()
        self.is_client = is_client
        g = self.libquic.gnutls
        self._g = g
        self._keep: list[Any] = []  # C buffers the session points at
        self._cred: Any = None
        self._cred_free: Callable[[Any], None] | None = None
        self._session: Any = None
        self._sock: SockLike | None = None
        self._session_tickets = session_tickets and not is_client
        self._ticket_key = ticket_key
        alpn = validate_alpns(alpns)
        if verify is None:
            verify = cafile is not None

        flags = _GNUTLS_CLIENT if is_client else _GNUTLS_SERVER | _GNUTLS_NO_AUTO_SEND_TICKET
        flags |= _GNUTLS_ENABLE_EARLY_DATA | _GNUTLS_NO_END_OF_EARLY_DATA
        sp = _ffi.new("gnutls_session_t *")
        self._check_g("gnutls_init", g.gnutls_init(sp, flags))
        self._session = sp[0]
        try:
            if psk_file is not None:
                crd = _GNUTLS_CRD_PSK
                if is_client:
                    ident, key = read_psk_file(psk_file)
                    cp = _ffi.new("gnutls_psk_client_credentials_t *")
                    self._check_g("psk_allocate", g.gnutls_psk_allocate_client_credentials(cp))
                    self._cred, self._cred_free = cp[0], g.gnutls_psk_free_client_credentials
                    kbuf = _ffi.new("unsigned char[]", key)
                    datum = _ffi.new("gnutls_datum_t *", (kbuf, len(key)))
                    self._check_g("psk_set_client", g.gnutls_psk_set_client_credentials(
                        self._cred, ident, datum, _GNUTLS_PSK_KEY_RAW))
                else:
                    sp2 = _ffi.new("gnutls_psk_server_credentials_t *")
                    self._check_g("psk_allocate", g.gnutls_psk_allocate_server_credentials(sp2))
                    self._cred, self._cred_free = sp2[0], g.gnutls_psk_free_server_credentials
                    self._check_g("psk_set_server", g.gnutls_psk_set_server_credentials_file(
                        self._cred, _cstr(psk_file)))
            else:
                crd = _GNUTLS_CRD_CERTIFICATE
                cp3 = _ffi.new("gnutls_certificate_credentials_t *")
                self._check_g("cert_allocate", g.gnutls_certificate_allocate_credentials(cp3))
                self._cred = cp3[0]
                self._cred_free = g.gnutls_certificate_free_credentials
                if cafile is not None:
                    n = g.gnutls_certificate_set_x509_trust_file(self._cred, _cstr(cafile),
                                                                 _GNUTLS_X509_FMT_PEM)
                else:
                    n = g.gnutls_certificate_set_x509_system_trust(self._cred)
                self._check_g("trust", n)
                if not is_client:
                    if certfile is None or keyfile is None:
                        raise ValueError("a certificate-mode server needs certfile and keyfile")
                    self._check_g("set_x509_key_file", g.gnutls_certificate_set_x509_key_file(
                        self._cred, _cstr(certfile), _cstr(keyfile), _GNUTLS_X509_FMT_PEM))
            self._check_g("credentials_set", g.gnutls_credentials_set(self._session, crd,
                                                                      self._cred))
            self._check_g("priority_set", g.gnutls_priority_set_direct(
                self._session, QUIC_PRIORITY, _ffi.NULL))
            if alpn is not None:
                self.libquic.check("quic_session_set_alpn", self.libquic.lib.quic_session_set_alpn(
                    self._session, alpn, len(alpn)))
            if is_client and hostname:
                name = hostname.encode()
                self._check_g("server_name_set", g.gnutls_server_name_set(
                    self._session, _GNUTLS_NAME_DNS, name, len(name)))
            if is_client and verify:
                # GnuTLS keeps the pointer, not a copy: hold the buffer.
                hbuf = _ffi.new("char[]", hostname.encode()) if hostname else _ffi.NULL
                self._keep.append(hbuf)
                g.gnutls_session_set_verify_cert(self._session, hbuf, 0)
            if is_client and session_data:
                buf = _ffi.new("unsigned char[]", session_data)
                self._keep.append(buf)
                self.libquic.check("quic_session_set_data", self.libquic.lib.quic_session_set_data(
                    self._session, buf, len(session_data)))
        except BaseException:
            self.close()
            raise

    def _check_g(self, what: str, ret: int) -> int:
        if ret < 0:
            raise LibquicError(f"gnutls {what}", ret, self.libquic.gnutls_error_name(ret))
        return ret

    def attach(self, sock: SockLike) -> int:
        """Bind the session to ``sock`` (GnuTLS transport fd); ``handshake`` does it."""
        if self._session is None:
            raise ValueError("GnutlsSession is closed")
        fd = _fd(sock)
        self._g.gnutls_transport_set_int2(self._session, fd, fd)
        self._sock = sock
        return fd

    def handshake(self, sock: SockLike) -> None:
        """Bind the session to ``sock`` and run ``quic_handshake()``.

        Blocks until the handshake completes or fails; libquic itself has no
        timeout (the connection's idle timeout ends a silent peer).
        """
        fd = self.attach(sock)
        g = self._g
        if self._session_tickets:
            # The kernel derives the ticket key (socket.c get_session_ticket).
            from pyquic.abi import libc

            key = self._ticket_key or libc.getsockopt(fd, _SOL_QUIC,
                                                      _QUIC_SOCKOPT_SESSION_TICKET,
                                                      _TICKET_KEY_LEN)
            kbuf = _ffi.new("unsigned char[]", key)
            datum = _ffi.new("gnutls_datum_t *", (kbuf, len(key)))
            self._keep += [kbuf, datum]
            self._check_g("session_ticket_enable_server",
                          g.gnutls_session_ticket_enable_server(self._session, datum))
            self._check_g("set_max_early_data_size",
                          g.gnutls_record_set_max_early_data_size(self._session, 0xFFFFFFFF))
        ret = self.libquic.lib.quic_handshake(self._session)
        if ret == _GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR:
            raise LibquicError("quic_handshake", ret,
                               f"GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR: {self.verify_status()}")
        self.libquic.check("quic_handshake", ret)

    def verify_status(self) -> str:
        """GnuTLS's text for the peer certificate's verification status."""
        if self._session is None:
            return "session closed"
        g = self._g
        status = g.gnutls_session_get_verify_cert_status(self._session)
        out = _ffi.new("gnutls_datum_t *")
        if g.gnutls_certificate_verification_status_print(status, _GNUTLS_CRT_X509, out, 0) < 0:
            return f"status 0x{status:x}"
        try:
            return _ffi.string(out.data, out.size).decode("utf-8", "replace")
        finally:
            g.gnutls_free(out.data)

    @property
    def resumed(self) -> bool:
        """True when the handshake resumed an earlier session."""
        return bool(self._session is not None and self._g.gnutls_session_is_resumed(self._session))

    @property
    def early_data_accepted(self) -> bool:
        """True when the server took this connection's 0-RTT data (RFC 8446 §4.2.10)."""
        return bool(self._session is not None
                    and self._g.gnutls_session_get_flags(self._session) & _GNUTLS_SFLAGS_EARLY_DATA)

    def get_alpn(self) -> str | None:
        """The negotiated ALPN, or None."""
        if self._session is None:
            return None
        buf = _ffi.new("char[]", 256)
        size = _ffi.new("size_t *", 256)
        if self.libquic.lib.quic_session_get_alpn(self._session, buf, size) < 0:
            return None
        return bytes(_ffi.buffer(buf, size[0])).decode()

    def get_session_data(self, bufsize: int = 8192) -> bytes:
        """Client: the resumption data (from the kernel's NewSessionTicket), or
        b"" while no ticket has arrived yet (wait for the NEW_SESSION_TICKET
        event or retry)."""
        if self._session is None:
            raise ValueError("GnutlsSession is closed")
        for _ in range(4):  # grow once or twice if GnuTLS asks for more room
            buf = _ffi.new("unsigned char[]", bufsize)
            size = _ffi.new("size_t *", bufsize)
            ret = self.libquic.lib.quic_session_get_data(self._session, buf, size)
            if ret == _GNUTLS_E_SHORT_MEMORY_BUFFER and size[0] > bufsize:
                bufsize = int(size[0])
                continue
            self.libquic.check("quic_session_get_data", ret)
            return bytes(_ffi.buffer(buf, size[0]))
        raise LibquicError("quic_session_get_data", -_errno.EMSGSIZE)

    def close(self) -> None:
        """Free the GnuTLS session and credentials."""
        if self._session is not None:
            self._g.gnutls_deinit(self._session)
            self._session = None
        if self._cred is not None and self._cred_free is not None:
            self._cred_free(self._cred)
            self._cred = None
        self._keep.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
