"""KernelSocket plumbing without the QUIC module: real UDP/TCP fds stand in.

KernelSocket adopts any fd (``fileno=``), so its getsockopt routing through
libc, its accept() wrapping and its sendmsg cmsgs are exercised on sockets the
stock kernel has. Cases needing IPPROTO_QUIC live in test_kernel.py.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import socket
import struct
import threading
import time

import pytest

from pyquic.abi.cmsg import stream_info_cmsg
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC, CmsgType, SockOpt, StreamFlag
from pyquic.abi.structs import StreamInfo
from pyquic.kernel import socket as ksocket
from pyquic.kernel.available import kernel_available
from pyquic.kernel.socket import KernelSocket, _dont_wait

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


def _timed_sender() -> tuple[KernelSocket, socket.socket]:
    """A KernelSocket over UDP with a timeout that has sent once, and its peer."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(TIMEOUT)
    tx = _udp()
    tx.connect(rx.getsockname())
    tx.settimeout(TIMEOUT)
    assert tx.send(b"x") == 1
    assert rx.recv(10) == b"x"
    return tx, rx


def test_timed_sends_reuse_one_twin() -> None:
    tx, rx = _timed_sender()
    with tx, rx:
        twin = tx._twin
        assert twin is not None and twin.fileno() == tx.fileno() and twin.gettimeout() == 0.0
        assert tx.sendmsg([b"y"]) == 1 and tx.send(b"z") == 1
        tx.sendall(b"w")
        assert tx._twin is twin
        assert [rx.recv(10) for _ in range(3)] == [b"y", b"z", b"w"]


@pytest.mark.parametrize("how", ["close", "detach", "collect"])
def test_twin_never_closes_a_recycled_fd(how: str) -> None:
    """Once the socket gives up its fd (close, detach, or garbage collection
    of an unclosed socket), the twin no longer owns that number: dropping the
    twin afterwards must not close the file that reused it."""
    tx, rx = _timed_sender()
    with rx:
        twin = tx._twin
        assert twin is not None
        fd = tx.fileno()
        other = os.open(os.devnull, os.O_RDONLY)  # (taken before fd is free)
        if how == "close":
            tx.close()
        elif how == "detach":
            os.close(tx.detach())
        else:
            with pytest.warns(ResourceWarning):
                del tx
        os.dup2(other, fd)  # another file takes the freed number
        os.close(other)
        try:
            if how != "collect":  # a send on the closed socket fails as on any socket
                with pytest.raises(OSError) as ei:
                    tx.send(b"late")
                assert ei.value.errno == errno.EBADF
            del twin
            gc.collect()
            os.fstat(fd)  # still open
        finally:
            os.close(fd)


def _dont_wait_reference(flags: int, ancdata: list[tuple[int, int, object]]) -> bool:
    """The rule written with the ABI classes (socket.c quic_msghdr_parse)."""
    if flags & socket.MSG_DONTWAIT:
        return True
    sflags = flags
    for level, ctype, data in ancdata:
        raw = bytes(data)  # type: ignore[call-overload]
        if level == SOL_QUIC and ctype == CmsgType.STREAM_INFO and len(raw) >= StreamInfo.SIZE:
            sflags = StreamInfo.unpack(raw).stream_flags
    return bool(sflags & StreamFlag.DONTWAIT)


