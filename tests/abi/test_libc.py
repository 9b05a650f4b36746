"""pyquic.abi.libc getsockopt/setsockopt against a real UDP socket (127.0.0.1 only)."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator

import pytest

from pyquic.abi import libc


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def test_getsockopt_int_size_matches_python(udp: socket.socket) -> None:
    raw = libc.getsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, 4)
    assert len(raw) == 4
    assert struct.unpack("=i", raw)[0] == udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # fd as an int works too
    assert libc.getsockopt(udp.fileno(), socket.SOL_SOCKET, socket.SO_TYPE, 4) == struct.pack(
        "=i", socket.SOCK_DGRAM)


def test_getsockopt_returns_optlen_bytes(udp: socket.socket) -> None:
    # a larger buffer comes back trimmed to what the kernel wrote
    assert len(libc.getsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, 64)) == 4


def test_getsockopt_in_out_buffer(udp: socket.socket) -> None:
    """A bytes buffer is passed in (its content is what the kernel sees) and written back."""
    out = libc.getsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, b"\xaa" * 4)
    assert out != b"\xaa" * 4  # overwritten by the kernel
    assert struct.unpack("=i", out)[0] == udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    # SO_LINGER copies back 8 bytes of struct linger over our 8 input bytes
    linger = libc.getsockopt(udp, socket.SOL_SOCKET, socket.SO_LINGER, bytes(range(1, 9)))
    assert linger == bytes(8)


def test_setsockopt_int_and_bytes(udp: socket.socket) -> None:
    libc.setsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 65536  # Linux doubles
    libc.setsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, struct.pack("=i", 32768))
    assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * 32768
    libc.setsockopt(udp.fileno(), socket.SOL_SOCKET, socket.SO_REUSEADDR, bytearray(
        struct.pack("=i", 1)))
    assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1


def test_errno_on_bad_option(udp: socket.socket) -> None:
    with pytest.raises(OSError) as info:
        libc.getsockopt(udp, socket.SOL_SOCKET, 0x7FFF, 4)
    assert info.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as info:
        libc.setsockopt(udp, socket.SOL_SOCKET, 0x7FFF, 1)
    assert info.value.errno == errno.ENOPROTOOPT
    # optlen shorter than an int: EINVAL
    with pytest.raises(OSError) as info:
        libc.setsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, b"\x01")
    assert info.value.errno == errno.EINVAL
    # no value (NULL, 0) where the option needs one
    with pytest.raises(OSError) as info:
        libc.setsockopt(udp, socket.SOL_SOCKET, socket.SO_RCVBUF, None)
    assert info.value.errno == errno.EINVAL


def test_errno_on_bad_fd() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = sock.fileno()
    sock.close()
    with pytest.raises(OSError) as info:
        libc.getsockopt(fd, socket.SOL_SOCKET, socket.SO_RCVBUF, 4)
    assert info.value.errno == errno.EBADF


def test_negative_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        libc.getsockopt(0, socket.SOL_SOCKET, socket.SO_RCVBUF, -1)


class _FakeLibc:
    """Stands in for libc to observe exactly what the wrapper passes (an in/out option)."""

    def __init__(self) -> None:
        self.seen: bytes = b""
        self.seen_len = -1

    def getsockopt(self, fd: int, level: int, opt: int, buf: object, optlen: object) -> int:
        ffi = libc._ffi
        size = optlen[0]  # type: ignore[index]
        self.seen_len = size
        self.seen = ffi.unpack(ffi.cast("char *", buf), size)
        out = self.seen[::-1][:3]
        ffi.memmove(buf, out, len(out))
        optlen[0] = len(out)  # type: ignore[index]
        return 0


def test_in_out_marshalling(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeLibc()
    monkeypatch.setattr(libc, "_libc", fake)
    assert libc.getsockopt(3, 288, 1, b"\x01\x02\x03\x04\x05") == b"\x05\x04\x03"
    assert fake.seen == b"\x01\x02\x03\x04\x05" and fake.seen_len == 5
    assert libc.getsockopt(3, 288, 1, 4096) == bytes(3)
    assert fake.seen == bytes(4096) and fake.seen_len == 4096  # int: zeroed buffer, no 1024 cap
