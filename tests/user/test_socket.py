"""Tests of pyquic.user.socket specifics: lifecycle, readiness, addresses, chooser."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pyquic import abi
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC
from pyquic.socket_api import select_backend
from pyquic.socket_api import socket as qsocket
from pyquic.user.loop import LOOP
from pyquic.user.socket import QuicSocket, pack_sockaddr, unpack_sockaddr


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settle(threads: int, timeout: float = 10.0) -> None:
    """Wait for the I/O thread to leave (it lingers about 1 s after the last socket)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and threading.active_count() > threads:
        time.sleep(0.01)


def test_no_thread_or_fd_leak() -> None:
    LOOP.join_stopped(idle=True)  # a thread lingering after earlier tests
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


def _handshake_pair(lst: QuicSocket, cert, client: QuicSocket) -> QuicSocket:
    """Accept and handshake one connection (server in a thread); the server socket."""
    from pyquic.tls.driver import client_handshake, server_handshake

    out: dict[str, object] = {}

    def serve() -> None:
        try:
            s, _ = lst.accept()
            out["s"] = s
            server_handshake(s, cert.certfile, cert.keyfile, alpns="h3", timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            out["e"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client_handshake(client, "localhost", "h3", cafile=cert.cafile, timeout=30)
    t.join(30)
    assert not t.is_alive() and "e" not in out, out.get("e")
    srv = out["s"]
    assert isinstance(srv, QuicSocket)
    return srv


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory):
    from tests.conformance.conftest import make_cert

    return make_cert(str(tmp_path_factory.mktemp("user-cert")))


def test_peer_close_during_handshake_fails_fast() -> None:
    """The client's handshake fails as soon as the peer's CONNECTION_CLOSE arrives:
    the readiness fd turns readable, recvmsg raises ENOTCONN (socket.c
    quic_wait_for_packet) and the driver reports the cause (ECONNRESET)."""
    from pyquic.tls.driver import client_handshake

    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.settimeout(30)
        c.connect(lst.getsockname())

        def refuse() -> None:
            s, _ = lst.accept()
            time.sleep(0.5)  # the client is waiting in poll() by now
            s.setsockopt(SOL_QUIC, abi.SockOpt.CONNECTION_CLOSE,
                         abi.ConnectionClose(0x77, 0, b"go away").pack())
            s.close()

        t = threading.Thread(target=refuse, daemon=True)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(ConnectionResetError) as ei:
            client_handshake(c, "localhost", "h3", verify=False, timeout=30)
        assert time.monotonic() - t0 < 20
        assert ei.value.errno == errno.ECONNRESET
        t.join(30)
        # a dead connection polls readable and writable; receive is ENOTCONN, send EPIPE
        r, w, _ = select.select([c], [c], [], 0)
        assert r == [c] and w == [c]
        with pytest.raises(OSError) as er:
            c.recvmsg(100, 64)
        assert er.value.errno == errno.ENOTCONN
        assert "reset" in str(er.value).lower()
        with pytest.raises(OSError) as es:
            c.send(b"x", abi.MSG_SYN)
        assert es.value.errno == errno.EPIPE
        # SO_ERROR was taken by the driver: reported once, like sock_error()
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def test_so_error_reports_the_cause_once() -> None:
    with QuicSocket() as c:
        c.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM,
                     abi.TransportParam(max_idle_timeout=1_000_000).pack())
        hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hole.bind(("127.0.0.1", 0))
        try:
            c.connect(hole.getsockname())
            c.sendmsg([b"\x01\x00\x00\x04" + bytes(4)], [abi.handshake_info_cmsg(1)])
            assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            # the idle timeout is max(idle, 3 PTO) during the handshake (RFC 9000 §10.1)
            r, _, _ = select.select([c], [], [], 30)
            assert r == [c]
            with pytest.raises(OSError) as ei:
                c.recvmsg(100, 64, socket.MSG_DONTWAIT)
            assert ei.value.errno == errno.ENOTCONN
            assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ETIMEDOUT
            assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        finally:
            hole.close()


def test_blocked_recv_woken_by_peer_close(cert) -> None:
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        out: dict[str, BaseException] = {}

        def reader() -> None:
            try:
                c.recv(100)  # blocking, no timeout
            except OSError as exc:
                out["e"] = exc

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        time.sleep(0.2)
        srv.close()
        t.join(30)
        assert not t.is_alive()
        assert isinstance(out.get("e"), OSError)
        assert out["e"].errno == errno.ENOTCONN  # type: ignore[attr-defined]
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


