"""ALPN routing and the server's preferred address (alpn_test.c)."""

from __future__ import annotations

import socket
import time

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC

from .conftest import TIMEOUT, join, new_socket, recv_message, run_server, sockaddr

O = abi.SockOpt


def _free_port(host: str, count: int) -> int:
    """A port p with p+1..p+count also free on ``host``."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for i in range(1, count + 1):
            try:
                with socket.socket(fam, socket.SOCK_DGRAM) as s2:
                    s2.bind((host, base + i))
            except OSError:
                ok = False
                break
        if ok:
            return int(base)
    raise RuntimeError("no free port range")


@pytest.mark.parametrize("server_host,client_host,pref_host", [
    ("0.0.0.0", "127.0.0.1", "::1"),
    ("::", "::1", "127.0.0.1"),
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
])
def test_alpn_routing_with_preferred_address(backend, cert, server_host, client_host,
                                             pref_host) -> None:  # type: ignore[no-untyped-def]
    from pyquic.tls.driver import client_handshake, server_handshake

    listener = new_socket(backend, socket.AF_INET6)
    socks = [listener]
    try:
        listener.setsockopt(SOL_QUIC, O.ALPN, b"smbd, h3, ksmbd")
        port = _free_port(server_host if server_host not in ("0.0.0.0", "::") else client_host, 3)
        listener.bind((server_host, port))
        listener.listen(4)
        listener.settimeout(TIMEOUT)

        def serve() -> list[str]:
            alpns = []
            for i in range(1, 4):
                srv, _ = listener.accept()
                socks.append(srv)
                srv.settimeout(TIMEOUT)
                # the accepted socket reports the listener's whole list
                assert srv.getsockopt(SOL_QUIC, O.ALPN, 128) == b"smbd,h3,ksmbd"
                srv.setsockopt(SOL_QUIC, O.CONNECTION_MIGRATION, sockaddr(
                    (pref_host, port + i) if ":" not in pref_host else (pref_host, port + i, 0, 0)))
                res = server_handshake(srv, cert.certfile, cert.keyfile,
                                       alpns="smbd, h3, ksmbd", timeout=TIMEOUT)
                assert res.alpn is not None
                alpns.append(res.alpn)
                _data, _sid, _ = recv_message(srv)
                srv.send(b"hello quic client!", abi.MSG_SYN | abi.MSG_FIN)
            return alpns

        t, out = run_server(serve)
        for i, alpn in enumerate(["smbd", "h3", "ksmbd"], start=1):
            c = new_socket(backend, socket.AF_INET6)
            socks.append(c)
            c.settimeout(TIMEOUT)
            c.connect((client_host, port))
            res = client_handshake(c, "localhost", alpn, cafile=cert.cafile, timeout=TIMEOUT)
            assert res.alpn == alpn
            c.send(b"hello quic server!", abi.MSG_SYN | abi.MSG_FIN)
            assert recv_message(c)[0] == b"hello quic client!"
            want = (pref_host, port + i) if ":" not in pref_host else (pref_host, port + i, 0, 0)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and c.getpeername()[:2] != want[:2]:
                time.sleep(0.05)
            assert c.getpeername()[:2] == want[:2]
        assert join(t, out) == ["smbd", "h3", "ksmbd"]
    finally:
        for s in socks:
            s.close()


def test_listeners_share_a_port_by_alpn(backend, cert) -> None:  # type: ignore[no-untyped-def]
    from pyquic.tls.driver import client_handshake, server_handshake

    a = new_socket(backend)
    socks = [a]
    try:
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
        a.setsockopt(SOL_QUIC, O.ALPN, b"alpha")
        a.listen(2)
        b = new_socket(backend)
        socks.append(b)
        b.bind(("127.0.0.1", port))
        b.setsockopt(SOL_QUIC, O.ALPN, b"beta")
        b.listen(2)
        # a third listener with an overlapping ALPN set is refused
        d = new_socket(backend)
        socks.append(d)
        d.bind(("127.0.0.1", port))
        d.setsockopt(SOL_QUIC, O.ALPN, b"beta,gamma")
        with pytest.raises(OSError) as info:
            d.listen(2)
        assert info.value.errno == 98  # EADDRINUSE
        for lst, name in ((b, "beta"), (a, "alpha")):
            lst.settimeout(TIMEOUT)

            def serve(lst=lst) -> str:  # type: ignore[no-untyped-def]
                srv, _ = lst.accept()
                socks.append(srv)
                return str(server_handshake(srv, cert.certfile, cert.keyfile,
                                            timeout=TIMEOUT).alpn)

            t, out = run_server(serve)
            c = new_socket(backend)
            socks.append(c)
            c.connect(("127.0.0.1", port))
            res = client_handshake(c, "localhost", name, cafile=cert.cafile, timeout=TIMEOUT)
            assert res.alpn == name
            assert join(t, out) == name
    finally:
        for s in socks:
            s.close()
