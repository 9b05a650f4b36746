"""Tests for pyquic.engine.connection: the socket-level semantics of quic_sock."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi import CryptoLevel, EventType, StreamState
from pyquic.engine import frame as fr
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.inqueue import MSG_EOR, MSG_QUIC_DATAGRAM, MSG_QUIC_NOTIFICATION
from pyquic.engine.outqueue import APP

from .netsim import CLIENT_ADDR, SERVER_ADDR, NetSim, StreamReceiver

FIN = 0x200
NEW = 0x400
UNI = 0x800
DONTWAIT = 0x10000


def _pair(seed: int = 1, **kw: object) -> NetSim:
    sim = NetSim(seed=seed, **kw)  # type: ignore[arg-type]
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)
    return sim


def _settle(sim: NetSim, t: float = 1.0) -> None:
    end = sim.now + t
    sim.run(lambda s: s.now >= end, max_time=t + 1)


def _drain(conn: QuicConnection) -> list[Any]:
    out = []
    for _ in range(1000):
        item = conn.recv(1 << 20)
        if item is None:
            break
        out.append(item)
    return out


def _events(conn: QuicConnection) -> list[abi.Event]:
    return [abi.decode_event(i.data) for i in _drain(conn)  # type: ignore[attr-defined]
            if i.msg_flags & MSG_QUIC_NOTIFICATION]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ defaults
def test_defaults_match_the_kernel() -> None:
    c = QuicConnection(True)
    p = c.get_transport_param(False)
    assert (p.max_streams_bidi, p.max_streams_uni) == (100, 100)
    assert p.max_idle_timeout == 30_000_000
    assert p.max_ack_delay == 25000 and p.ack_delay_exponent == 3
    assert p.active_connection_id_limit == 7
    assert c.get_config().initial_smoothed_rtt == 333_000
    r = c.get_transport_param(True)
    assert r.remote == 1 and r.max_data == 0
    assert c.state == ConnState.CLOSED


def test_transport_param_validation() -> None:
    c = QuicConnection(True)
    with pytest.raises(OSError) as e:
        c.set_transport_param(abi.TransportParam(max_udp_payload_size=1000))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        c.set_transport_param(abi.TransportParam(max_streams_bidi=5000))
    with pytest.raises(OSError):  # remote only during the handshake
        c.set_transport_param(abi.TransportParam(remote=1, max_data=100000))
    c.set_transport_param(abi.TransportParam(max_streams_bidi=10, max_data=200000))
    p = c.get_transport_param(False)
    assert p.max_streams_bidi == 10 and p.max_data == 200000 and p.max_streams_uni == 100


def test_config_validation_and_roundtrip() -> None:
    c = QuicConnection(False)
    with pytest.raises(OSError):
        c.set_config(abi.Config(initial_smoothed_rtt=10))
    with pytest.raises(OSError):
        c.set_config(abi.Config(payload_cipher_type=7))
    with pytest.raises(OSError):
        c.set_config(abi.Config(keepalive_probe_interval=1000))
    c.set_config(abi.Config(congestion_control_algo=1, initial_smoothed_rtt=100_000,
                            stream_data_nodelay=1))
    g = c.get_config()
    assert (g.congestion_control_algo, g.initial_smoothed_rtt, g.stream_data_nodelay) == (
        1, 100_000, 1)


def test_events_on_off_and_bad_type() -> None:
    c = QuicConnection(True)
    assert not c.get_event(EventType.STREAM_UPDATE)
    c.set_event(EventType.STREAM_UPDATE, True)
    assert c.get_event(EventType.STREAM_UPDATE)
    c.set_event(EventType.STREAM_UPDATE, False)
    assert not c.get_event(EventType.STREAM_UPDATE)
    for bad in (0, 10):
        with pytest.raises(OSError):
            c.set_event(bad, True)


def test_alpn_token_ticket_rules() -> None:
    c = QuicConnection(True)
    assert c.get_alpn() == ""
    c.set_alpn("smbd, h3, ksmbd")
    assert c.get_alpn() == "smbd,h3,ksmbd"
    with pytest.raises(OSError):
        c.set_alpn("x" * 129)
    with pytest.raises(OSError) as e:
        c.set_token(b"")
    assert e.value.errno == errno.EINVAL
    c.set_token(b"t" * 120)
    assert c.get_token() == b"t" * 120
    with pytest.raises(OSError):
        c.set_session_ticket(b"x" * 10)
    s = QuicConnection(False)
    with pytest.raises(OSError):
        s.get_token()
    with pytest.raises(OSError):
        s.set_token(b"")  # server before the handshake
    s.listen()
    with pytest.raises(OSError):
        s.set_alpn("h3")


def test_close_info_roundtrip() -> None:
    c = QuicConnection(True)
    assert c.get_close_info().errcode == 0
    c.set_close_info(abi.ConnectionClose(errcode=7, frame=3, phrase=b"bye"))
    info = c.get_close_info()
    assert (info.errcode, info.frame, info.phrase) == (7, 0, b"bye")


def test_send_before_connect_is_epipe() -> None:
    c = QuicConnection(True)
    with pytest.raises(OSError) as e:
        c.send_stream(-1, b"x", 0, False)
    assert e.value.errno == errno.EPIPE


def test_handshake_rejects_bad_secrets_and_levels() -> None:
    c = QuicConnection(True)
    with pytest.raises(OSError):  # not establishing yet
        c.set_crypto_secret(abi.CryptoSecret(send=1, level=2, type=51, secret=b"k" * 32))
    c.connect(SERVER_ADDR, CLIENT_ADDR, 0.0)
    with pytest.raises(OSError):
        c.set_crypto_secret(abi.CryptoSecret(send=1, level=1, type=51, secret=b"k" * 32))
    with pytest.raises(OSError):  # no handshake keys yet
        c.send_handshake(CryptoLevel.HANDSHAKE, b"x")
    with pytest.raises(OSError):
        c.send_handshake(CryptoLevel.INITIAL, b"")
    c.send_handshake(CryptoLevel.INITIAL, b"hello")
    out = c.datagrams_to_send(0.0)
    assert len(out) == 1 and len(out[0][0]) >= 1200  # RFC 9000 §14.1
    assert out[0][1] == SERVER_ADDR
    assert c.next_timer() is not None


def test_transport_param_cid_authentication() -> None:
    """RFC 9000 §7.3: a wrong original_destination_connection_id is refused."""
    from pyquic.engine.transport_param import TransportParameters

    c = QuicConnection(True)
    c.connect(SERVER_ADDR, CLIENT_ADDR, 0.0)
    bad = TransportParameters(original_destination_connection_id=b"\x01" * 8,
                              initial_source_connection_id=b"\x02" * 8).encode()
    with pytest.raises(OSError) as e:
        c.set_transport_param_ext(bad)
    assert e.value.errno == errno.EINVAL
    assert c.is_closed


# -------------------------------------------------------------- established
def test_handshake_done_and_key_discard() -> None:
    sim = _pair()
    assert sim.server is not None
    assert sim.client.send_key(0) is None and sim.client.send_key(1) is None
    assert sim.server.send_key(0) is None
    assert sim.server.paths.validated


def test_transport_params_exchanged() -> None:
    sim = _pair()
    assert sim.server is not None
    r = sim.client.get_transport_param(True)
    assert r.max_streams_bidi == 100 and r.max_data == 65535 * 32
    assert sim.server.get_transport_param(True).max_idle_timeout == 30_000_000


def test_stream_roundtrip_and_events() -> None:
    sim = _pair()
    srv = sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    sim.client.set_event(EventType.STREAM_UPDATE, True)
    sid = sim.client.stream_open(-1, 0)
    assert sid == 0
    assert sim.client.send_stream(sid, b"ping", FIN, True) == 4
    _settle(sim)
    items = _drain(srv)
    data = [i for i in items if not i.msg_flags & MSG_QUIC_NOTIFICATION]  # type: ignore
    evs = [abi.decode_event(i.data) for i in items  # type: ignore
           if i.msg_flags & MSG_QUIC_NOTIFICATION]  # type: ignore
    assert data[0].data == b"ping" and data[0].stream_flags & FIN  # type: ignore
    assert any(isinstance(e, abi.StreamUpdateEvent) and e.state == StreamState.RECV_RECVD
               for e in evs)
    # reply on the same (peer-opened) stream with id -1: the active stream
    assert srv.send_stream(-1, b"pong", FIN, False) == 4
    _settle(sim)
    cl = _drain(sim.client)
    got = [i for i in cl if i.stream_id == 0]  # type: ignore
    assert got and got[0].data == b"pong"  # type: ignore
    evs = [abi.decode_event(i.data) for i in cl  # type: ignore
           if i.msg_flags & MSG_QUIC_NOTIFICATION]  # type: ignore
    assert any(isinstance(e, abi.StreamUpdateEvent) and e.state == StreamState.SEND_RECVD
               for e in evs)


def test_stream_errnos() -> None:
    sim = _pair()
    c = sim.client
    sid = c.stream_open(-1, 0)
    with pytest.raises(OSError) as e:
        c.send_stream(sid, b"", 0, True)
    assert e.value.errno == errno.EMSGSIZE
    with pytest.raises(OSError) as e:
        c.send_stream(sid, b"x", 0x1, True)  # unknown flag
    assert e.value.errno == errno.EINVAL
    c.send_stream(sid, b"x", 0, True)
    with pytest.raises(OSError) as e:
        c.stream_open(sid, 0)  # opening a stream already written to
    assert e.value.errno == errno.EINVAL
    c.send_stream(sid, b"x", FIN, True)
    with pytest.raises(OSError) as e:
        c.send_stream(sid, b"x", 0, True)  # finished
    assert e.value.errno == errno.EINVAL


def test_stream_limit_eagain_then_max_streams() -> None:
    sim = _pair(server_setup=lambda s: s.set_transport_param(
        abi.TransportParam(max_streams_bidi=2)))
    c = sim.client
    c.set_event(EventType.STREAM_MAX_STREAM, True)
    ids = [c.stream_open(-1, 0) for _ in range(2)]
    with pytest.raises(OSError) as e:
        c.stream_open(-1, DONTWAIT)
    assert e.value.errno == errno.EAGAIN
    for sid in ids:
        c.send_stream(sid, b"done", FIN, True)
    rcv = StreamReceiver()
    sim.on_step = lambda s: rcv.step(s.server)
    assert sim.run(lambda s: len(rcv.fin) == 2, max_time=5)
    assert sim.server is not None
    for sid in ids:  # a bidi stream is released once both halves are final
        sim.server.send_stream(sid, b"", FIN, True)
    _settle(sim)
    evs = _events(c)
    assert any(isinstance(e, abi.StreamMaxStreamEvent) for e in evs)
    assert c.stream_open(-1, 0) == 8


def test_flow_control_enospc_vs_eagain() -> None:
    sim = _pair(server_setup=lambda s: s.set_transport_param(
        abi.TransportParam(max_stream_data_bidi_remote=2000, max_data=100000)))
    c = sim.client
    sid = c.stream_open(-1, 0)
    assert c.send_stream(sid, b"a" * 5000, 0, True) == 2000  # partial accept
    with pytest.raises(OSError) as e:
        c.send_stream(sid, b"b" * 10, 0, True)
    assert e.value.errno == errno.ENOSPC  # stall with a cmsg
    with pytest.raises(OSError) as e:
        c.send_stream(sid, b"b" * 10, 0, False)
    assert e.value.errno == errno.EAGAIN  # same stall without a cmsg
    # the receiver reads, credit flows back with MAX_STREAM_DATA
    rcv = StreamReceiver()
    sim.on_step = lambda s: rcv.step(s.server)
    _settle(sim)
    assert rcv.stream(sid) == b"a" * 2000
    assert c.send_stream(sid, b"b" * 10, 0, True) == 10


def test_stream_reset_and_stop_sending() -> None:
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    c.set_event(EventType.STREAM_UPDATE, True)
    sid = c.stream_open(-1, 0)
    c.send_stream(sid, b"abc", 0, True)
    _settle(sim)
    _drain(srv)
    c.stream_reset(sid, 42)
    with pytest.raises(OSError):
        c.send_stream(sid, b"x", 0, True)
    _settle(sim)
    evs = _events(srv)
    assert any(isinstance(e, abi.StreamUpdateEvent) and e.state == StreamState.RECV_RESET_RECVD
               and e.errcode == 42 for e in evs)
    evs = _events(c)
    assert any(isinstance(e, abi.StreamUpdateEvent) and e.state == StreamState.SEND_RESET_RECVD
               for e in evs)
    # STOP_SENDING from the server makes the client reset its stream
    sid2 = c.stream_open(-1, 0)
    c.send_stream(sid2, b"zzz", 0, True)
    _settle(sim)
    _drain(srv)
    srv.stream_stop_sending(sid2, 9)
    _settle(sim)
    evs = _events(c)
    assert any(isinstance(e, abi.StreamUpdateEvent) and e.state == StreamState.SEND_RESET_SENT
               and e.errcode == 9 for e in evs)
    with pytest.raises(OSError):
        c.send_stream(sid2, b"x", 0, True)


def test_datagrams() -> None:
    def setup(s: QuicConnection) -> None:
        s.set_transport_param(abi.TransportParam(max_datagram_frame_size=1400))

    sim = NetSim(seed=2, server_setup=setup)
    sim.client.set_transport_param(abi.TransportParam(max_datagram_frame_size=1400))
    assert sim.handshake()
    c, srv = sim.client, sim.server
    assert srv is not None
    assert c.max_datagram_payload() == 1368  # the kernel's limit with 1400
    with pytest.raises(OSError) as e:
        c.send_datagram(b"x" * 1369)
    assert e.value.errno == errno.EMSGSIZE
    c.send_datagram(b"x" * 1368)
    c.send_datagram(b"small")
    _settle(sim)
    items = _drain(srv)
    dg = [i.data for i in items if i.msg_flags & MSG_QUIC_DATAGRAM]  # type: ignore
    assert dg == [b"x" * 1368, b"small"]
    assert all(i.msg_flags & MSG_EOR for i in items)  # type: ignore


def test_datagram_refused_when_peer_allows_none() -> None:
    sim = _pair()
    with pytest.raises(OSError) as e:
        sim.client.send_datagram(b"x")
    assert e.value.errno == errno.EINVAL


def test_key_update_local_and_peer() -> None:
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    c.set_event(EventType.KEY_UPDATE, True)
    srv.set_event(EventType.KEY_UPDATE, True)
    c.key_update()
    with pytest.raises(OSError) as e:
        c.key_update()  # pending
    assert e.value.errno == errno.EINVAL
    sid = c.stream_open(-1, 0)
    c.send_stream(sid, b"after update", FIN, True)
    rcv = StreamReceiver()
    sim.on_step = lambda s: rcv.step(s.server)
    assert sim.run(lambda s: sid in rcv.fin, max_time=5)
    assert rcv.stream(sid) == b"after update"
    _settle(sim)
    assert c.key_phase == 1 and srv.key_phase == 1
    assert not _events(c)  # no event for our own update
    assert any(isinstance(abi.decode_event(e), abi.KeyUpdateEvent) for e in rcv.events)
    # kernel crypto.c: still refused until a packet in the new phase
    # arrives 2 PTO after our first one under the new keys
    assert c.key_update_pending
    with pytest.raises(OSError) as e:
        c.key_update()
    assert e.value.errno == errno.EINVAL
    _ping_until(sim, lambda: not c.key_update_pending)
    c.key_update()  # allowed again
    assert c.key_phase == 0


def _ping_until(sim: NetSim, cond: Callable[[], bool], max_time: float = 5.0) -> None:
    """Exchange a little stream data both ways until ``cond`` holds."""
    start = sim.now
    rcv = StreamReceiver()

    def step(s: NetSim) -> None:
        rcv.step(s.server)
        rcv.step(s.client)
        if s.now - step.last >= 0.02:  # type: ignore[attr-defined]
            step.last = s.now  # type: ignore[attr-defined]
            for conn in (s.client, s.server):
                assert conn is not None
                sid = conn.stream_open(-1, 0x800)
                conn.send_stream(sid, b"p", FIN, True)

    step.last = -1.0  # type: ignore[attr-defined]
    sim.on_step = step
    assert sim.run(lambda s: cond(), max_time=max_time)
    sim.on_step = None
    assert sim.now - start < max_time


def test_key_update_held_after_peer_update() -> None:
    """A peer-initiated update holds back ours as well (kernel key_pending),
    which lifts after 2 PTO of traffic in the new phase."""
    sim = _pair(3)
    c, srv = sim.client, sim.server
    assert srv is not None
    c.key_update()
    _ping_until(sim, lambda: srv.key_phase == 1)
    assert srv.key_update_pending
    with pytest.raises(OSError) as e:
        srv.key_update()
    assert e.value.errno == errno.EINVAL
    _ping_until(sim, lambda: not srv.key_update_pending)
    srv.key_update()
    _ping_until(sim, lambda: c.key_phase == 0 and srv.key_phase == 0)
    assert c.key_update_pending  # the client just followed the server


def test_connection_ids_issued_and_retired() -> None:
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    _settle(sim)
    info = c.get_connection_id(False)
    assert info.active == 0 and info.prior_to == 0
    d = c.get_connection_id(True)
    assert d.active == 0
    assert len(c.dest) > 1  # the server issued more IDs
    srv.set_event(EventType.CONNECTION_ID, True)
    c.set_connection_id(abi.ConnectionIdInfo(dest=1, prior_to=1))
    assert c.get_connection_id(True).prior_to == 1
    with pytest.raises(OSError):
        c.set_connection_id(abi.ConnectionIdInfo(dest=1, prior_to=1))  # already retired
    _settle(sim)
    assert any(isinstance(e, abi.ConnectionIdEvent) for e in _events(srv))
    # data still flows on the new DCID
    sid = c.stream_open(-1, 0)
    c.send_stream(sid, b"new cid", FIN, True)
    rcv = StreamReceiver()
    sim.on_step = lambda s: rcv.step(s.server)
    assert sim.run(lambda s: sid in rcv.fin, max_time=5)


def test_new_token_received_by_client() -> None:
    sim = _pair()
    _settle(sim)
    assert len(sim.client.get_token()) > 0


def test_close_reaches_peer_as_event() -> None:
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    srv.set_event(EventType.CONNECTION_CLOSE, True)
    c.set_close_info(abi.ConnectionClose(errcode=5, phrase=b"done here"))
    c.close(sim.now)
    assert c.state == ConnState.CLOSING
    _settle(sim)
    evs = _events(srv)
    closes = [e for e in evs if isinstance(e, abi.ConnectionCloseEvent)]
    assert closes and closes[0].errcode == 5 and closes[0].phrase == b"done here"
    assert srv.state in (ConnState.DRAINING, ConnState.CLOSED)
    assert srv.error == errno.ECONNRESET
    _settle(sim, 5)
    assert c.state == ConnState.CLOSED and srv.state == ConnState.CLOSED
    with pytest.raises(OSError) as e:
        c.send_stream(-1, b"x", 0, False)
    assert e.value.errno == errno.EPIPE


def test_idle_timeout_closes_with_event() -> None:
    def setup(s: QuicConnection) -> None:
        s.set_transport_param(abi.TransportParam(max_idle_timeout=2_000_000))

    sim = NetSim(seed=3, server_setup=setup)
    assert sim.handshake()
    sim.client.set_event(EventType.CONNECTION_CLOSE, True)
    assert sim.run(lambda s: s.client.state == ConnState.CLOSED, max_time=10)
    assert sim.client.error == errno.ETIMEDOUT
    assert any(isinstance(e, abi.ConnectionCloseEvent) for e in _events(sim.client))


def test_keepalive_keeps_connection_open() -> None:
    def setup(s: QuicConnection) -> None:
        s.set_transport_param(abi.TransportParam(max_idle_timeout=2_000_000))

    sim = NetSim(seed=4, server_setup=setup)
    sim.client.set_config(abi.Config(keepalive_probe_interval=1_500_000))
    assert sim.handshake()
    _settle(sim, 8)
    assert sim.client.state == ConnState.ESTABLISHED


def test_server_session_ticket_key_depends_on_ip() -> None:
    sim = _pair()
    assert sim.server is not None
    key = sim.server.get_session_ticket()
    assert len(key) == 64
    other = QuicConnection(False)
    other.inherit(sim.server)
    other.paths.set_addresses(0, SERVER_ADDR, ("127.0.0.1", 9999))
    other.state = ConnState.ESTABLISHING
    assert other.get_session_ticket() == key  # same IP, other port


def test_peer_protocol_violation_closes() -> None:
    """A server must not receive HANDSHAKE_DONE (RFC 9000 §19.20)."""
    from pyquic.engine import frame as fr

    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    c.outq.push_ctrl(2, fr.HandshakeDoneFrame())
    _settle(sim)
    assert srv.is_closed and srv.close_errcode == 0x0A


def test_local_and_peer_migration_events() -> None:
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    c.set_event(EventType.CONNECTION_MIGRATION, True)
    srv.set_event(EventType.CONNECTION_MIGRATION, True)
    new = ("127.0.0.1", 40001)
    with pytest.raises(OSError):
        c.migrate(("::1", 1, 0, 0))  # another address family
    c.migrate(new, sim.now)
    sim.client_addr = new
    assert c.local_addr == new
    sid = c.stream_open(-1, 0)
    c.send_stream(sid, b"moved", FIN, True)
    _settle(sim)
    assert srv.remote_addr == new
    cev = [e for e in _events(c) if isinstance(e, abi.ConnectionMigrationEvent)]
    sev = [e for e in _events(srv) if isinstance(e, abi.ConnectionMigrationEvent)]
    assert cev and cev[0].local and sev and not sev[0].local


def test_stateless_reset_closes() -> None:
    sim = _pair()
    c = sim.client
    _settle(sim)
    token = next(x.token for x in c.dest if x.token)  # from NEW_CONNECTION_ID
    assert len(token) == 16
    c.set_event(EventType.CONNECTION_CLOSE, True)
    c.receive_datagram(b"\x40" + bytes(30) + token, SERVER_ADDR, CLIENT_ADDR, sim.now)
    assert c.state == ConnState.CLOSED and c.error == errno.ECONNRESET


def test_zero_rtt_stream_data() -> None:
    """EARLY keys: data sent before the handshake goes out as 0-RTT and is
    readable on the server once its APP receive key is in."""
    early = abi.CryptoSecret(send=1, level=CryptoLevel.EARLY, type=51, secret=b"e" * 32)

    def setup(s: QuicConnection) -> None:
        orig = s.set_transport_param_ext

        def with_early(data: bytes) -> None:
            orig(data)
            s.set_crypto_secret(abi.CryptoSecret(send=0, level=CryptoLevel.EARLY, type=51,
                                                 secret=b"e" * 32))
        s.set_transport_param_ext = with_early  # type: ignore[method-assign]

    sim = NetSim(seed=5, server_setup=setup)
    c = sim.client
    c.connect(SERVER_ADDR, CLIENT_ADDR, sim.now)
    # remembered server parameters (resumption) and the early secret
    c.set_transport_param(abi.TransportParam(remote=1, max_streams_bidi=10, max_data=100000,
                                             max_stream_data_bidi_remote=50000))
    c.set_crypto_secret(early)
    sim.client_hs.start()
    sid = c.stream_open(-1, 0)
    assert c.send_stream(sid, b"early data", FIN, True) == 10
    out = c.datagrams_to_send(sim.now)
    from pyquic.engine.packet import PacketType, parse_header
    types = []
    for d, _ in out:
        off = 0
        while off < len(d):
            h = parse_header(d, off, 8)
            types.append(h.packet_type)
            off = h.packet_end
            if not h.is_long:
                break
    assert PacketType.ZERO_RTT in types
    for d, _ in out:
        sim._transmit(True, d)
    rcv = StreamReceiver()
    sim.on_step = lambda s: rcv.step(s.server)
    assert sim.run(lambda s: sid in rcv.fin, max_time=10)
    assert rcv.stream(sid) == b"early data"


def test_garbage_datagrams_never_raise() -> None:
    import random

    sim = _pair()
    c = sim.client
    rnd = random.Random(7)
    dcid = c.scid
    for i in range(300):
        n = rnd.randrange(1, 1500)
        junk = rnd.randbytes(n)
        if i % 2:
            junk = bytes([0x40 | (junk[0] & 0x3F)]) + dcid + junk[1:]  # short header to us
        c.receive_datagram(junk, SERVER_ADDR, CLIENT_ADDR, sim.now)
    assert c.state == ConnState.ESTABLISHED  # unauthenticated junk is dropped


# ------------------------------------------- stream events, reset, close info
def _stream_events(items: list[Any]) -> list[tuple[int, int, int, int]]:
    out = []
    for i in items:
        if i.msg_flags & MSG_QUIC_NOTIFICATION:
            e = abi.decode_event(i.data)
            if isinstance(e, abi.StreamUpdateEvent):
                out.append((e.id, int(e.state), e.errcode, e.finalsz))
    return out


def test_reset_right_after_data_purges_unread_data() -> None:
    """send then reset at once: the peer gets RECV then RESET_RECVD and none of
    the stream's data (frame.c purges recv_list); credit is counted once."""
    sim = _pair(real_tls=True)
    c, srv = sim.client, sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    c.set_event(EventType.STREAM_UPDATE, True)
    sid = c.stream_open(-1, 0)
    assert c.send_stream(sid, b"partial", 0, False) == 7
    sim._flush()  # the data is on the wire before the reset
    c.stream_reset(sid, 99)
    _settle(sim)
    items = _drain(srv)
    assert not [i for i in items if i.stream_id == sid]
    assert _stream_events(items) == [(sid, StreamState.RECV_RECV, 0, 0),
                                     (sid, StreamState.RECV_RESET_RECVD, 99, 7)]
    assert srv.streams.recv_consumed == 7
    assert (sid, StreamState.SEND_RESET_RECVD, 99, 7) in _stream_events(_drain(c))