def test_local_protocol_error_reports_close_info_and_errno() -> None:
    """Bad peer transport parameters: the engine closes with TRANSPORT_PARAMETER_ERROR
    (RFC 9000 §7.4), CONNECTION_CLOSE reads it back and SO_ERROR names EPROTO."""
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        with QuicSocket() as c:
            c.connect(hole.getsockname())
            with pytest.raises(OSError) as ei:
                c.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM_EXT, b"\x00\x05abc")
            assert ei.value.errno == errno.EINVAL
            info = abi.ConnectionClose.unpack_prefix(
                c.getsockopt(SOL_QUIC, abi.SockOpt.CONNECTION_CLOSE, abi.ConnectionClose.SIZE))
            assert info.errcode == 0x08
            r, w, _ = select.select([c], [c], [], 0)
            assert r == [c] and w == [c]
            with pytest.raises(OSError) as er:
                c.recv(10)
            assert er.value.errno == errno.ENOTCONN
            assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EPROTO
    finally:
        hole.close()


def test_getsockopt_absurd_buflen_does_not_allocate() -> None:
    s = QuicSocket()
    try:
        s.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        # within a C int: the kernel copies what it has, whatever the length
        assert s.getsockopt(SOL_QUIC, abi.SockOpt.ALPN, (1 << 31) - 1) == b"h3"
        with pytest.raises(OverflowError):
            s.getsockopt(SOL_QUIC, abi.SockOpt.ALPN, 1 << 40)
        with pytest.raises(OSError) as info:
            s.getsockopt(SOL_QUIC, abi.SockOpt.ALPN, -1)
        assert info.value.errno == errno.EINVAL
    finally:
        s.close()


def test_readiness_fd_made_on_demand() -> None:
    """Blocking users never pay for the readiness socketpair: fileno() makes it."""
    fds = _fds()
    s = QuicSocket()
    try:
        assert _fds() == fds
        assert "fd=-1" in repr(s)
        fd = s.fileno()
        assert fd >= 0 and _fds() == fds + 2
        assert s.fileno() == fd
        r, w, _ = select.select([fd], [fd], [], 0)
        assert r == [fd] and w == [fd]  # unconnected: readable and writable (closed)
    finally:
        s.close()
    assert s.fileno() == -1


def test_io_thread_lingers_then_stops() -> None:
    """Sequential connections reuse the I/O thread; it leaves ~1 s after the last socket."""
    LOOP.join_stopped(idle=True)
    threads = threading.active_count()
    s = QuicSocket()
    s.bind(("127.0.0.1", 0))
    s.close()
    assert LOOP.running  # lingering
    s2 = QuicSocket()
    s2.bind(("127.0.0.1", 0))
    assert threading.active_count() == threads + 1  # the same thread again
    s2.close()
    _settle(threads)
    assert not LOOP.running
    assert threading.active_count() == threads


def _send_stream(s: QuicSocket, data: bytes, sid: int, flags: int) -> None:
    s.sendmsg([data], [abi.stream_info_cmsg(sid, flags)])


def _echo_once(srv: QuicSocket, sid: int) -> None:
    """Read one message on ``srv`` and send it back on ``sid``."""
    data = srv.recv(1000)
    _send_stream(srv, data, sid, abi.StreamFlag.NEW | abi.StreamFlag.FIN)


@contextlib.contextmanager
def _connected(cert) -> Iterator[tuple[QuicSocket, QuicSocket]]:  # type: ignore[no-untyped-def]
    """A client and its accepted server socket on 127.0.0.1 after the
    handshake, both with a 30 s timeout."""
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        c.settimeout(30)
        srv.settimeout(30)
        try:
            yield c, srv
        finally:
            srv.close()


def test_blocked_thread_polls_itself(cert) -> None:
    """Leader/follower: a thread blocked in recv becomes the poller (the I/O
    thread parks) and receives its answer without the I/O thread's help."""
    with _connected(cert) as (c, srv):
        got: dict[str, object] = {}

        def client() -> None:
            try:
                _send_stream(c, b"ping", 0, abi.StreamFlag.NEW | abi.StreamFlag.FIN)
                got["data"] = c.recv(100)
            except BaseException as exc:  # noqa: BLE001 - reported below
                got["e"] = exc

        t = threading.Thread(target=client, daemon=True)
        t.start()
        # while the client thread waits for the echo it leads (polls) itself
        seen = False
        end = time.monotonic() + 10
        while time.monotonic() < end and not seen and t.is_alive():
            with LOOP.lock:
                seen = LOOP._leader == t.ident
            time.sleep(0.001)
        assert seen
        _echo_once(srv, 1)
        t.join(30)
        assert not t.is_alive()
        assert got.get("data") == b"ping", got
        srv.close()


