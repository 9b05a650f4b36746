"""Unit tests of pyquic.kernel.libquic that need no QUIC module.

ALPN validation, the missing-library error, the cffi declarations, and (where
libquic is installed: on the library path or via PYQUIC_LIBQUIC) error mapping,
log routing to ``logging`` and GnuTLS session setup.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import cffi
import pytest

from pyquic.kernel import libquic as lq_mod
from pyquic.kernel.libquic import (
    CDEF,
    GnutlsSession,
    Libquic,
    LibquicError,
    LibquicNotFound,
    read_psk_file,
    validate_alpns,
)

PSK_HEX = "b8d3a37be2c9a08eaf25cf6abe602ecc94417f8ba6211a58b8d0a3fb0d2e3a90"


@pytest.mark.parametrize(
    ("alpns", "expected"),
    [
        (None, None),
        ("h3", b"h3"),
        ("smbd, h3, ksmbd", b"smbd,h3,ksmbd"),
        (["a", b"b", "c", "d", "e"], b"a,b,c,d,e"),
        ("x" * 63, b"x" * 63),
    ],
)
def test_validate_alpns_accepts(alpns: Any, expected: bytes | None) -> None:
    assert validate_alpns(alpns) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "a,b,c,d,e,f",  # 6 entries: libquic's array holds 5
        "x" * 64,  # libquic's buffer is 64 bytes with a NUL
        "h3,",
        ",h3",
        "h3, ,smb",
        "",
        "a\0b",
        ["a,b"],
    ],
)
def test_validate_alpns_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        validate_alpns(bad)


def test_missing_libquic_is_clear_import_error(tmp_path: Path) -> None:
    with pytest.raises(LibquicNotFound) as ei:
        Libquic(tmp_path / "libquic-nonexistent.so")
    assert isinstance(ei.value, ImportError)
    msg = str(ei.value)
    assert "lxin/quic" in msg and "PYQUIC_LIBQUIC" in msg and "LD_LIBRARY_PATH" in msg


def test_env_variable_names_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = str(tmp_path / "nope.so")
    monkeypatch.setenv("PYQUIC_LIBQUIC", bogus)
    assert lq_mod.find_libquic() == [bogus]
    with pytest.raises(LibquicNotFound) as ei:
        lq_mod.quic_client_handshake(0, None, "h", "h3")
    assert bogus in str(ei.value)


def test_import_pyquic_never_needs_libquic(tmp_path: Path) -> None:
    env = dict(os.environ, PYQUIC_LIBQUIC=str(tmp_path / "missing.so"), LD_LIBRARY_PATH="")
    code = ("import pyquic, pyquic.kernel.libquic as m, pyquic.kernel.socket;"
            "print(m.validate_alpns('h3').decode())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2], check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "h3"


def test_cdef_declares_the_libquic_api() -> None:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.cdef(lq_mod.GNUTLS_CDEF)
    t = ffi.typeof("quic_set_log_func_t")
    assert t.kind == "function" and t.result.cname == "void"
    assert [a.cname for a in t.args] == ["int", "char *"]
    # gnutls_datum_t {unsigned char *data; unsigned int size;}
    assert ffi.sizeof("gnutls_datum_t") == 2 * ffi.sizeof("void *")
    assert ffi.offsetof("gnutls_datum_t", "size") == ffi.sizeof("void *")


def _libquic_include() -> Path | None:
    for d in filter(None, [os.environ.get("PYQUIC_LIBQUIC_INCLUDE"), "/usr/include",
                           "/usr/local/include"]):
        if (Path(d) / "netinet" / "quic.h").exists() and (Path(d) / "linux" / "quic.h").exists():
            return Path(d)
    return None


@pytest.mark.skipif(_libquic_include() is None or shutil.which("gcc") is None,
                    reason="needs gcc and libquic's netinet/quic.h (set PYQUIC_LIBQUIC_INCLUDE)")
def test_cdef_matches_real_header_in_api_mode(tmp_path: Path) -> None:
    """Compile the declarations against the real header: a mismatch is an error."""
    inc = _libquic_include()
    ffi = cffi.FFI()
    # The real header defines gnutls_session_t; declare it opaque as the header does.
    ffi.cdef(CDEF.replace("typedef struct gnutls_session_int *gnutls_session_t;",
                          "typedef ... *gnutls_session_t;"))
    ffi.set_source("_libquic_check", "#include <netinet/quic.h>", include_dirs=[str(inc)],
                   extra_compile_args=["-Werror"])
    ffi.compile(tmpdir=str(tmp_path))  # raises on any prototype mismatch


@pytest.fixture
def libquic() -> Libquic:
    try:
        return lq_mod.load_libquic()
    except LibquicNotFound as exc:
        pytest.skip(f"libquic not installed: {exc.args[0][:60]}...")


@pytest.mark.parametrize(
    ("name", "args", "result"),
    [
        ("quic_client_handshake", ["int", "char *", "char *", "char *"], "int"),
        ("quic_server_handshake", ["int", "char *", "char *", "char *"], "int"),
        ("quic_handshake", ["struct gnutls_session_int *"], "int"),
        ("quic_session_get_data", ["struct gnutls_session_int *", "void *", "size_t *"], "int"),
        ("quic_session_set_data", ["struct gnutls_session_int *", "void *", "size_t"], "int"),
        ("quic_sendmsg", ["int", "void *", "size_t", "int64_t", "uint32_t"], "ssize_t"),
        ("quic_set_log_level", ["int"], "int"),
    ],
)
def test_loaded_functions_have_declared_types(libquic: Libquic, name: str, args: list[str],
                                              result: str) -> None:
    t = libquic.ffi.typeof(getattr(libquic.lib, name))
    assert [a.cname for a in t.args] == args
    assert t.result.cname == result


def test_read_psk_file(tmp_path: Path) -> None:
    f = tmp_path / "psk.txt"
    f.write_text(f"test2:{PSK_HEX}\ntest1:00\n")
    assert read_psk_file(f) == (b"test2", bytes.fromhex(PSK_HEX))
    f.write_text("garbage\n")
    with pytest.raises(ValueError):
        read_psk_file(f)


def test_negative_return_is_oserror_with_errno(libquic: Libquic, tmp_path: Path) -> None:
    # A PSK file that cannot be read: libquic returns -EINVAL before any I/O.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as ei:
        libquic.client_handshake(s, tmp_path / "absent.txt", None, "h3")
    assert isinstance(ei.value, LibquicError)
    assert ei.value.errno == errno.EINVAL and ei.value.code == -errno.EINVAL


def test_alpn_checked_before_calling_libquic(libquic: Libquic) -> None:
    with pytest.raises(ValueError):
        libquic.client_handshake(-1, None, None, "a,b,c,d,e,f")


def test_log_callback_routes_to_logging(libquic: Libquic, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    # quic_session_get_data() on a UDP fd: getsockopt(SOL_QUIC) fails and
    # libquic logs an error through the installed callback.
    old = libquic.set_log_level(lq_mod.LOG_DEBUG)
    try:
        libquic.log_to_logging(level=logging.DEBUG)
        with caplog.at_level(logging.DEBUG, logger="pyquic.libquic"), \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
                GnutlsSession(True, hostname="localhost", libquic=libquic) as g:
            g.attach(s)
            with pytest.raises(LibquicError):
                g.get_session_data()
        recs = [r for r in caplog.records if r.name == "pyquic.libquic"]
        assert recs and recs[0].levelno == logging.ERROR
        assert "session ticket" in recs[0].getMessage()
    finally:
        libquic.set_log_func(None)
        libquic.set_log_level(old)


def test_gnutls_sessions_build_for_each_mode(libquic: Libquic, tmp_path: Path) -> None:
    from tests.kernel.keys import write_keys

    k = write_keys(tmp_path)
    with GnutlsSession(True, hostname="server.test", alpns="h3", cafile=k.ca,
                       libquic=libquic) as g:
        assert g.get_alpn() is None  # nothing negotiated yet
    with GnutlsSession(False, certfile=k.cert, keyfile=k.key, alpns="h3", libquic=libquic):
        pass
    with GnutlsSession(True, psk_file=k.client_psk, libquic=libquic):
        pass
    with GnutlsSession(False, psk_file=k.server_psk, libquic=libquic):
        pass
    with pytest.raises(LibquicError):
        GnutlsSession(False, certfile=tmp_path / "no.pem", keyfile=k.key, libquic=libquic)
    with pytest.raises(ValueError):
        GnutlsSession(False, libquic=libquic)