def test_lost_reset_stream_is_retransmitted() -> None:
    sim = _pair(real_tls=True)
    c, srv = sim.client, sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    sid = c.stream_open(-1, 0)
    c.send_stream(sid, b"partial", 0, False)
    sim._flush()
    c.stream_reset(sid, 5)
    sim.loss = 1.0
    sim._flush()  # the RESET_STREAM is lost
    sim.loss = 0.0
    _settle(sim, 3.0)
    evs = _stream_events(_drain(srv))
    assert (sid, StreamState.RECV_RESET_RECVD, 5, 7) in evs


def test_recv_state_events_in_and_out_of_order() -> None:
    """inqueue.c: RECV on first data; SIZE_KNOWN only for a FIN arriving out of
    order; RECVD once everything is in; SEND_RECVD without a final size."""
    from pyquic.engine import frame as fr
    from pyquic.engine.packet import PacketType

    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    one = PacketType.ONE_RTT
    srv._on_stream_frame(fr.StreamFrame(0, 5, b"world", True), one)
    srv._on_stream_frame(fr.StreamFrame(0, 0, b"hello"), one)
    srv._on_stream_frame(fr.StreamFrame(4, 0, b"hi", True), one)
    srv._on_stream_frame(fr.StreamFrame(4, 0, b"hi", True), one)  # duplicate
    items = _drain(srv)
    assert _stream_events(items) == [
        (0, StreamState.RECV_RECV, 0, 0), (0, StreamState.RECV_SIZE_KNOWN, 0, 10),
        (0, StreamState.RECV_RECVD, 0, 10),
        (4, StreamState.RECV_RECV, 0, 0), (4, StreamState.RECV_RECVD, 0, 2)]
    assert b"".join(i.data for i in items if i.stream_id == 0) == b"helloworld"
    c.set_event(EventType.STREAM_UPDATE, True)
    sid = c.stream_open(-1, UNI)
    c.send_stream(sid, b"x" * 3000, FIN, False)
    _settle(sim)
    assert _stream_events(_drain(c)) == [(sid, StreamState.SEND_RECVD, 0, 0)]


