"""The kernel backend on a real IPPROTO_QUIC module.

Skipped (with the reason) where ``kernel_available()`` is false, as in CI.
In the QEMU guest: handshakes through pyquic's TLS driver and through libquic
(PSK, X.509, resumption with 0-RTT), the typed helpers against the module,
interop with the user backend in both directions, and lxin/quic's C
sample_test in both directions (its binary from ``$PYQUIC_LXIN_TESTS``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyquic.abi.constants import IPPROTO_QUIC, EventType, StreamFlag
from pyquic.abi.events import StreamUpdateEvent
from pyquic.abi.structs import TransportParam
from pyquic.kernel.available import kernel_available
from pyquic.kernel.socket import KernelSocket
from tests.kernel.keys import SERVER_NAME, Keys, write_keys

pytestmark = pytest.mark.skipif(
    not kernel_available(),
    reason="kernel backend: the IPPROTO_QUIC module is not loaded here (kernel_available() "
           "is false); run in the QEMU guest, see docs/kernel.md",
)

TIMEOUT = 20.0  # the guest runs under software emulation
ALPN = "sample"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return write_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def libquic() -> Any:
    from pyquic.kernel.libquic import LibquicNotFound, load_libquic

    try:
        return load_libquic()
    except LibquicNotFound as exc:
        pytest.skip(f"libquic not installed ({str(exc)[:50]}...)")


def _thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _join(t: threading.Thread, out: dict[str, Any]) -> Any:
    t.join(TIMEOUT * 2)
    assert not t.is_alive(), "server thread hung"
    if "error" in out:
        raise out["error"]
    return out.get("result")


def _new(backend: str, family: int = socket.AF_INET) -> Any:
    if backend == "kernel":
        return KernelSocket(family)
    from pyquic.user.socket import QuicSocket

    return QuicSocket(family, socket.SOCK_DGRAM, IPPROTO_QUIC)


Pair = tuple[Any, Any]


@pytest.fixture
def pair_factory(keys: Keys) -> Iterator[Callable[..., Pair]]:
    """``make(driver, client_backend, server_backend)`` -> handshaken (client, server)."""
    made: list[Any] = []

    def make(driver: str = "pyquic", client_backend: str = "kernel",
             server_backend: str = "kernel", psk: bool = False,
             client_setup: Callable[[Any], None] | None = None) -> Pair:
        from pyquic.kernel import handshake as hs

        lst = _new(server_backend)
        made.append(lst)
        lst.bind(("127.0.0.1", 0))
        lst.set_alpn(ALPN)
        lst.listen(4)
        lst.settimeout(TIMEOUT)

        def serve() -> Any:
            srv, _ = lst.accept()
            made.append(srv)
            srv.set_transport_param(TransportParam(max_datagram_frame_size=1400))
            if psk:
                hs.server_handshake(srv, driver=driver, alpns=ALPN, psk_file=str(keys.server_psk),
                                    timeout=TIMEOUT)
            else:
                hs.server_handshake(srv, str(keys.cert), str(keys.key), driver=driver,
                                    alpns=ALPN, timeout=TIMEOUT)
            return srv

        t, out = _thread(serve)
        cli = _new(client_backend)
        made.append(cli)
        cli.set_transport_param(TransportParam(max_datagram_frame_size=1400))
        if client_setup:
            client_setup(cli)
        cli.connect(lst.getsockname())
        if psk:
            hs.client_handshake(cli, None, ALPN, driver=driver, psk_file=str(keys.client_psk),
                                timeout=TIMEOUT)
        else:
            hs.client_handshake(cli, SERVER_NAME, ALPN, driver=driver, cafile=str(keys.ca),
                                timeout=TIMEOUT)
        srv = _join(t, out)
        cli.settimeout(TIMEOUT)
        srv.settimeout(TIMEOUT)
        return cli, srv

    yield make
    for s in reversed(made):
        try:
            s.close()
        except OSError:
            pass


def _echo_once(cli: Any, srv: Any, payload: bytes = b"ping") -> None:
    sid = cli.open_stream()
    assert cli.send_stream(sid, payload, fin=True) == len(payload)
    got = b""
    for _ in range(1000):
        m = srv.recv_message()
        got += m.data
        if m.fin:
            break
    assert got == payload and m.stream_id == sid
    srv.send_stream(sid, b"echo:" + got, fin=True)
    back = b""
    for _ in range(1000):
        m = cli.recv_message()
        back += m.data
        if m.fin:
            break
    assert back == b"echo:" + payload


def test_socket_is_kernel_quic() -> None:
    with KernelSocket() as s:
        assert s.proto == IPPROTO_QUIC
        tp = s.get_transport_param()
        # Module defaults (KERNEL-API.md): 100/100 streams, 30 s idle timeout.
        assert (tp.max_streams_bidi, tp.max_streams_uni) == (100, 100)
        assert tp.max_idle_timeout == 30_000_000
        assert s.get_config().initial_smoothed_rtt == 333_000
        s.set_alpn("smbd, h3, ksmbd")
        assert s.get_alpn() == "smbd,h3,ksmbd"


def test_accept_returns_kernel_socket(pair_factory: Callable[..., Pair]) -> None:
    cli, srv = pair_factory("pyquic")
    assert type(cli) is KernelSocket and type(srv) is KernelSocket


@pytest.mark.parametrize("driver", ["pyquic", "libquic"])
def test_stream_echo_and_options(driver: str, pair_factory: Callable[..., Pair],
                                 request: pytest.FixtureRequest) -> None:
    if driver == "libquic":
        request.getfixturevalue("libquic")
    cli, srv = pair_factory(driver)
    if driver == "pyquic":  # the driver records the chosen ALPN on the socket; libquic not
        assert cli.get_alpn() == ALPN
    _echo_once(cli, srv, os.urandom(5000))
    remote = cli.get_transport_param(remote=True)
    assert remote.remote == 1 and remote.max_datagram_frame_size == 1400
    cid = cli.get_connection_id()
    assert cid.active >= cid.prior_to
    # in/out getsockopt beyond CPython's 1024-byte cap
    assert len(cli.getsockopt(288, 12, 4096)) > 0  # NewSessionTicket message


@pytest.mark.parametrize("driver", ["pyquic", "libquic"])
def test_psk_handshake(driver: str, pair_factory: Callable[..., Pair],
                       request: pytest.FixtureRequest) -> None:
    if driver == "libquic":
        request.getfixturevalue("libquic")
    cli, srv = pair_factory(driver, psk=True)
    _echo_once(cli, srv)


def test_events_datagrams_and_close(pair_factory: Callable[..., Pair]) -> None:
    cli, srv = pair_factory("pyquic")
    cli.set_event(EventType.STREAM_UPDATE, True)
    assert cli.get_event(EventType.STREAM_UPDATE)
    assert not cli.get_event(EventType.KEY_UPDATE)
    sid = cli.open_stream()
    cli.send_stream(sid, b"x", fin=True)
    seen = None
    for _ in range(20):
        m = cli.recv_message()
        if m.is_event and isinstance(m.event, StreamUpdateEvent):
            seen = m.event
            break
    assert seen is not None and seen.id == sid
    m = srv.recv_message()
    assert (m.data, m.stream_id, m.fin) == (b"x", sid, True)
    assert cli.send_datagram(b"d" * 100) == 100
    m = srv.recv_message()
    assert m.is_datagram and m.data == b"d" * 100
    with pytest.raises(OSError):
        cli.send_datagram(b"d" * 1400)  # EMSGSIZE: no room for the frame overhead
    cli.set_close_info(7, "bye")
    info = cli.get_close_info()
    assert (info.errcode, info.phrase) == (7, b"bye")


def test_key_update_and_stream_flags(pair_factory: Callable[..., Pair]) -> None:
    cli, srv = pair_factory("pyquic")
    cli.key_update()
    with pytest.raises(OSError):
        cli.key_update()  # EINVAL while the previous one is pending
    uni = cli.open_stream(uni=True)
    assert uni & 0x2
    cli.send_stream(uni, b"u", fin=True)
    m = srv.recv_message()
    assert m.stream_id == uni and m.data == b"u"
    assert m.fin or srv.recv_message().fin
    sid = cli.open_stream()
    cli.send_stream(sid, b"a")
    cli.reset_stream(sid, 3)
    with pytest.raises(OSError):
        cli.send_stream(sid, b"b", flags=int(StreamFlag.FIN))


def test_libquic_resumption_and_0rtt(libquic: Any, keys: Keys) -> None:
    from pyquic.kernel import handshake as hs

    lst = KernelSocket()
    socks: list[Any] = [lst]
    try:
        lst.bind(("127.0.0.1", 0))
        lst.set_alpn("ticket")
        lst.listen(4)
        lst.settimeout(TIMEOUT)

        def serve() -> bytes:
            srv, _ = lst.accept()
            socks.append(srv)
            res = hs.libquic_server_handshake(srv, str(keys.cert), str(keys.key), alpns="ticket",
                                              timeout=TIMEOUT)
            srv.settimeout(TIMEOUT)
            m = srv.recv_message()
            assert m.stream_id == 2  # the client's first uni stream
            srv.send_stream(3, b"echo:" + m.data, fin=True, flags=int(StreamFlag.NEW))
            res.close()
            return m.data

        t, out = _thread(serve)
        c1 = KernelSocket()
        socks.append(c1)
        c1.connect(lst.getsockname())
        r1 = hs.libquic_client_handshake(c1, SERVER_NAME, "ticket", cafile=str(keys.ca),
                                         timeout=TIMEOUT)
        c1.settimeout(TIMEOUT)
        assert not r1.session_resumed
        c1.send_stream(2, b"first", fin=True, flags=int(StreamFlag.NEW))
        assert c1.recv_message().data == b"echo:first"
        session = r1.get_session_data(timeout=5.0)
        assert session
        assert _join(t, out) == b"first"
        r1.close()

        t, out = _thread(serve)
        c2 = KernelSocket()
        socks.append(c2)
        c2.connect(lst.getsockname())
        hs.libquic_restore_session(c2, session)
        c2.send_stream(2, b"early", fin=True, flags=int(StreamFlag.NEW))  # 0-RTT
        r2 = hs.libquic_client_handshake(c2, SERVER_NAME, "ticket", cafile=str(keys.ca),
                                         session=session, timeout=TIMEOUT)
        c2.settimeout(TIMEOUT)
        assert r2.session_resumed
        assert r2.early_data_accepted
        assert c2.recv_message().data == b"echo:early"
        assert _join(t, out) == b"early"
        r2.close()
    finally:
        for s in socks:
            s.close()


def test_libquic_rejects_untrusted_certificate(libquic: Any, keys: Keys,
                                               tmp_path: Path) -> None:
    from pyquic.kernel import handshake as hs

    other = write_keys(tmp_path)  # a different CA
    lst = KernelSocket()
    try:
        lst.bind(("127.0.0.1", 0))
        lst.set_alpn(ALPN)
        lst.listen(1)
        lst.settimeout(TIMEOUT)

        def serve() -> None:
            srv, _ = lst.accept()
            with srv:
                try:
                    hs.libquic_server_handshake(srv, str(keys.cert), str(keys.key), alpns=ALPN,
                                                timeout=TIMEOUT)
                except OSError:
                    pass

        t, out = _thread(serve)
        with KernelSocket() as c:
            c.connect(lst.getsockname())
            with pytest.raises(OSError):
                hs.libquic_client_handshake(c, SERVER_NAME, ALPN, cafile=str(other.ca),
                                            timeout=TIMEOUT)
        _join(t, out)
    finally:
        lst.close()


@pytest.mark.parametrize(("client_backend", "server_backend"),
                         [("kernel", "user"), ("user", "kernel")])
def test_interop_with_user_backend(client_backend: str, server_backend: str,
                                   pair_factory: Callable[..., Pair]) -> None:
    pytest.importorskip("pyquic.user.socket")
    cli, srv = pair_factory("pyquic", client_backend, server_backend)
    _echo_once(cli, srv, os.urandom(20000))
    assert cli.send_datagram(b"dg") == 2
    assert srv.recv_message().data == b"dg"


def _wait_udp_port(port: int, timeout: float = TIMEOUT) -> None:
    """Wait until something is bound to UDP ``port`` (the module's UDP tunnel socket)."""
    needle = f":{port:04X} "
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                if needle in Path(table).read_text():
                    return
            except OSError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pytest.fail(f"nothing bound UDP port {port} within {timeout} s")


def _lxin_tool(name: str) -> str:
    d = os.environ.get("PYQUIC_LXIN_TESTS")
    path = Path(d or "/nonexistent") / name
    if not path.is_file():
        pytest.skip(f"lxin/quic's {name} not found: set PYQUIC_LXIN_TESTS to its directory")
    return str(path)


@pytest.mark.parametrize("driver", ["pyquic", "libquic"])
def test_c_sample_server_with_pyquic_client(driver: str, keys: Keys,
                                            request: pytest.FixtureRequest) -> None:
    from pyquic.kernel import handshake as hs

    tool = _lxin_tool("sample_test")
    if driver == "libquic":
        request.getfixturevalue("libquic")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free port number
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([tool, "server", "127.0.0.1", str(port), str(keys.key),
                             str(keys.cert), ALPN], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_udp_port(port)  # the C server must be listening before the Initial goes out
        with KernelSocket() as c:
            c.settimeout(TIMEOUT)
            c.connect(("127.0.0.1", port))
            hs.client_handshake(c, SERVER_NAME, ALPN, driver=driver, cafile=str(keys.ca),
                                timeout=TIMEOUT)
            c.send_stream(2, b"hello quic server!", fin=True, flags=int(StreamFlag.NEW))
            m = c.recv_message()
            assert m.data == b"hello quic client!" and m.stream_id == 1
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert "recv 'hello quic server!'" in out


@pytest.mark.parametrize("driver", ["pyquic", "libquic"])
def test_c_sample_client_with_pyquic_server(driver: str, keys: Keys,
                                            request: pytest.FixtureRequest) -> None:
    from pyquic.kernel import handshake as hs

    tool = _lxin_tool("sample_test")
    if driver == "libquic":
        request.getfixturevalue("libquic")
    with KernelSocket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.set_alpn(ALPN)
        lst.listen(1)
        lst.settimeout(TIMEOUT)
        port = lst.getsockname()[1]
        proc = subprocess.Popen([tool, "client", "127.0.0.1", str(port), "none", SERVER_NAME,
                                 ALPN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            srv, _ = lst.accept()
            with srv:
                hs.server_handshake(srv, str(keys.cert), str(keys.key), driver=driver,
                                    alpns=ALPN, timeout=TIMEOUT)
                srv.settimeout(TIMEOUT)
                m = srv.recv_message()
                assert m.data == b"hello quic server!" and m.stream_id == 2 and m.fin
                srv.send_stream(1, b"hello quic client!", fin=True, flags=int(StreamFlag.NEW))
                out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    assert "recv 'hello quic client!'" in out
    assert proc.returncode == 0


@pytest.mark.parametrize("driver", ["pyquic", "libquic"])
def test_c_perf_server_with_pyquic_client(driver: str, keys: Keys,
                                          request: pytest.FixtureRequest) -> None:
    """perf_test.c's throughput server: one stream of 2 MiB in 4 KiB writes, then
    its "recv done" reply; the rate is printed (guest figures only)."""
    from pyquic.kernel import handshake as hs

    tool = _lxin_tool("perf_test")
    if driver == "libquic":
        request.getfixturevalue("libquic")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The server never exits by itself; line-buffer its stdout so nothing is
    # lost when it is killed.
    stdbuf = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
    proc = subprocess.Popen([*stdbuf, tool, "-l", "-a", "127.0.0.1", "-p", str(port), "-k",
                             str(keys.key), "-c", str(keys.cert)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        _wait_udp_port(port)
        with KernelSocket() as c:
            c.settimeout(TIMEOUT * 3)
            c.connect(("127.0.0.1", port))
            hs.client_handshake(c, SERVER_NAME, "sample", driver=driver, cafile=str(keys.ca),
                                timeout=TIMEOUT)
            chunk = os.urandom(4096)
            total = 2 * 1024 * 1024
            start = time.monotonic()
            # a send may take part of a chunk when the send buffer is full
            # (the kernel's sendmsg returns what it copied): send the rest
            sent = c.send_stream(0, chunk, flags=int(StreamFlag.NEW))
            for _ in range(total):  # each call takes at least a byte
                if sent >= total:
                    break
                off = sent % len(chunk)
                sent += c.send_stream(0, chunk[off:], fin=sent + len(chunk) - off >= total)
            m = c.recv_message()
            elapsed = time.monotonic() - start
            assert m.data == b"recv done" and m.stream_id == 0 and m.fin
        print(f"perf_test server, pyquic kernel client ({driver}): {total} bytes in "
              f"{elapsed:.2f} s = {total * 8 / elapsed / 1e6:.1f} Mbit/s")
        # the server prints its summary after sending the reply: wait for it
        # (bounded) before killing it
        end = time.monotonic() + TIMEOUT
        while stdbuf and time.monotonic() < end and not any("RECV DONE" in x for x in lines):
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        reader.join(TIMEOUT)
    out = "".join(lines)
    if stdbuf:
        assert "HANDSHAKE DONE" in out and f"RECV DONE: tot_len {total}" in out
