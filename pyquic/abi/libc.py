"""libc getsockopt/setsockopt through cffi.

CPython's ``socket.getsockopt(level, opt, buflen)`` hands the kernel an
uninitialised buffer and caps ``buflen`` at 1024, but several SOL_QUIC options
are in/out (the buffer carries input: STREAM_OPEN, EVENT, CONNECTION_ID,
TRANSPORT_PARAM) and session tickets reach 4 KiB. These wrappers call libc
directly (``ffi.dlopen(None)``, in-line ABI mode: no compiler needed).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import cffi

_ffi = cffi.FFI()
_ffi.cdef(
    """
    typedef unsigned int socklen_t;
    int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen);
    int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen);
    """
)
_libc: Any = _ffi.dlopen(None)


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FdLike = int | _HasFileno


def _fd(fd: FdLike) -> int:
    return fd if isinstance(fd, int) else fd.fileno()


def _raise_errno(what: str) -> None:
    err = _ffi.errno
    raise OSError(err, f"{what}: {os.strerror(err)}")


def getsockopt(fd: FdLike, level: int, opt: int, buf: bytes | bytearray | int) -> bytes:
    """Call getsockopt(2) and return the ``optlen`` bytes the kernel wrote back.

    ``buf`` as bytes is an in/out buffer: its content is passed in and its
    length is the buffer size. As an int it is the size of a zeroed buffer.
    Raises OSError with the call's errno.
    """
    if isinstance(buf, int):
        if buf < 0:
            raise ValueError(f"getsockopt: negative buffer size {buf}")
        size = buf
        cbuf = _ffi.new("char[]", max(size, 1))
    else:
        size = len(buf)
        cbuf = _ffi.new("char[]", bytes(buf) if size else 1)
    optlen = _ffi.new("socklen_t *", size)
    if _libc.getsockopt(_fd(fd), level, opt, cbuf, optlen) != 0:
        _raise_errno("getsockopt")
    return _ffi.unpack(cbuf, min(optlen[0], size))


def setsockopt(fd: FdLike, level: int, opt: int, value: bytes | bytearray | int | None) -> None:
    """Call setsockopt(2) with bytes, a native int (4 bytes), or None (NULL, length 0).

    Raises OSError with the call's errno.
    """
    if value is None:
        ptr: Any = _ffi.NULL
        size = 0
    elif isinstance(value, int):
        ptr = _ffi.new("int *", value)
        size = _ffi.sizeof("int")
    else:
        size = len(value)
        ptr = _ffi.from_buffer(value) if size else _ffi.new("char[]", 1)
    if _libc.setsockopt(_fd(fd), level, opt, ptr, size) != 0:
        _raise_errno("setsockopt")
