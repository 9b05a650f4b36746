"""Connection IDs, migration, key update, tokens and datagrams (func_test.c
do_client_connection_test) over a handshaken pair."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC

from .conftest import TIMEOUT, echo_server, join, qsend, recv_event, recv_message

O = abi.SockOpt
NEW = abi.StreamFlag.NEW
FIN = abi.StreamFlag.FIN
DATAGRAM = abi.MsgFlag.DATAGRAM


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def _set_cid(sock, dest: int, active: int, prior_to: int) -> None:  # type: ignore[no-untyped-def]
    sock.setsockopt(SOL_QUIC, O.CONNECTION_ID, abi.ConnectionIdInfo(dest, active, prior_to).pack())


def _get_cid(sock, dest: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    raw = sock.getsockopt(SOL_QUIC, O.CONNECTION_ID, abi.ConnectionIdInfo(dest, 0, 0).pack())
    info = abi.ConnectionIdInfo.unpack(raw)
    return info.active, info.prior_to


def _until(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _roundtrip(c, msg: bytes) -> None:  # type: ignore[no-untyped-def]
    qsend(c, msg, -1, NEW | FIN)
    data, _, _ = recv_message(c)
    assert data == msg


@pytest.mark.parametrize("dest", [0, 1])
def test_retire_connection_ids(make_pair, dest: int) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server, stop_after=3)
    # retire 0 and 1: the peer's NEW_CONNECTION_ID frames arrive after the
    # handshake, and prior_to beyond the last known ID is EINVAL until then
    # (socket.c quic_sock_set_connection_id)
    assert _until(lambda: _try(_set_cid, c, dest, 0, 2))
    assert _until(lambda: _get_cid(c, dest) == (2, 2))
    _set_cid(c, dest, 0, 3)
    assert _until(lambda: _get_cid(c, dest) == (3, 3))
    # already retired, or beyond the last issued: refused
    assert _errno(_set_cid, c, dest, 0, 3) == errno.EINVAL
    assert _errno(_set_cid, c, dest, 2, 5) == errno.EINVAL
    assert _errno(_set_cid, c, dest, 5, 10) == errno.EINVAL
    assert _errno(_set_cid, c, dest, 10, 5) == errno.EINVAL
    assert _get_cid(c, dest) == (3, 3)
    # retire several, switch the active one (IDs the peer issues arrive asynchronously)
    assert _until(lambda: _try(_set_cid, c, dest, 8, 5))
    assert _until(lambda: _get_cid(c, dest) == (8, 5))
    _roundtrip(c, b"after retire")
    # retiring all of them (up to and past the last issued) fails
    _active, first = _get_cid(c, dest)
    assert _errno(_set_cid, c, dest, 0, first + 100) == errno.EINVAL
    _roundtrip(c, b"still alive")
    _roundtrip(c, b"bye")
    assert join(t, out) == 3


def test_local_migration(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    for ev in (abi.EventType.CONNECTION_MIGRATION,):
        c.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(ev, 1).pack())
    t, out = echo_server(pair.server, stop_after=2)
    _roundtrip(c, b"before")
    host, _port = c.getsockname()[:2]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((host, 0))
    new_port = probe.getsockname()[1]
    probe.close()
    c.setsockopt(SOL_QUIC, O.CONNECTION_MIGRATION, _sockaddr((host, new_port)))
    ev = recv_event(c)
    assert isinstance(ev, abi.ConnectionMigrationEvent) and ev.local
    assert c.getsockname() == (host, new_port)
    _roundtrip(c, b"after migration")
    assert join(t, out) == 2


def test_migration_same_address_einval(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    assert _errno(c.setsockopt, SOL_QUIC, O.CONNECTION_MIGRATION,
                  _sockaddr(c.getsockname())) == errno.EINVAL
    assert _errno(c.setsockopt, SOL_QUIC, O.CONNECTION_MIGRATION,
                  _sockaddr((c.getsockname()[0], 0))) == errno.EINVAL


def test_key_update(make_pair) -> None:  # type: ignore[no-untyped-def]
    """Both ends update keys in turn.

    After any key update, the endpoint's own or the peer's, a new local one
    fails with EINVAL until the endpoint has sent a packet under the new keys
    and then, at least 2 PTO later, successfully decrypts a packet from the
    peer in the new phase (kernel crypto.c: quic_crypto_key_update refuses
    while key_pending; quic_crypto_decrypt clears key_pending once
    now - key_update_send_time >= key_update_time, which outqueue.c sets to
    2 * PTO on each ACK; RFC 9001 §6.5). An ACK-only reply elicits nothing
    from the peer, so the server's hold lifts only when the client keeps
    sending: the client sends a datagram before each retry.
    """
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(10)
    s.settimeout(10)
    for sock in (c, s):
        sock.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(abi.EventType.KEY_UPDATE, 1).pack())
    c.setsockopt(SOL_QUIC, O.KEY_UPDATE, None, 0)
    # a second update while the first is pending is refused
    assert _errno(c.setsockopt, SOL_QUIC, O.KEY_UPDATE, None, 0) == errno.EINVAL
    qsend(c, b"after update", 0, NEW | FIN)
    # the peer sees a KEY_UPDATE event (the local side does not)
    ev = recv_event(s)
    assert isinstance(ev, abi.KeyUpdateEvent) and ev.phase == 1
    assert recv_message(s)[:2] == (b"after update", 0)
    qsend(s, b"reply", 0, FIN)
    data, _anc, mflags, _ = c.recvmsg(4096, 32)
    assert not mflags & abi.MsgFlag.NOTIFICATION
    assert data == b"reply"
    # the server now updates; the client gets the event. Its hold after the
    # client's update lifts once a client packet arrives 2 PTO after the
    # server's reply: keep the client sending until then.
    def server_update() -> bool:
        if _try(s.setsockopt, SOL_QUIC, O.KEY_UPDATE, None, 0):
            return True
        c.sendmsg([b"tick"], [], DATAGRAM)
        return False

    assert _until(server_update, TIMEOUT)
    qsend(s, b"server updated", 1 | 2 | 4, NEW | FIN)  # server uni stream 7
    ev = recv_event(c)
    assert isinstance(ev, abi.KeyUpdateEvent) and ev.phase == 0
    assert recv_message(c)[:2] == (b"server updated", 7)


def _try(fn, *args) -> bool:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError:
        return False
    return True


def test_new_token(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c, s = pair.client, pair.server
    c.settimeout(10)
    # a client already holds a NEW_TOKEN when its handshake completes
    assert _until(lambda: len(c.getsockopt(SOL_QUIC, O.TOKEN, 256)) > 0)
    first = c.getsockopt(SOL_QUIC, O.TOKEN, 256)
    c.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(abi.EventType.NEW_TOKEN, 1).pack())
    s.setsockopt(SOL_QUIC, O.TOKEN, None, 0)  # server: send another NEW_TOKEN
    ev = recv_event(c)
    assert isinstance(ev, abi.NewTokenEvent) and ev.token
    assert c.getsockopt(SOL_QUIC, O.TOKEN, 256) == ev.token
    assert first
    # a server cannot read a token; a client cannot set an empty one
    assert _errno(s.getsockopt, SOL_QUIC, O.TOKEN, 256) == errno.EINVAL
    assert _errno(c.setsockopt, SOL_QUIC, O.TOKEN, b"") == errno.EINVAL


def test_datagrams(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair()
    c = pair.client
    c.settimeout(10)
    t, out = echo_server(pair.server, stop_after=2)
    assert c.sendmsg([b"client datagram"], [], DATAGRAM) == 15
    data, _anc, mflags, _ = c.recvmsg(4096, 32)
    assert data == b"client datagram"
    assert mflags & DATAGRAM and mflags & socket.MSG_EOR
    big = b"d" * 1368  # the largest that fits with max_datagram_frame_size 1400
    assert c.sendmsg([big], [], DATAGRAM) == len(big)
    data, _anc, mflags, _ = c.recvmsg(4096, 32)
    assert data == big and mflags & DATAGRAM
    assert _errno(c.sendmsg, [b"d" * 1369], [], DATAGRAM) == errno.EMSGSIZE
    assert _errno(c.sendmsg, [b"d" * 3000], [], DATAGRAM) == errno.EMSGSIZE
    assert join(t, out) == 2


def test_datagram_refused_when_peer_allows_none(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(datagrams=False)
    assert _errno(pair.client.sendmsg, [b"x"], [], DATAGRAM) == errno.EINVAL


def _sockaddr(addr: tuple) -> bytes:
    from pyquic.user.socket import pack_sockaddr

    return pack_sockaddr(addr)
