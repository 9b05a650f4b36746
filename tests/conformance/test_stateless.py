"""Stateless answers of a listening port (kernel packet.c quic_packet_listen_process):
Retry with CONFIG validate_peer_address (RFC 9000 §8.1.2), Version Negotiation
for an unknown version (§6.1) and a Stateless Reset for a packet of a
connection the server no longer knows (§10.3)."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC
from pyquic.engine.packet import parse_version_negotiation

from .conftest import ALPN, TIMEOUT, echo_server, join, qsend, recv_message, set_tp

O = abi.SockOpt
NEW = abi.StreamFlag.NEW
FIN = abi.StreamFlag.FIN


def _validate(sock: Any) -> None:
    sock.setsockopt(SOL_QUIC, O.CONFIG, abi.Config(validate_peer_address=1).pack())


def test_retry_then_transfer(make_pair: Any, backend: str) -> None:
    pair = make_pair(listener_setup=_validate)
    cfg = abi.Config.unpack(pair.listener.getsockopt(SOL_QUIC, O.CONFIG, abi.Config.SIZE))
    assert cfg.validate_peer_address == 1
    c = pair.client
    c.settimeout(TIMEOUT)
    t, out = echo_server(pair.server, stop_after=1)
    msg = os.urandom(50_000)
    qsend(c, msg, -1, NEW | FIN)
    data, _sid, _flags = recv_message(c)
    assert data == msg
    assert join(t, out) == 1
    if backend == "user":
        # the client followed a Retry: the server took the Retry's SCID and the
        # token proved the client's address; the client recorded the Retry too
        assert pair.server._conn.token_validated
        assert pair.server._conn.retry_scid is not None
        assert pair.client._conn.retry_scid == pair.server._conn.retry_scid


def test_no_retry_without_validation(make_pair: Any, backend: str) -> None:
    if backend != "user":
        pytest.skip("inspects the user engine's state (retry_scid, token_validated)")
    pair = make_pair()
    assert pair.client._conn.retry_scid is None
    assert not pair.server._conn.token_validated


def _unknown_version_initial(dcid: bytes, scid: bytes, version: int) -> bytes:
    """A long header of an unknown version padded to 1200 bytes (RFC 9000 §14.1)."""
    head = (bytes((0xC0,)) + version.to_bytes(4, "big") + bytes((len(dcid),)) + dcid
            + bytes((len(scid),)) + scid)
    return head + os.urandom(1200 - len(head))


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_version_negotiation(sock_factory: Any, backend: str, family: int, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    lst = sock_factory(family)
    try:
        lst.bind((host, 0))
    except OSError as exc:
        pytest.skip(f"cannot bind {host}: {exc}")
    lst.setsockopt(SOL_QUIC, O.ALPN, ALPN.encode())
    lst.listen(4)
    port = lst.getsockname()[1]
    dcid, scid = os.urandom(8), os.urandom(5)
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.settimeout(TIMEOUT)
        u.sendto(_unknown_version_initial(dcid, scid, 0x1A2A3A4A), (host, port))
        reply, _ = u.recvfrom(65535)
        u.sendto(_unknown_version_initial(dcid, scid, 0x1A2A3A4A)[:600], (host, port))
        if backend == "user":
            # too small to start a connection: dropped (RFC 9000 §5.2.2, §6.1)
            u.settimeout(0.3)
            with pytest.raises(OSError):
                u.recvfrom(65535)
        else:
            # the module answers any unknown-version long header with a
            # Version Negotiation, whatever the datagram's size (packet.c
            # quic_packet_listen_process checks the 1200-byte minimum only
            # for Initials of a known version)
            small_reply, _ = u.recvfrom(65535)
            assert parse_version_negotiation(small_reply)[:2] == (scid, dcid)
    rdcid, rscid, versions = parse_version_negotiation(reply)
    assert (rdcid, rscid) == (scid, dcid)  # §17.2.1: the client's CIDs swapped
    assert abi.Version.V1 in versions
    assert 0x1A2A3A4A not in versions


def test_stateless_reset_closes_client(make_pair: Any, backend: str) -> None:
    """The server's connection vanishes without CONNECTION_CLOSE; the client's
    next packet gets a Stateless Reset (the listener's static key derives the
    tokens the connection gave out) and the client dies with ECONNRESET."""
    if backend != "user":
        pytest.skip("simulates a server crash by patching the user engine; a kernel socket "
                    "always sends CONNECTION_CLOSE on close (socket.c quic_close)")
    # the server gives a reset token for its first CID too (stateless_reset_token)
    pair = make_pair(listener_setup=lambda s: set_tp(s, stateless_reset=1))
    c, srv = pair.client, pair.server
    t, out = echo_server(srv, stop_after=1)
    qsend(c, b"ping", -1, NEW | FIN)
    c.settimeout(TIMEOUT)
    assert recv_message(c)[0] == b"ping"
    join(t, out)
    # simulate a crash: the engine forgets the connection without a close
    srv._conn.close = lambda *a, **k: None
    srv.close()
    c.settimeout(TIMEOUT)
    qsend(c, b"anyone there?", -1, NEW | FIN)
    with pytest.raises(OSError) as info:
        c.recvmsg(1024)
    assert info.value.errno == errno.ENOTCONN
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
    info_close = abi.ConnectionClose.unpack(
        c.getsockopt(SOL_QUIC, O.CONNECTION_CLOSE, abi.ConnectionClose.SIZE))
    assert info_close.errcode == abi.TransportError.CRYPTO  # packet.c: close event code