def test_two_blocked_threads_both_served(cert) -> None:
    """Only one thread polls at a time; when it leaves, the other takes over
    (follower hand-over), so both blocked receivers get their data."""
    with QuicSocket() as lst, QuicSocket() as c1, QuicSocket() as c2:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(2)
        lst.settimeout(30)
        c1.connect(lst.getsockname())
        s1 = _handshake_pair(lst, cert, c1)
        c2.connect(lst.getsockname())
        s2 = _handshake_pair(lst, cert, c2)
        got: dict[str, object] = {}

        def reader(name: str, c: QuicSocket) -> None:
            try:
                c.settimeout(30)
                got[name] = c.recv(100)
            except BaseException as exc:  # noqa: BLE001 - reported below
                got[name] = exc

        threads = [threading.Thread(target=reader, args=(n, c), daemon=True)
                   for n, c in (("one", c1), ("two", c2))]
        for t in threads:
            t.start()
        time.sleep(0.1)  # both block: one leads, the other follows
        _send_stream(s1, b"first", 1, abi.StreamFlag.NEW | abi.StreamFlag.FIN)
        threads[0].join(30)
        assert got.get("one") == b"first", got
        assert threads[1].is_alive()  # still waiting, now as the leader
        _send_stream(s2, b"second", 1, abi.StreamFlag.NEW | abi.StreamFlag.FIN)
        threads[1].join(30)
        assert got.get("two") == b"second", got
        s1.close()
        s2.close()


def test_nonblocking_calls_see_data_while_io_thread_parked(cert) -> None:
    """After blocking calls parked the I/O thread, a caller that only polls
    with MSG_DONTWAIT still gets its data (each call polls the UDP sockets
    when nobody else does, and the I/O thread takes over when idle)."""
    with QuicSocket() as lst, QuicSocket() as c:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        _send_stream(srv, b"hello", 1, abi.StreamFlag.NEW | abi.StreamFlag.FIN)
        data = b""
        end = time.monotonic() + 10
        while not data and time.monotonic() < end:
            try:
                data = c.recv(100, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        assert data == b"hello"
        srv.close()


def test_close_from_another_thread_ends_a_leaders_wait(cert) -> None:
    """A thread polling as the leader for its own socket is woken at once when
    another thread closes that socket (EBADF), not at its timeout."""
    with QuicSocket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"h3")
        lst.listen(1)
        lst.settimeout(30)
        c = QuicSocket()
        c.connect(lst.getsockname())
        srv = _handshake_pair(lst, cert, c)
        out: dict[str, BaseException] = {}

        def reader() -> None:
            try:
                c.settimeout(60)
                c.recv(100)
            except OSError as exc:
                out["e"] = exc

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with LOOP.lock:
                if LOOP._leader == t.ident:
                    break
            time.sleep(0.001)
        t0 = time.monotonic()
        c.close()
        t.join(30)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 10
        assert isinstance(out.get("e"), OSError)
        assert out["e"].errno == errno.EBADF  # type: ignore[attr-defined]
        srv.close()


def test_setting_only_calls_do_not_flush() -> None:
    """connect(), getsockopt and options that only store a setting (ALPN, EVENT,
    CONNECTION_CLOSE, SESSION_TICKET) never ask the engine for packets, as the
    kernel sends nothing there; a handshake message does."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        with QuicSocket() as c:
            c.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"x")
            conn = c._conn
            calls: list[float] = []
            real = conn.datagrams_to_send_from

            def counting(now: float) -> list:
                calls.append(now)
                return real(now)

            conn.datagrams_to_send_from = counting  # type: ignore[method-assign]
            c.connect(peer.getsockname())
            c.getsockopt(SOL_QUIC, abi.SockOpt.CONFIG, abi.Config.SIZE)
            c.getsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM_EXT, 512)
            c.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, b"y")
            c.setsockopt(SOL_QUIC, abi.SockOpt.EVENT,
                         abi.EventOption(int(abi.EventType.STREAM_UPDATE), 1).pack())
            c.setsockopt(SOL_QUIC, abi.SockOpt.CONNECTION_CLOSE,
                         abi.ConnectionClose(1, 0, b"bye").pack())
            assert calls == []
            c.sendmsg([b"\x01\x00\x00\x04" + bytes(4)], [abi.handshake_info_cmsg(1)])
            assert calls  # the Initial is sent at once
            peer.settimeout(5)
            data = peer.recv(2048)
            assert len(data) >= 1200
    finally:
        peer.close()


def test_connect_source_address_without_probe_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() of an unbound socket binds to the route's source address; for
    127.0.0.1 / ::1 that is the destination itself, known without a probe
    socket (a connected UDP socket's name), which other addresses still use."""
    from pyquic.user import socket as usock

    probes: list[tuple] = []
    real = usock._socket.socket

    class Probe(real):  # type: ignore[misc, valid-type]
        def connect(self, addr: tuple) -> None:
            probes.append(addr)
            super().connect(addr)

    monkeypatch.setattr(usock._socket, "socket", Probe)
    assert usock._route_source(socket.AF_INET, ("127.0.0.1", 443)) == "127.0.0.1"
    assert usock._route_source(socket.AF_INET6, ("::1", 443, 0, 0)) == "::1"
    assert probes == []
    # any other address: the kernel's route decides (127.0.0.2 is sourced from 127.0.0.1)
    assert usock._route_source(socket.AF_INET, ("127.0.0.2", 443)) == "127.0.0.1"
    assert probes == [("127.0.0.2", 443)]
    probes.clear()
    with QuicSocket() as c:
        c.connect(("127.0.0.1", 9))
        assert c.getsockname()[0] == "127.0.0.1"
    assert probes == []
