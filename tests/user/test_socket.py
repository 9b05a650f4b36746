"""Tests of pyquic.user.socket specifics: lifecycle, readiness, addresses, chooser."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time

import pytest

from pyquic import abi
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC
from pyquic.socket_api import select_backend
from pyquic.socket_api import socket as qsocket
from pyquic.user.loop import LOOP
from pyquic.user.socket import QuicSocket, pack_sockaddr, unpack_sockaddr


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settle(threads: int, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and threading.active_count() > threads:
        time.sleep(0.01)


def test_no_thread_or_fd_leak() -> None:
    LOOP.join_stopped()
    threads = threading.active_count()
    fds = _fds()
    socks = []
    lst = QuicSocket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    socks.append(lst)
    assert LOOP.running
    for _ in range(5):
        c = QuicSocket()
        c.connect(("127.0.0.1", lst.getsockname()[1]))
        socks.append(c)
    six = QuicSocket(socket.AF_INET6)
    six.bind(("::1", 0))
    socks.append(six)
    assert threading.active_count() == threads + 1
    assert _fds() > fds
    for s in socks:
        s.close()
    _settle(threads)
    assert not LOOP.running
    assert threading.active_count() == threads
    assert _fds() == fds
    lst.close()  # closing twice is harmless
    assert lst.fileno() == -1
    with pytest.raises(OSError) as info:
        lst.getsockname()
    assert info.value.errno == errno.EBADF


def test_readiness_of_unconnected_and_listener() -> None:
    with QuicSocket() as s, QuicSocket() as lst:
        # a CLOSED socket polls readable and writable (quic_inet_poll)
        r, w, _ = select.select([s], [s], [], 0)
        assert r == [s] and w == [s]
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        r, w, _ = select.select([lst], [lst], [], 0)
        assert r == [] and w == []


def test_listener_becomes_readable_on_initial() -> None:
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        c.connect(lst.getsockname())
        # the first Initial goes out when the ClientHello is sent; fake one by
        # sending handshake bytes at the Initial level
        c.sendmsg([b"\x01\x00\x00\x04" + bytes(4)], [abi.handshake_info_cmsg(1)])
        r, _, _ = select.select([lst], [], [], 5.0)
        assert r == [lst]
        lst.settimeout(5)
        srv, peer = lst.accept()
        with srv:
            assert peer == c.getsockname()
            assert srv.getpeername() == c.getsockname()
            assert srv.getsockname() == lst.getsockname()
            # the client's Initial is already in, as its handshake message
            data, anc, _flags, _ = srv.recvmsg(4096, 64, socket.MSG_DONTWAIT)
            assert data == b"\x01\x00\x00\x04" + bytes(4)
            assert anc and anc[0][:2] == (SOL_QUIC, abi.CmsgType.HANDSHAKE_INFO)
        r, _, _ = select.select([lst], [], [], 0)
        assert r == []


def test_accept_nonblocking_and_timeout() -> None:
    with QuicSocket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.setblocking(False)
        with pytest.raises(BlockingIOError):
            lst.accept()
        lst.settimeout(0.05)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            lst.accept()
        assert time.monotonic() - t0 >= 0.04


def test_recv_timeout_and_dontwait() -> None:
    with QuicSocket() as c:
        c.connect(("127.0.0.1", 9))
        with pytest.raises(BlockingIOError):
            c.recvmsg(100, 0, socket.MSG_DONTWAIT)
        c.settimeout(0.05)
        with pytest.raises(TimeoutError):
            c.recv(100)


def test_close_wakes_blocked_recv() -> None:
    c = QuicSocket()
    c.connect(("127.0.0.1", 9))
    out: dict[str, BaseException] = {}

    def reader() -> None:
        try:
            c.recv(100)
        except OSError as exc:
            out["e"] = exc

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)
    c.close()
    t.join(3)
    assert not t.is_alive()
    assert isinstance(out.get("e"), OSError)


def test_sockaddr_roundtrip() -> None:
    assert unpack_sockaddr(pack_sockaddr(("127.0.0.1", 4433))) == ("127.0.0.1", 4433)
    assert unpack_sockaddr(pack_sockaddr(("::1", 4433, 0, 0))) == ("::1", 4433, 0, 0)
    assert len(pack_sockaddr(("127.0.0.1", 1))) == 16
    assert len(pack_sockaddr(("::1", 1, 0, 0))) == 28
    with pytest.raises(OSError):
        unpack_sockaddr(b"\x02\x00")


def test_backend_chooser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYQUIC_BACKEND", "user")
    assert select_backend() == "user"
    with qsocket() as s:
        assert isinstance(s, QuicSocket)
        assert s.proto == IPPROTO_QUIC
    monkeypatch.setenv("PYQUIC_BACKEND", "bogus")
    with pytest.raises(ValueError):
        select_backend()
    assert select_backend("user") == "user"  # the argument wins
    monkeypatch.delenv("PYQUIC_BACKEND")
    from pyquic.kernel.available import kernel_available

    assert select_backend() == ("kernel" if kernel_available() else "user")


def test_repr_and_attributes() -> None:
    with QuicSocket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        assert s.family == socket.AF_INET6 and s.type == socket.SOCK_STREAM
        assert "QuicSocket" in repr(s)
        assert s.gettimeout() is None
        s.settimeout(2)
        assert s.gettimeout() == 2.0 and s.getblocking()
        s.setblocking(False)
        assert s.gettimeout() == 0.0 and not s.getblocking()
    with pytest.raises(OSError) as info:
        QuicSocket(socket.AF_UNIX)
    assert info.value.errno == errno.EAFNOSUPPORT


def test_backlog_full_refuses() -> None:
    with QuicSocket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)  # the kernel queues backlog + 1
        clients = [QuicSocket() for _ in range(3)]
        try:
            for c in clients:
                c.connect(lst.getsockname())
                c.sendmsg([b"\x01\x00\x00\x04" + bytes(4)], [abi.handshake_info_cmsg(1)])
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(lst._queue) < 2:
                time.sleep(0.02)
            time.sleep(0.1)
            assert len(lst._queue) == 2
            # the third client was refused: its connection is closed
            end = time.monotonic() + 5
            while time.monotonic() < end and not clients[2]._is_closed():
                time.sleep(0.02)
            assert clients[2]._is_closed()
            assert not clients[0]._is_closed()
        finally:
            for c in clients:
                c.close()
