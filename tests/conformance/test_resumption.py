"""Session resumption and 0-RTT (ticket_test.c)."""

from __future__ import annotations

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC

from .conftest import TIMEOUT, join, new_socket, qsend, recv_message, run_server, set_alpn

O = abi.SockOpt
NEW = abi.StreamFlag.NEW
FIN = abi.StreamFlag.FIN


def test_resumption_with_0rtt(backend, cert) -> None:  # type: ignore[no-untyped-def]
    from pyquic.tls.driver import client_handshake, restore_session, server_handshake

    listener = new_socket(backend)
    socks = [listener]
    try:
        listener.bind(("127.0.0.1", 0))
        set_alpn(listener, "ticket")
        listener.listen(4)
        listener.settimeout(TIMEOUT)
        addr = listener.getsockname()
        keys = []

        def serve_one() -> bytes:
            srv, _ = listener.accept()
            socks.append(srv)
            srv.settimeout(TIMEOUT)
            key = srv.getsockopt(SOL_QUIC, O.SESSION_TICKET, 4096)  # the server's ticket key
            keys.append(key)
            server_handshake(srv, cert.certfile, cert.keyfile, alpns="ticket",
                             ticket_key=key, timeout=TIMEOUT)
            data, sid, _ = recv_message(srv)
            qsend(srv, b"echo:" + data, sid | 1, NEW | FIN)
            return data

        # first connection: get the ticket and the peer's transport parameters
        t, out = run_server(serve_one)
        c1 = new_socket(backend)
        socks.append(c1)
        c1.settimeout(TIMEOUT)
        c1.connect(addr)
        res = client_handshake(c1, "localhost", "ticket", cafile=cert.cafile, timeout=TIMEOUT)
        session = res.get_session_data(timeout=5.0)
        assert session
        assert len(c1.getsockopt(SOL_QUIC, O.SESSION_TICKET, 4096)) > 0  # NewSessionTicket
        remote = abi.TransportParam.unpack(
            c1.getsockopt(SOL_QUIC, O.TRANSPORT_PARAM, abi.TransportParam(remote=1).pack()))
        assert remote.max_streams_uni == 100
        qsend(c1, b"hello quic server!", 2, NEW | FIN)
        assert recv_message(c1)[0] == b"echo:hello quic server!"
        assert join(t, out) == b"hello quic server!"
        assert len(keys[0]) == 64
        c1.close()

        # second connection: restore the parameters, send 0-RTT data, resume
        t, out = run_server(serve_one)
        c2 = new_socket(backend)
        socks.append(c2)
        c2.settimeout(TIMEOUT)
        c2.connect(addr)
        restore_session(c2, session)
        assert qsend(c2, b"hello quic server, I'm back!", 2, NEW | FIN) > 0
        res2 = client_handshake(c2, "localhost", "ticket", cafile=cert.cafile,
                                session=session, timeout=TIMEOUT)
        assert res2.session_resumed
        assert res2.early_data_accepted
        assert recv_message(c2)[0] == b"echo:hello quic server, I'm back!"
        assert join(t, out) == b"hello quic server, I'm back!"
        assert keys[1] == keys[0]  # the key depends on the client's IP, not its port
    finally:
        for s in socks:
            s.close()