def test_close_info_after_local_protocol_violation() -> None:
    """The closing side and its peer both report code, frame type and phrase
    (outqueue.c quic_outq_transmit_close / frame.c close processing)."""
    from pyquic.engine import frame as fr

    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    c.set_event(EventType.CONNECTION_CLOSE, True)
    c.outq.push_ctrl(2, fr.HandshakeDoneFrame())
    _settle(sim)
    info = srv.get_close_info()
    assert (info.errcode, info.frame) == (0x0A, 0x1E) and info.phrase
    peer = c.get_close_info()
    assert (peer.errcode, peer.frame, peer.phrase) == (0x0A, 0x1E, info.phrase)
    ev = [e for e in _events(c) if isinstance(e, abi.ConnectionCloseEvent)]
    assert ev and (ev[0].errcode, ev[0].frame, ev[0].phrase) == (0x0A, 0x1E, info.phrase)


def test_close_info_after_idle_timeout() -> None:
    def setup(s: QuicConnection) -> None:
        s.set_transport_param(abi.TransportParam(max_idle_timeout=2_000_000))

    sim = NetSim(seed=3, server_setup=setup)
    assert sim.handshake()
    assert sim.run(lambda s: s.client.state == ConnState.CLOSED, max_time=10)
    info = sim.client.get_close_info()
    assert (info.errcode, info.frame, info.phrase) == (0, 0, b"idle timeout")


