"""API misuse of the user backend's socket from Python: wrong types, closed
sockets, options at the wrong time, absurd sizes.  Each must raise a clear
exception (OSError with the kernel's errno, TypeError, ValueError or
OverflowError as socket.socket does) and nothing may leak threads or file
descriptors."""

from __future__ import annotations

import errno
import gc
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("pyquic.user.socket")

from pyquic import abi
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC
from pyquic.user.loop import LOOP

CLEAR = (OSError, TypeError, ValueError, OverflowError)


def qsocket() -> Any:
    from pyquic.socket_api import socket as make

    return make(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC, backend="user")


@pytest.fixture
def sock() -> Iterator[Any]:
    s = qsocket()
    yield s
    s.close()


def raises_clear(f: Callable[[], object]) -> BaseException:
    with pytest.raises(CLEAR) as ei:
        f()
    return ei.value


def test_wrong_types(sock: Any) -> None:
    raises_clear(lambda: sock.sendmsg(["not bytes"]))
    raises_clear(lambda: sock.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, 3.5))
    raises_clear(lambda: sock.connect("nowhere"))
    raises_clear(lambda: sock.bind(("127.0.0.1", 70000)))
    raises_clear(lambda: sock.recvmsg(-1))


def test_options_at_the_wrong_time(sock: Any) -> None:
    e = raises_clear(lambda: sock.sendmsg([b"x"], [abi.stream_info_cmsg(0, 0x400)]))
    assert isinstance(e, OSError) and e.errno in (errno.EPIPE, errno.ENOTCONN)
    e = raises_clear(lambda: sock.setsockopt(SOL_QUIC, abi.SockOpt.KEY_UPDATE, b""))
    assert isinstance(e, OSError)
    e = raises_clear(lambda: sock.setsockopt(SOL_QUIC, 999, b"x"))
    assert isinstance(e, OSError) and e.errno == errno.ENOPROTOOPT


def test_absurd_option_sizes(sock: Any) -> None:
    e = raises_clear(lambda: sock.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"a" * 100_000))
    assert isinstance(e, OSError) and e.errno == errno.EINVAL
    e = raises_clear(lambda: sock.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM, b"x"))
    assert isinstance(e, OSError) and e.errno == errno.EINVAL


def test_absurd_getsockopt_buflen(sock: Any) -> None:
    raises_clear(lambda: sock.getsockopt(SOL_QUIC, abi.SockOpt.ALPN, 1 << 40))


def test_closed_socket(sock: Any) -> None:
    sock.close()
    for f in (lambda: sock.sendmsg([b"x"]), lambda: sock.recvmsg(10),
              lambda: sock.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"a"),
              lambda: sock.connect(("127.0.0.1", 9))):
        e = raises_clear(f)
        assert isinstance(e, OSError) and e.errno == errno.EBADF, e
    assert sock.fileno() == -1
    sock.close()  # idempotent, as socket.socket


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_fd_or_thread_leak_over_many_sockets() -> None:
    """Open, bind, listen, connect (to nowhere) and close 50 sockets: once the I/O
    thread's linger is cut short, the fd and thread counts are back where they were."""
    first = qsocket()  # start the backend's I/O thread once
    first.close()
    LOOP.join_stopped(idle=True)
    gc.collect()
    fds, threads = _fds(), threading.active_count()
    for i in range(50):
        s = qsocket()
        s.bind(("127.0.0.1", 0))
        if i % 2:
            s.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"x")
            s.listen(4)
        else:
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", 9))
            except OSError as e:
                assert e.errno in (errno.EINPROGRESS, errno.EAGAIN, errno.ECONNREFUSED), e
        s.close()
    LOOP.join_stopped(idle=True)
    gc.collect()
    assert _fds() <= fds, (fds, _fds())
    assert threading.active_count() <= threads
