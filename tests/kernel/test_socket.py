"""KernelSocket plumbing without the QUIC module: real UDP/TCP fds stand in.

KernelSocket adopts any fd (``fileno=``), so its getsockopt routing through
libc, its accept() wrapping and its sendmsg cmsgs are exercised on sockets the
stock kernel has. Cases needing IPPROTO_QUIC live in test_kernel.py.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct

import pytest

from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC, SockOpt, StreamFlag
from pyquic.kernel.available import kernel_available
from pyquic.kernel.socket import KernelSocket

TIMEOUT = 5.0


def _udp() -> KernelSocket:
    return KernelSocket.wrap(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))


def test_is_a_standard_socket_with_helpers() -> None:
    with _udp() as s:
        assert isinstance(s, socket.socket)
        assert callable(s.open_stream) and callable(s.recv_message)
        assert s.type == socket.SOCK_DGRAM and s.proto == 0


def test_getsockopt_bytes_buffer_goes_through_libc() -> None:
    with _udp() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stdlib = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bytes(4))
        assert isinstance(raw, bytes) and len(raw) == 4
        assert struct.unpack("=i", raw)[0] == stdlib
        # int buflen at another level is the standard library's call.
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4) == raw


def test_sol_quic_reads_errno_from_libc_beyond_1024_bytes() -> None:
    # A UDP socket knows no SOL_QUIC: the libc path reports the kernel's errno,
    # and a 4096-byte buffer (beyond CPython's 1024 cap) is accepted.
    with _udp() as s:
        with pytest.raises(OSError) as std:
            socket.socket.getsockopt(s, SOL_QUIC, SockOpt.SESSION_TICKET, 16)
        assert std.value.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP)
        with pytest.raises(OSError) as ei:
            s.getsockopt(SOL_QUIC, SockOpt.SESSION_TICKET, 4096)
        assert ei.value.errno == std.value.errno
        with pytest.raises(OSError) as ei:
            s.get_transport_param()
        assert ei.value.errno == std.value.errno


def test_sendmsg_with_stream_info_cmsg_reaches_peer() -> None:
    # UDP ignores SOL_QUIC cmsgs, so the stdlib sendmsg path with our cmsg is
    # checked end to end (the cmsg is well-formed enough for the kernel to parse).
    with _udp() as tx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        tx.connect(rx.getsockname())
        assert tx.send_stream(0, b"hello", fin=True, flags=StreamFlag.NEW) == 5
        assert rx.recv(100) == b"hello"


def test_recvmsg_keeps_stdlib_signature() -> None:
    with _udp() as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        tx.sendto(b"abc", rx.getsockname())
        data, anc, flags, addr = rx.recvmsg(100, socket.CMSG_SPACE(16))
        assert (data, anc, flags) == (b"abc", [], 0)
        assert addr == tx.getsockname()


def test_fileno_works_with_select() -> None:
    with _udp() as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"x", rx.getsockname())
        r, _, _ = select.select([rx], [], [], TIMEOUT)
        assert r == [rx]


def test_accept_returns_kernel_socket() -> None:
    lst = KernelSocket.wrap(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    with lst, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as cli:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.settimeout(TIMEOUT)
        cli.connect(lst.getsockname())
        conn, addr = lst.accept()
        with conn:
            assert type(conn) is KernelSocket
            assert addr == cli.getsockname()
            assert conn.gettimeout() is None  # as socket.accept(): default mode
            cli.sendall(b"hi")
            conn.settimeout(TIMEOUT)
            assert conn.recv(10) == b"hi"


def test_wrap_keeps_timeout_and_detaches_original() -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.settimeout(1.5)
    fd = raw.fileno()
    ks = KernelSocket.wrap(raw)
    with ks:
        assert ks.fileno() == fd and raw.fileno() == -1
        assert ks.gettimeout() == 1.5


def test_dup_keeps_class() -> None:
    with _udp() as s, s.dup() as d:
        assert type(d) is KernelSocket


def test_rejects_other_protocols() -> None:
    with pytest.raises(ValueError):
        KernelSocket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)


@pytest.mark.skipif(kernel_available(), reason="the QUIC module is loaded here")
def test_without_module_creation_fails_with_kernel_errno() -> None:
    with pytest.raises(OSError) as ei:
        KernelSocket()
    assert ei.value.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ESOCKTNOSUPPORT)


@pytest.mark.skipif(not kernel_available(), reason="needs the in-kernel QUIC module")
def test_with_module_defaults() -> None:
    with KernelSocket() as s:
        assert (s.family, s.type, s.proto) == (socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)


def test_send_with_timeout_tries_at_once_and_keeps_fd(recwarn: pytest.WarningsRecorder) -> None:
    with _udp() as tx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        tx.connect(rx.getsockname())
        tx.settimeout(TIMEOUT)
        fd = tx.fileno()
        assert tx.sendmsg([b"a", b"b"], [], 0) == 2
        assert tx.send(b"c") == 1
        assert tx.sendmsg([b"d"], [], 0, rx.getsockname()) == 1
        assert [rx.recv(10) for _ in range(3)] == [b"ab", b"c", b"d"]
        assert tx.fileno() == fd and tx.gettimeout() == TIMEOUT
        os.fstat(fd)  # the twin used for the first attempt did not close the fd
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


def test_ipv6_socket_maps_ipv4_literals() -> None:
    # The QUIC module accepts IPv4 addresses on AF_INET6 sockets; CPython would
    # reject "127.0.0.1" there, so KernelSocket passes the v4-mapped form.
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with KernelSocket.wrap(s6) as s, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        assert s._addr(("127.0.0.1", 5)) == ("::ffff:127.0.0.1", 5)
        assert s._addr(("::1", 5, 0, 0)) == ("::1", 5, 0, 0)
        assert s._addr(("localhost", 5)) == ("localhost", 5)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        s.bind(("127.0.0.1", 0))  # a dual-stack UDP socket takes the mapped address
        assert s.getsockname()[0] == "::ffff:127.0.0.1"
        s.connect(rx.getsockname())
        s.send(b"v4")
        assert rx.recv(10) == b"v4"