def test_old_receive_keys_discarded_after_three_pto() -> None:
    """RFC 9001 §6.5: a late packet of the previous key phase is accepted
    shortly after a key update and dropped once 3 PTO have passed."""
    sim = _pair()
    c, srv = sim.client, sim.server
    assert srv is not None
    held: list[tuple[bytes, int]] = []
    orig = sim._transmit

    def hold(to_server: bool, data: bytes, *addrs: object) -> None:
        held.append((data, c.spaces[2].next_pn - 1))

    sid = c.stream_open(-1, 0)
    for chunk in (b"a", b"b"):
        sim._transmit = hold  # type: ignore[method-assign,assignment]
        c.send_stream(sid, chunk, 0, False)
        sim._flush()
        sim._transmit = orig  # type: ignore[method-assign]
    assert len(held) == 2 and held[0][1] != held[1][1]
    c.key_update()
    c.send_stream(sid, b"c", 0, False)
    assert sim.run(lambda s: srv.key_phase == 1, max_time=2)
    pns = srv.spaces[2]
    srv.receive_datagram(held[0][0], CLIENT_ADDR, SERVER_ADDR, sim.now)
    assert pns.is_duplicate(held[0][1])  # old key still kept
    assert 3 * srv.rtt.pto() < 0.5
    srv.receive_datagram(held[1][0], CLIENT_ADDR, SERVER_ADDR, sim.now + 1.0)
    assert not pns.is_duplicate(held[1][1])
    assert srv._prev_recv_key is None