def test_dont_wait_follows_flags_and_the_stream_info_cmsg() -> None:
    dw = int(StreamFlag.DONTWAIT)
    info = StreamInfo(4, dw | int(StreamFlag.FIN)).pack()
    plain = StreamInfo(4, int(StreamFlag.FIN)).pack()
    cases: list[tuple[int, list[tuple[int, int, object]]]] = [
        (0, []), (dw, []), (socket.MSG_DONTWAIT, []),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), info)]),
        (dw, [(SOL_QUIC, int(CmsgType.STREAM_INFO), plain)]),  # the cmsg's flags win
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), bytearray(info))]),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), memoryview(info))]),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), info[:12])]),  # short: ignored
        (dw, [(SOL_QUIC, int(CmsgType.STREAM_INFO), info[:8])]),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), info + bytes(4))]),
        (0, [(socket.SOL_SOCKET, int(CmsgType.STREAM_INFO), info)]),
        (0, [(SOL_QUIC, int(CmsgType.HANDSHAKE_INFO), info)]),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), plain),
             (SOL_QUIC, int(CmsgType.STREAM_INFO), info)]),
        (0, [(SOL_QUIC, int(CmsgType.STREAM_INFO), info),
             (SOL_QUIC, int(CmsgType.STREAM_INFO), plain)]),
    ]
    got = [_dont_wait(f, a) for f, a in cases]
    assert got == [_dont_wait_reference(f, a) for f, a in cases]
    assert got == [False, True, True, True, False, True, True, False, True, True,
                   False, False, True, False]


@pytest.mark.parametrize("how", ["close", "detach", "exit"])
def test_giving_up_the_fd_detaches_the_twin(how: str) -> None:
    tx, rx = _timed_sender()
    with rx:
        twin = tx._twin
        assert twin is not None and twin.fileno() == tx.fileno()
        if how == "close":
            tx.close()
        elif how == "detach":
            os.close(tx.detach())
        else:
            tx.__exit__(None, None, None)
        assert twin.fileno() == -1 and tx._twin is None


def test_twin_stays_while_a_makefile_object_keeps_the_fd() -> None:
    # socket.close() leaves the fd open while makefile() objects use it; the
    # twin goes with the fd, not with the first close().
    tx, rx = _timed_sender()
    with rx:
        twin = tx._twin
        assert twin is not None
        fd = tx.fileno()
        f = tx.makefile("wb", buffering=0)
        tx.close()
        assert twin.fileno() == fd and tx.fileno() == fd
        f.close()
        assert twin.fileno() == -1 and tx.fileno() == -1


def test_borrowed_socket_never_closes_its_fd() -> None:
    # The twin's class: neither close()/with nor garbage collection closes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as owner:
        fd = owner.fileno()
        with ksocket._Borrowed(fileno=fd) as borrowed:
            assert borrowed.fileno() == fd
        assert borrowed.fileno() == -1
        os.fstat(fd)
        ksocket._Borrowed(fileno=fd).close()
        os.fstat(fd)
        dropped = ksocket._Borrowed(fileno=fd)
        del dropped
        gc.collect()
        os.fstat(fd)
        assert owner.fileno() == fd