def test_unconfirmed_client_empty_flush_skips_packer() -> None:
    """Between its Finished and HANDSHAKE_DONE a client is ESTABLISHED but not
    confirmed; a flush with nothing queued returns [] without the packer (the
    exact check covers every space with keys), and the handshake still
    completes."""
    sim = NetSim(seed=3)
    sim.connect()
    assert sim.run(lambda s: s.client.state is ConnState.ESTABLISHED, max_time=5)
    c = sim.client
    assert not c.handshake_confirmed
    calls: list[float] = []
    real = c.outq.build_datagrams

    def spy(conn: QuicConnection, now: float) -> list[bytes]:
        calls.append(now)
        return real(conn, now)

    c.outq.build_datagrams = spy  # type: ignore[method-assign]
    assert c.datagrams_to_send_from(sim.now) == []  # the sim flushed it just now
    assert calls == []
    c.outq.push_ctrl(APP, fr.PingFrame())  # something queued: the packer runs
    assert len(c.datagrams_to_send_from(sim.now)) == 1 and len(calls) == 1
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)


def test_closed_connection_is_freed_without_the_cyclic_gc() -> None:
    """An established connection, once dropped, goes at its last reference:
    no part of it refers back to it (the cyclic GC would otherwise run for
    every connection, a measurable share of a handshake)."""
    import gc
    import weakref

    sim = _pair()
    refs = [weakref.ref(sim.client), weakref.ref(sim.server)]
    gc.disable()
    try:
        del sim
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


# ------------------------------------------------ ACK frames on the rr path
ONE_RTT = 5  # PacketType.ONE_RTT, checked below


def test_one_rtt_constant() -> None:
    from pyquic.engine.packet import PacketType

    assert int(PacketType.ONE_RTT) == ONE_RTT

def _ack_cases() -> list[fr.AckFrame]:
    """Single-range ACKs across the varint widths (RFC 9000 §16) and a few
    multi-range ones."""
    out = []
    for largest in (0, 1, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, (1 << 62) - 1):
        for first in sorted({0, largest // 2, largest}):
            for delay in (0, 63, 64, 16384, (1 << 30)):
                out.append(fr.AckFrame([(largest - first, largest)], delay))
    out.append(fr.AckFrame([(10, 20), (0, 5)], 3))
    out.append(fr.AckFrame([(100, 100), (50, 60), (0, 1)], 70000))
    out.append(fr.AckFrame([(1 << 20, (1 << 20) + 5), (0, 0)], 0))
    return out


@pytest.mark.parametrize("f", _ack_cases(), ids=str)
def test_parse_ack_inline_matches_the_frame_parser(f: fr.AckFrame) -> None:
    """connection._parse_ack (inline for one range, the frame parser for
    more) returns the frame and the position after it; a STREAM frame after
    it is left alone."""
    from pyquic.engine.connection import _parse_ack

    enc = f.encode()
    tail = b"\x0c\x00\x05data"
    got, pos = _parse_ack(enc + tail)
    assert got is not None
    assert pos == len(enc)
    assert list(got.ranges) == list(f.ranges) and got.ack_delay == f.ack_delay
    ref = fr.parse_frames(enc, ONE_RTT)[0]
    assert list(got.ranges) == list(ref.ranges) and got.ack_delay == ref.ack_delay


@pytest.mark.parametrize("f", _ack_cases(), ids=str)
def test_parse_ack_truncated_at_every_length(f: fr.AckFrame) -> None:
    from pyquic.engine.connection import _parse_ack

    enc = f.encode()
    for cut in range(len(enc)):
        assert _parse_ack(enc[:cut]) == (None, 0), cut


def test_parse_ack_non_minimal_varints_and_bad_first_range() -> None:
    from pyquic.engine.connection import _parse_ack

    # RFC 9000 §16: any varint length is valid: largest 5 on two bytes
    got, pos = _parse_ack(b"\x02\x40\x05\x00\x00\x80\x00\x00\x01")
    assert got is not None and got.ranges == [(4, 5)] and got.ack_delay == 0 and pos == 9
    # First ACK Range larger than Largest Acknowledged: FRAME_ENCODING_ERROR
    # (RFC 9000 §19.3.1), so nothing parses here
    assert _parse_ack(b"\x02\x05\x00\x00\x06") == (None, 0)
    # a range count with no ranges after it
    assert _parse_ack(b"\x02\x05\x00\x01\x00") == (None, 0)


@pytest.mark.parametrize("general", [False, True])
def test_inline_single_range_ack_encode_matches_ack_frame_encode(
        monkeypatch: pytest.MonkeyPatch, general: bool) -> None:
    """The packers' inline single-range ACK (request/response replies) is
    byte for byte fr.AckFrame.encode, across packet numbers and ACK delays
    needing 1-, 2- and 4-byte varints; the replies' ACKs are then settled by
    the client (its sent packets do not pile up)."""
    from pyquic.engine.common import encode_varint
    from pyquic.engine.outqueue import OutQueue

    from .test_fastpath import _read_all
    from .test_settle import _pair, _payload, _send, _to_client, _to_server

    sim, cli, srv = _pair()
    if general:
        monkeypatch.setattr(OutQueue, "_fast_ok", lambda self, conn: False)
    t = sim.now
    seen: set[tuple[int, int]] = set()
    gaps = (0.0, 0.0004, 0.001, 0.2)  # ACK delay 0, 50, 125, 25000 units of 8 us
    for i in range(72):
        t += 0.01
        req = _send(cli, b"q", t)
        _to_server(srv, req, t + 0.001)
        assert _read_all(srv) == b"q"
        gap = gaps[i % len(gaps)]
        rsp = _send(srv, b"r", t + 0.001 + gap)
        assert len(rsp) == 1
        payload = _payload(cli, rsp[0])
        f = fr.parse_frames(payload, ONE_RTT)[0]
        assert isinstance(f, fr.AckFrame) and len(f.ranges) == 1
        enc = fr.AckFrame(f.ranges, f.ack_delay).encode()
        assert payload[:len(enc)] == enc
        seen.add((len(encode_varint(f.largest)), len(encode_varint(f.ack_delay))))
        t += gap
        _to_client(cli, rsp, t + 0.002)
        assert _read_all(cli) == b"r"
        cli.next_timer()
        assert cli._ack_later is None
        assert len(cli.spaces[APP].sent) <= 2
    assert cli.state == srv.state == ConnState.ESTABLISHED
    # 1- and 2-byte packet numbers, 1-, 2- and 4-byte delays
    assert {w for w, _d in seen} == {1, 2} and {d for _w, d in seen} == {1, 2, 4}