def test_close_during_a_timed_send_never_reaches_a_recycled_fd(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A send retrying while another thread closes the socket and the number
    is reused must fail (EBADF), not send on the new file."""
    tx, rx = _full_unix_pair()
    tx.settimeout(TIMEOUT)
    retrying, go = threading.Event(), threading.Event()

    def gated_writable(fd: int, wait: float) -> bool:
        retrying.set()  # the first attempt got EAGAIN
        go.wait(TIMEOUT)
        return False

    monkeypatch.setattr(ksocket, "_writable", gated_writable)
    outcome: list[object] = []

    def sender() -> None:
        try:
            outcome.append(tx.send(b"late"))
        except OSError as exc:
            outcome.append(exc)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    a2, b2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    fd = -1
    try:
        assert retrying.wait(TIMEOUT)
        fd = tx.fileno()
        tx.close()
        os.dup2(a2.fileno(), fd)  # a new file under the old number
        go.set()
        th.join(TIMEOUT)
        assert not th.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], OSError)
        assert outcome[0].errno == errno.EBADF
        b2.setblocking(False)
        with pytest.raises(BlockingIOError):
            b2.recv(10)  # nothing arrived through the recycled number
    finally:
        go.set()
        if fd >= 0:
            os.close(fd)
        a2.close()
        b2.close()
        rx.close()


def test_threads_sending_at_once_share_one_twin() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx = KernelSocket.wrap(a)
    n_threads, per_thread = 4, 50
    start = threading.Barrier(n_threads + 1, timeout=TIMEOUT)
    twins: list[object] = []
    errors: list[BaseException] = []

    def sender(i: int) -> None:
        try:
            start.wait()
            for j in range(per_thread):
                assert tx.send(b"%d:%d" % (i, j)) > 0
            twins.append(tx._twin)
        except (AssertionError, OSError, threading.BrokenBarrierError) as exc:
            errors.append(exc)

    with tx, b:
        tx.settimeout(TIMEOUT)
        b.settimeout(TIMEOUT)
        threads = [threading.Thread(target=sender, args=(i,), daemon=True)
                   for i in range(n_threads)]
        for th in threads:
            th.start()
        start.wait()
        got = {b.recv(100) for _ in range(n_threads * per_thread)}
        for th in threads:
            th.join(TIMEOUT)
        assert not errors
        assert got == {b"%d:%d" % (i, j) for i in range(n_threads) for j in range(per_thread)}
        assert len(twins) == n_threads and all(t is twins[0] for t in twins)
        assert twins[0] is not None


@pytest.mark.parametrize("timeout", [None, 0.0])
def test_send_without_a_timeout_skips_the_timed_path(
        timeout: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("timed path used")

    monkeypatch.setattr(KernelSocket, "_send_timed", refuse)
    monkeypatch.setattr(ksocket, "_dont_wait", refuse)
    with _udp() as tx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(TIMEOUT)
        tx.connect(rx.getsockname())
        tx.settimeout(timeout)
        assert tx.sendmsg([b"m"]) == 1 and tx.send(b"s") == 1
        assert [rx.recv(10) for _ in range(2)] == [b"m", b"s"]
        assert getattr(tx, "_twin", None) is None


def test_dont_wait_more_inputs() -> None:
    dw = StreamFlag.DONTWAIT
    info = StreamInfo(4, int(dw)).pack()
    plain = StreamInfo(4, 0).pack()
    st = int(CmsgType.STREAM_INFO)
    cases: list[tuple[int, object]] = [
        (0, None), (int(dw), None), (dw, []),  # IntFlag flags as well as ints
        (socket.MSG_DONTWAIT, [(SOL_QUIC, st, plain)]),
        (int(socket.MSG_DONTWAIT) | int(dw), [(SOL_QUIC, st, plain)]),
        (0, ((SOL_QUIC, st, info),)),  # a tuple of tuples
        (int(dw), iter([(SOL_QUIC, st, plain)])),  # any iterable
        (0, [(SOL_QUIC, CmsgType.STREAM_INFO, info)]),  # IntEnum type
        (0, [(SOL_QUIC, st, b"")]),
        (int(dw), [(SOL_QUIC, st, bytearray(15))]),
        (0, [(SOL_QUIC, st, bytes(8) + (int(dw)).to_bytes(4, "little"))]),  # 12 bytes
        (0, [(SOL_QUIC, st, info), (SOL_QUIC, st, plain[:15])]),  # short one ignored
        (int(dw), [(SOL_QUIC, 1, plain)]),  # HANDSHAKE_INFO: flags stay
    ]
    got = [_dont_wait(f, a) for f, a in cases]
    assert all(type(g) is bool for g in got)
    assert got == [False, True, True, True, True, True, False, True, False, True,
                   False, True, True]


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


def _full_unix_pair() -> tuple[KernelSocket, socket.socket]:
    """A datagram socketpair whose sender gets EAGAIN: the peer's queue is full."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tx = KernelSocket.wrap(a)
    tx.setblocking(False)
    for _ in range(100_000):
        try:
            tx.send(b"x" * 512)
        except BlockingIOError:
            break
    else:
        pytest.fail("the socketpair never filled")
    return tx, b


@pytest.mark.parametrize("how", ["msg_dontwait", "stream_flag", "cmsg"])
def test_send_asking_not_to_wait_raises_eagain_at_once(how: str) -> None:
    # With a timeout, CPython retries EAGAIN until the timeout (TimeoutError,
    # errno None); an EAGAIN the caller asked for must come back as is
    # (socket.c quic_wait_for_stream with MSG_QUIC_STREAM_DONTWAIT).
    tx, rx = _full_unix_pair()
    with tx, rx:
        tx.settimeout(3.0)
        t0 = time.monotonic()
        with pytest.raises(BlockingIOError) as ei:
            if how == "msg_dontwait":
                tx.send(b"y", socket.MSG_DONTWAIT)
            elif how == "stream_flag":
                tx.sendmsg([b"y"], [], int(StreamFlag.DONTWAIT))
            else:
                tx.sendmsg([b"y"], [stream_info_cmsg(8, StreamFlag.NEW | StreamFlag.DONTWAIT)])
        assert ei.value.errno == errno.EAGAIN
        assert time.monotonic() - t0 < 2.0


def test_send_with_timeout_still_waits_without_dontwait() -> None:
    tx, rx = _full_unix_pair()
    with tx, rx:
        tx.settimeout(0.3)
        with pytest.raises(TimeoutError):
            tx.sendmsg([b"y"], [stream_info_cmsg(8, StreamFlag.NEW)])


def test_dont_wait_reads_stream_flags_where_the_kernel_does() -> None:
    # socket.c quic_msghdr_parse: a STREAM_INFO cmsg's flags replace msg_flags'
    assert _dont_wait(int(StreamFlag.DONTWAIT), [])
    assert not _dont_wait(int(StreamFlag.DONTWAIT), [stream_info_cmsg(0, 0)])
    assert _dont_wait(0, [stream_info_cmsg(0, StreamFlag.DONTWAIT)])
    assert _dont_wait(socket.MSG_DONTWAIT, [stream_info_cmsg(0, 0)])
    assert not _dont_wait(0, [(socket.SOL_SOCKET, 0, bytes(16))])


def _enospc_then(n_fail: int, result: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def call(_twin: socket.socket) -> int:
        calls.append(1)
        if len(calls) <= n_fail:
            raise OSError(errno.ENOSPC, "stream flow-control limit")
        return result

    return calls, call


def test_enospc_is_retried_until_the_stream_has_room() -> None:
    # A socket with a timeout is O_NONBLOCK: the module answers a send on a
    # stream at its flow-control limit with ENOSPC (socket.c
    # quic_wait_for_stream_send) instead of waiting; KernelSocket waits.
    with _udp() as s:
        s.settimeout(TIMEOUT)
        calls, call = _enospc_then(3, 7)
        assert s._send_timed(call, False) == 7  # type: ignore[arg-type]
        assert len(calls) == 4


def test_enospc_with_dontwait_or_past_the_timeout_is_raised() -> None:
    with _udp() as s:
        s.settimeout(TIMEOUT)
        calls, call = _enospc_then(100, 7)
        with pytest.raises(OSError) as ei:
            s._send_timed(call, True)  # type: ignore[arg-type]
        assert ei.value.errno == errno.ENOSPC and len(calls) == 1
        s.settimeout(0.2)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s._send_timed(_enospc_then(10**9, 7)[1], False)  # type: ignore[arg-type]
        assert 0.15 < time.monotonic() - t0 < 2.0


def test_send_with_timeout_waits_for_room() -> None:
    tx, rx = _full_unix_pair()
    with tx, rx:
        tx.settimeout(TIMEOUT)

        def drain() -> None:
            time.sleep(0.2)
            rx.settimeout(TIMEOUT)
            rx.recv(4096)

        th = threading.Thread(target=drain, daemon=True)
        th.start()
        assert tx.send(b"after drain") == len(b"after drain")
        th.join(TIMEOUT)


def test_sendall_with_timeout_sends_everything() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    tx = KernelSocket.wrap(a)
    blob = os.urandom(4 * 1024 * 1024)  # more than the socket buffers hold
    got = bytearray()

    def reader() -> None:
        b.settimeout(TIMEOUT)
        while len(got) < len(blob):
            chunk = b.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    with tx, b:
        tx.settimeout(TIMEOUT)
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        tx.sendall(blob)
        th.join(TIMEOUT)
    assert bytes(got) == blob
