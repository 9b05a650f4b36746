"""Engine-to-engine tests of address validation, version negotiation,
greasing, stateless reset and keep-alive (simulated network, in memory)."""

from __future__ import annotations

import errno
import random
import socket

import pytest

from pyquic import abi
from pyquic.abi.events import decode_event
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.errors import VERSION_NEGOTIATION_ERROR
from pyquic.engine.packet import (
    VERSION_1,
    VERSION_2,
    PacketType,
    build_retry,
    build_version_negotiation,
    parse_header,
)

from .netsim import SERVER_ADDR, NetSim, StreamReceiver, StreamSender


def _listener(seed: int = 9, validate: bool = False, version: int = 0) -> QuicConnection:
    r = random.Random(seed)
    lst = QuicConnection(False, random=lambda n: r.randbytes(n))
    lst.listen()
    lst.set_config(abi.Config(validate_peer_address=int(validate), version=version))
    return lst


def _transfer(sim: NetSim, size: int = 50_000) -> bytes:
    payload = bytes(random.Random(4).randbytes(size))
    snd = StreamSender(sim.client, [payload])
    rcv = StreamReceiver()

    def step(s: NetSim) -> None:
        snd.step()
        rcv.step(s.server)

    sim.on_step = step
    assert sim.run(lambda s: bool(snd.ids) and snd.ids[0] in rcv.fin, max_time=60)
    return rcv.stream(snd.ids[0]) if snd.ids[0] in rcv.fin else b""


def _events(conn: QuicConnection) -> list[bytes]:
    rcv = StreamReceiver()
    rcv.step(conn)
    return rcv.events


# ------------------------------------------------------------------ Retry
def _retry_sim(version: int = 0, seed: int = 1) -> NetSim:
    sim = NetSim(seed=seed)
    if version:
        sim.client.set_config(abi.Config(version=version))
    sim.listener = _listener(validate=True)
    return sim


def test_retry_handshake_and_transfer() -> None:
    sim = _retry_sim()
    assert sim.handshake()
    assert sim.stateless == ["retry"]
    c, s = sim.client, sim.server
    assert s is not None
    assert c.retry_scid is not None and c.retry_scid == s.retry_scid
    assert s.orig_dcid == c.orig_dcid  # from the token, checked by the client (§7.3)
    assert s.token_validated and s.paths.validated
    payload = random.Random(4).randbytes(50_000)
    assert _transfer(sim) == payload


def test_retry_version_2() -> None:
    sim = _retry_sim(version=VERSION_2)
    assert sim.handshake()
    assert sim.stateless == ["retry"]
    assert sim.client.version == VERSION_2 and sim.server is not None
    assert sim.server.version == VERSION_2


def test_client_ignores_bad_retry() -> None:
    sim = NetSim(seed=2)
    sim.connect()
    c = sim.client
    c.datagrams_to_send(sim.now)
    # wrong integrity tag (computed over another original DCID)
    bad = build_retry(VERSION_1, c.scid, b"newscid1", b"otherdcid", b"tok")
    c.receive_datagram(bad, SERVER_ADDR, None, sim.now)
    assert c.retry_scid is None and c.initial_token == b""
    # a good one is taken: new DCID, token in the next Initial
    good = build_retry(VERSION_1, c.scid, b"newscid1", c.orig_dcid, b"tok")
    c.receive_datagram(good, SERVER_ADDR, None, sim.now)
    assert c.retry_scid == b"newscid1" and c.dcid == b"newscid1"
    out = c.datagrams_to_send(sim.now)
    assert out
    h = parse_header(out[0][0], 0)
    assert h.packet_type == PacketType.INITIAL and h.token == b"tok" and h.dcid == b"newscid1"
    # only one Retry per connection attempt
    again = build_retry(VERSION_1, c.scid, b"newscid2", c.orig_dcid, b"tok2")
    c.receive_datagram(again, SERVER_ADDR, None, sim.now)
    assert c.retry_scid == b"newscid1"


def test_client_rejects_missing_retry_source_cid() -> None:
    """A server that ignores the Retry in its transport parameters fails §7.3."""
    sim = _retry_sim(seed=3)

    def setup(srv: QuicConnection) -> None:
        orig = srv.get_transport_param_ext

        def forgetful() -> bytes:
            srv.retry_scid = None
            return orig()

        srv.get_transport_param_ext = forgetful  # type: ignore[method-assign]

    sim.server_setup = setup
    sim.connect()
    try:
        sim.run(lambda s: s.client.is_closed, max_time=10)
    except OSError as e:  # the client's TLS driver sees EINVAL
        assert e.errno == errno.EINVAL
    assert sim.client.is_closed and sim.client.error == errno.EPROTO


# -------------------------------------------------------------- NEW_TOKEN
def test_new_token_skips_retry_next_time() -> None:
    lst = _listener(validate=True)
    sim = NetSim(seed=5)
    sim.listener = lst
    assert sim.handshake()
    assert sim.run(lambda s: bool(s.client.token), max_time=5)
    token = sim.client.get_token()
    assert any(int.from_bytes(e[:2], "little") == abi.EventType.NEW_TOKEN or token in e
               for e in _events(sim.client)) or token
    # the next connection presents it: no Retry, address validated
    r = random.Random(77)
    c2 = QuicConnection(True, random=lambda n: r.randbytes(n))
    c2.set_token(token)
    sim2 = NetSim(seed=6, client=c2)
    sim2.listener = lst
    assert sim2.handshake()
    assert sim2.stateless == []
    assert sim2.server is not None and sim2.server.token_validated
    assert sim2.server.retry_scid is None


def test_token_from_other_server_gets_retry() -> None:
    other = _listener(seed=1, validate=True)
    sim = NetSim(seed=5)
    sim.listener = other
    assert sim.handshake()
    assert sim.run(lambda s: bool(s.client.token), max_time=5)
    r = random.Random(78)
    c2 = QuicConnection(True, random=lambda n: r.randbytes(n))
    c2.set_token(sim.client.get_token())
    sim2 = NetSim(seed=6, client=c2)
    sim2.listener = _listener(seed=2, validate=True)  # another key
    assert sim2.handshake()
    assert sim2.stateless == ["retry"]  # §8.1.3: invalid NEW_TOKEN token -> Retry


# ---------------------------------------------------- version negotiation
def test_compatible_upgrade_v1_to_v2() -> None:
    sim = NetSim(seed=7)
    sim.listener = _listener(version=VERSION_2)
    assert sim.handshake()
    c, s = sim.client, sim.server
    assert s is not None
    assert c.original_version == VERSION_1
    assert c.version == VERSION_2 and s.version == VERSION_2
    assert _transfer(sim, 20_000) == random.Random(4).randbytes(20_000)


def test_no_upgrade_by_default() -> None:
    sim = NetSim(seed=8)
    sim.listener = _listener()
    assert sim.handshake()
    assert sim.client.version == VERSION_1 and sim.server is not None
    assert sim.server.version == VERSION_1


def test_server_detects_chosen_version_mismatch() -> None:
    """RFC 9368 §4: the client's Chosen Version must be the version in use."""
    sim = NetSim(seed=9)
    sim.client.connect(SERVER_ADDR, ("127.0.0.1", 40000), sim.now)
    sim.client.version = VERSION_2  # its parameters now claim v2 ...
    sim.client_hs.start()
    sim.client.version = VERSION_1  # ... while it speaks v1
    try:
        sim.run(lambda s: s.server is not None and s.server.is_closed, max_time=5)
    except OSError as e:  # the server's TLS driver sees EINVAL
        assert e.errno == errno.EINVAL
    assert sim.server is not None and sim.server.is_closed
    assert sim.server.close_errcode == VERSION_NEGOTIATION_ERROR


def test_version_negotiation_no_common_version() -> None:
    sim = NetSim(seed=10)
    sim.connect()
    c = sim.client
    c.datagrams_to_send(sim.now)
    vn = build_version_negotiation(c.scid, c.dcid, [0x1A2A3A4A, 0xFF00001D])
    c.receive_datagram(vn, SERVER_ADDR, None, sim.now)
    assert c.state == ConnState.CLOSED and c.error == errno.EPROTONOSUPPORT


def test_version_negotiation_switches_version() -> None:
    sim = NetSim(seed=11)
    sim.connect()
    c = sim.client
    c.datagrams_to_send(sim.now)
    # a VN that lists our version, or for another connection, is ignored
    c.receive_datagram(build_version_negotiation(c.scid, c.dcid, [VERSION_1]),
                       SERVER_ADDR, None, sim.now)
    c.receive_datagram(build_version_negotiation(b"x" * 8, c.dcid, [VERSION_2]),
                       SERVER_ADDR, None, sim.now)
    assert c.version == VERSION_1 and not c.is_closed
    c.receive_datagram(build_version_negotiation(c.scid, c.dcid, [VERSION_2]),
                       SERVER_ADDR, None, sim.now)
    assert c.version == VERSION_2
    out = c.datagrams_to_send(sim.now)
    h = parse_header(out[0][0], 0)
    assert h.version == VERSION_2 and h.packet_type == PacketType.INITIAL


# --------------------------------------------------------------- greasing
def _grease_sim(seed: int, client_grease: bool, server_grease: bool) -> tuple[NetSim, list]:
    sim = NetSim(seed=seed)
    if client_grease:
        sim.client.set_transport_param(abi.TransportParam(grease_quic_bit=1))
    lst = _listener()
    if server_grease:
        lst.set_transport_param(abi.TransportParam(grease_quic_bit=1))
    sim.listener = lst
    seen: list[tuple[bool, bytes]] = []
    orig = sim._transmit

    def tap(to_server: bool, data: bytes, *addrs: object) -> None:
        seen.append((to_server, data))
        orig(to_server, data, *addrs)

    sim._transmit = tap  # type: ignore[method-assign,assignment]
    return sim, seen


def test_grease_quic_bit_both_ways() -> None:
    sim, seen = _grease_sim(12, True, True)
    assert sim.handshake()
    assert _transfer(sim, 100_000) == random.Random(4).randbytes(100_000)
    short = [(t, d) for t, d in seen if not d[0] & 0x80]
    assert any(t and not d[0] & 0x40 for t, d in short)  # client greased
    assert any(not t and not d[0] & 0x40 for t, d in short)  # server greased


def test_no_grease_unless_peer_advertised() -> None:
    sim, seen = _grease_sim(13, True, False)  # only the client accepts greasing
    assert sim.handshake()
    assert _transfer(sim, 50_000) == random.Random(4).randbytes(50_000)
    assert all(d[0] & 0x40 for t, d in seen if t)  # the client never greases
    assert any(not d[0] & 0x40 for t, d in seen if not t and not d[0] & 0x80)


# --------------------------------------------------------- stateless reset
def test_stateless_reset_after_server_state_loss() -> None:
    lst = _listener()
    lst.set_transport_param(abi.TransportParam(stateless_reset=1))
    sim = NetSim(seed=14)
    sim.listener = lst
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)
    sim.server = None  # the server lost the connection (e.g. restarted)
    sim.client.send_stream(-1, b"hello", 0x200 | 0x400, False)  # new stream, FIN
    sim.run(lambda s: s.client.state == ConnState.CLOSED, max_time=10)
    assert "stateless reset" in sim.stateless
    assert sim.client.state == ConnState.CLOSED and sim.client.error == errno.ECONNRESET


# -------------------------------------------------------------- keep-alive
def test_keepalive_keeps_idle_connection_open() -> None:
    sim = NetSim(seed=15)
    tp = abi.TransportParam(max_idle_timeout=5_000_000)
    sim.client.set_transport_param(tp)
    sim.client.set_config(abi.Config(keepalive_probe_interval=2_000_000))
    assert sim.handshake()
    start = sim.now
    sim.run(lambda s: s.now > start + 30 or s.client.is_closed, max_time=40)
    assert not sim.client.is_closed and sim.server is not None and not sim.server.is_closed
    # without keep-alive the same setup times out
    sim2 = NetSim(seed=15)
    sim2.client.set_transport_param(tp)
    assert sim2.handshake()
    sim2.run(lambda s: s.client.is_closed, max_time=30)
    assert sim2.client.is_closed and sim2.client.error == errno.ETIMEDOUT


# ----------------------------------------------------------------- DPLPMTUD
def _pmtu_sim(seed: int, mtu: int, loss: float = 0.0) -> NetSim:
    sim = NetSim(seed=seed, loss=loss)
    sim.mtu = mtu
    sim.client.set_config(abi.Config(plpmtud_probe_interval=5_000_000))
    sim.listener = _listener()
    sim.listener.set_config(abi.Config(plpmtud_probe_interval=5_000_000))
    return sim


def test_pmtud_finds_path_limit() -> None:
    sim = _pmtu_sim(16, 9000)
    assert sim.handshake()
    sim.run(lambda s: s.client.paths.mtu >= 8968 and s.server is not None
            and s.server.paths.mtu >= 8968, max_time=120)
    c, s = sim.client, sim.server
    assert s is not None
    assert 9000 - 32 <= c.paths.mtu <= 9000 and 9000 - 32 <= s.paths.mtu <= 9000
    assert sim.too_big > 0  # larger probes were tried and lost
    # bulk data now uses the larger datagrams and arrives intact
    payload = random.Random(4).randbytes(300_000)
    assert _transfer(sim, 300_000) == payload
    assert c.cc.max_datagram_size == c.paths.mtu


def test_pmtud_loopback_exceeds_1500() -> None:
    sim = _pmtu_sim(17, 65527, loss=0.01)
    assert sim.handshake()
    sim.run(lambda s: s.client.paths.mtu > 60000, max_time=300)
    assert sim.client.paths.mtu > 1500 * 10
    assert _transfer(sim, 200_000) == random.Random(4).randbytes(200_000)


def test_pmtud_off_by_default() -> None:
    sim = NetSim(seed=18)
    sim.mtu = 9000
    assert sim.handshake()
    assert _transfer(sim, 100_000) == random.Random(4).randbytes(100_000)
    assert sim.client.paths.mtu == 1452 and sim.too_big == 0


# ------------------------------------------------------ persistent congestion
def test_persistent_congestion_collapses_window() -> None:
    sim = NetSim(seed=19)
    assert sim.handshake()
    assert _transfer(sim, 200_000)
    c = sim.client
    assert c.cc.congestion_window > c.cc.minimum_window()
    # black-hole the path for several PTOs while data is outstanding, then
    # restore it: the first ACK declares a long run of losses (RFC 9002 §7.6)
    sim.loss = 1.0
    c.send_stream(-1, b"x" * 20000, 0x200 | 0x400, False)
    start = sim.now
    sim.run(lambda s: s.now > start + 3.0, max_time=5)
    sim.loss = 0.0
    low = [c.cc.congestion_window]

    def watch(s: NetSim) -> None:
        low[0] = min(low[0], c.cc.congestion_window)

    sim.on_step = watch
    sim.run(lambda s: low[0] <= c.cc.minimum_window(), max_time=20)
    assert low[0] == c.cc.minimum_window()


# ---------------------------------------------------------------- migration
NEW_LOCAL = ("127.0.0.1", 40001)
PREF = ("127.0.0.1", 4434)


def _addr_sim(seed: int) -> NetSim:
    sim = NetSim(seed=seed)
    sim.use_from = True
    sim.client.set_event(abi.EventType.CONNECTION_MIGRATION, True)
    return sim


def _migration_events(conn: QuicConnection) -> list[abi.ConnectionMigrationEvent]:
    out = []
    for e in _events(conn):
        ev = decode_event(e)
        if isinstance(ev, abi.ConnectionMigrationEvent):
            out.append(ev)
    return out


def test_client_migration_probes_before_switching() -> None:
    sim = _addr_sim(20)
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed and len(s.client.dest) > 1,
                   max_time=5)
    c, s = sim.client, sim.server
    assert s is not None
    old_dcid, old_server_dcid = c.dcid, s.dcid
    c.migrate(NEW_LOCAL, sim.now)
    assert c.local_addr != NEW_LOCAL  # not before the path is validated
    probe_sources: list[object] = []
    orig = sim._transmit

    def tap(to_server: bool, data: bytes, *addrs: object) -> None:
        if to_server and addrs:
            probe_sources.append(addrs[0])
        orig(to_server, data, *addrs)

    sim._transmit = tap  # type: ignore[method-assign,assignment]
    assert sim.run(lambda s: s.client.local_addr == NEW_LOCAL, max_time=5)
    assert NEW_LOCAL in probe_sources
    evs = _migration_events(c)
    assert evs and evs[0].local
    assert c.dcid != old_dcid  # RFC 9000 §9.5: a fresh CID on the new path
    payload = random.Random(4).randbytes(50_000)
    assert _transfer(sim) == payload
    assert s.remote_addr == NEW_LOCAL and s.paths.validated
    assert s.dcid != old_server_dcid  # the server moved to a new CID as well


def test_migration_needs_spare_connection_id() -> None:
    sim = _addr_sim(21)
    sim.client.set_transport_param(abi.TransportParam(active_connection_id_limit=2))
    assert sim.handshake()
    c = sim.client
    # drop every CID but the active one
    for cid in list(c.dest):
        if cid.seq != c.dest.active_seq:
            c.dest.retire(cid.seq)
    with pytest.raises(OSError) as ei:
        c.migrate(NEW_LOCAL, sim.now)
    assert ei.value.errno == errno.EAGAIN


def test_nat_rebinding_keeps_congestion_state() -> None:
    sim = _addr_sim(22)
    assert sim.handshake()
    assert _transfer(sim, 200_000)
    s = sim.server
    assert s is not None
    cwnd = s.cc.congestion_window
    rebound = ("127.0.0.1", 50000)
    sim.nat[("127.0.0.1", 40000)] = rebound
    payload = random.Random(4).randbytes(50_000)
    assert _transfer(sim, 50_000) == payload
    assert sim.run(lambda x: s.paths.validated, max_time=2)
    assert s.remote_addr == rebound
    assert s.cc.congestion_window >= min(cwnd, 2 * s.cc.minimum_window())


def test_late_packet_from_old_path_does_not_move_server_back() -> None:
    """RFC 9000 §9.3: only the highest-numbered non-probing packet changes
    the peer address; an older one from the previous path arriving late
    (reordered across the two paths) leaves the server on the new path."""
    sim = _addr_sim(25)
    assert sim.handshake()
    assert sim.run(lambda x: x.client.handshake_confirmed, max_time=5)
    c, s = sim.client, sim.server
    assert s is not None
    old, rebound = ("127.0.0.1", 40000), ("127.0.0.1", 50000)
    c.send_stream(-1, b"first", 0x200 | 0x400, False)
    first = [d for d, _r, _l in c.datagrams_to_send_from(sim.now)]
    c.send_stream(-1, b"second", 0x200 | 0x400, False)
    second = [d for d, _r, _l in c.datagrams_to_send_from(sim.now)]
    assert first and second
    for d in second:
        s.receive_datagram(d, rebound, SERVER_ADDR, sim.now)
    assert s.remote_addr == rebound
    for d in first:  # sent before, delivered after
        s.receive_datagram(d, old, SERVER_ADDR, sim.now)
    assert s.remote_addr == rebound


def test_unvalidated_new_path_is_amplification_limited() -> None:
    sim = _addr_sim(23)
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)
    spoofed = ("127.0.0.9", 666)
    sim.nat[("127.0.0.1", 40000)] = spoofed  # replies to it never arrive
    counts = {"to": 0, "from": 0, "back": 0}
    orig = sim._transmit

    def tap(to_server: bool, data: bytes, *addrs: object) -> None:
        if addrs and to_server and addrs[0] == spoofed:
            counts["from"] += len(data)
        if addrs and not to_server and addrs[1] == spoofed:
            counts["to"] += len(data)
            return  # black hole
        if addrs and not to_server and counts["to"] and addrs[1] == ("127.0.0.1", 40000):
            counts["back"] += 1  # the server went back to the validated path
        orig(to_server, data, *addrs)

    sim._transmit = tap  # type: ignore[method-assign,assignment]
    sim.client.send_stream(-1, random.Random(1).randbytes(200_000), 0x200 | 0x400, False)
    start = sim.now
    sim.run(lambda s: s.now > start + 3, max_time=5)
    assert counts["from"] > 0 and counts["to"] > 0
    assert counts["to"] <= 3 * counts["from"]  # RFC 9000 §8.1 / §9.3
    # the new address never answers PATH_CHALLENGE: the server falls back to
    # the last validated path (RFC 9000 §9.3.2)
    assert counts["back"] > 0


def test_client_moves_to_server_preferred_address() -> None:
    sim = _addr_sim(24)
    sim.server_addrs.add(PREF)

    def setup(srv: QuicConnection) -> None:
        orig = srv.get_transport_param_ext

        def with_pref() -> bytes:  # as a server sets it before its handshake
            if not srv.paths.pref_addr:
                srv.migrate(PREF)
            return orig()

        srv.get_transport_param_ext = with_pref  # type: ignore[method-assign]

    sim.server_setup = setup
    assert sim.handshake()
    c, s = sim.client, sim.server
    assert s is not None and c.peer_transport_params is not None
    pa = c.peer_transport_params.preferred_address
    assert pa is not None and pa.ipv4_port == PREF[1]
    assert sim.run(lambda x: x.client.remote_addr == PREF, max_time=5)
    assert c.dcid == pa.connection_id
    payload = random.Random(4).randbytes(50_000)
    assert _transfer(sim) == payload
    assert s.local_addr == PREF


PREF6 = ("::1", 4435, 0, 0)


def test_preferred_address_slow_server_many_seeds() -> None:
    """The server's PATH_RESPONSE from its preferred address may come late
    (a busy user-space server): the client must still move (kernel: a probe
    timeout of max(2 PTO, 1.5 s); a response to any of our challenges counts)."""
    failures = []
    for seed in range(12):
        sim = _pref_sim(400 + seed, PREF, PREF, None, None)
        sim.delay = 0.0005
        extra = random.Random(seed)
        orig = sim._transmit

        def slow(to_server: bool, data: bytes, src: object = None, dst: object = None,
                 _orig=orig, _sim=sim, _extra=extra) -> None:
            if not to_server and src == PREF:
                saved = _sim.delay
                _sim.delay = saved + _extra.uniform(0.02, 0.6)  # the server stalls
                _orig(to_server, data, src, dst)
                _sim.delay = saved
                return
            _orig(to_server, data, src, dst)

        sim._transmit = slow  # type: ignore[method-assign,assignment]
        assert sim.handshake()
        if not sim.run(lambda x: x.client.remote_addr == PREF, max_time=5):
            failures.append(seed)
    assert not failures




def test_preferred_address_client_ignores_server_original_address() -> None:
    """RFC 9000 §9.6.3: the server sends from its original address until a
    non-probing packet of the client reaches its preferred one.  The client
    that moved must not take those packets for a server migration (it moved
    back, the server followed, and both ends kept chasing each other's paths:
    the flaky conformance test_alpn_routing_with_preferred_address)."""
    sim = _pref_sim(60, PREF, PREF, None, None)
    assert sim.handshake()
    c = sim.client
    assert sim.run(lambda x: x.client.remote_addr == PREF, max_time=5)
    s = sim.server
    assert s is not None and s.local_addr == SERVER_ADDR  # not yet moved
    sid = s.stream_open(-1, 0)
    s.send_stream(sid, b"from the original address", abi.MSG_QUIC_STREAM_FIN, True)
    sent = [(d, r, lo) for d, r, lo in s.datagrams_to_send_from(sim.now)]
    assert sent and all(lo == SERVER_ADDR for _d, _r, lo in sent)
    for d, _r, lo in sent:
        c.receive_datagram(d, lo, c.local_addr, sim.now)
    assert c.remote_addr == PREF and c.paths.challenge is None
    rcv = StreamReceiver()
    moved: list[object] = []

    def step(x: NetSim) -> None:
        rcv.step(x.client)
        moved.append(x.client.remote_addr)

    sim.on_step = step
    sim.run(lambda x: sid in rcv.fin and x.server is not None
            and x.server.local_addr == PREF, max_time=2)
    assert rcv.stream(sid) == b"from the original address"
    assert set(moved) == {PREF} and s.local_addr == PREF
    evs = [decode_event(e) for e in rcv.events]
    assert [e.local for e in evs if isinstance(e, abi.ConnectionMigrationEvent)] == [False]
    # the server's packets from its preferred address end the exception
    assert _transfer(sim, 20_000) == random.Random(4).randbytes(20_000)
    assert c._left_remote is None and c.remote_addr == PREF



def _pref_sim(seed: int, served: tuple, v4: tuple | None, v6: tuple | None,
              family: int | None) -> NetSim:
    """The server listens on ``served`` as its preferred address and
    advertises ``v4`` / ``v6`` in preferred_address (either may be a decoy)."""
    import ipaddress

    from pyquic.engine.transport_param import PreferredAddress

    sim = _addr_sim(seed)
    sim.server_addrs.add(served)
    sim.client.family = family

    def setup(srv: QuicConnection) -> None:
        orig = srv.get_transport_param_ext
        orig_pa = srv._preferred_address_param

        def with_pref() -> bytes:
            if not srv.paths.pref_addr:
                srv.migrate(served)
            return orig()

        def both() -> PreferredAddress | None:
            pa = orig_pa()
            assert pa is not None
            pa.ipv4_address = ipaddress.IPv4Address(v4[0]).packed if v4 else bytes(4)
            pa.ipv4_port = v4[1] if v4 else 0
            pa.ipv6_address = ipaddress.IPv6Address(v6[0]).packed if v6 else bytes(16)
            pa.ipv6_port = v6[1] if v6 else 0
            return pa

        srv.get_transport_param_ext = with_pref  # type: ignore[method-assign]
        srv._preferred_address_param = both  # type: ignore[method-assign]

    sim.server_setup = setup
    return sim


@pytest.mark.parametrize("family,served,v4,v6", [
    (socket.AF_INET6, PREF6, ("127.0.0.9", 4436), PREF6),  # IPv6 first
    (socket.AF_INET6, PREF, PREF, None),  # no IPv6: falls back to IPv4
    (socket.AF_INET, PREF, PREF, PREF6),  # AF_INET takes IPv4
])
def test_preferred_address_by_socket_family(family: int, served: tuple, v4: tuple,
                                            v6: tuple | None) -> None:
    """The kernel picks the preferred address by the socket's family
    (family.c quic_v{4,6}_get_pref_addr), not by the current path's."""
    sim = _pref_sim(50, served, v4, v6, family)
    assert sim.handshake()
    assert sim.run(lambda x: x.client.remote_addr == served, max_time=5)
    assert _transfer(sim, 20_000) == random.Random(4).randbytes(20_000)
    assert sim.server is not None and sim.server.local_addr == served


def test_preferred_address_family_unset_keeps_remote_family() -> None:
    sim = _pref_sim(51, PREF6, None, PREF6, None)
    assert sim.handshake()
    sim.run(lambda x: x.client.remote_addr == PREF6, max_time=3)
    assert sim.client.remote_addr == SERVER_ADDR  # IPv4 path: no IPv6 move


# ------------------------------------------------- disable_1rtt_encryption
def _plain_sim(seed: int, client: bool, server: bool) -> tuple[NetSim, list]:
    sim, seen = _grease_sim(seed, False, False)
    if client:
        sim.client.set_transport_param(abi.TransportParam(disable_1rtt_encryption=1))
    if server:
        assert sim.listener is not None
        sim.listener.set_transport_param(abi.TransportParam(disable_1rtt_encryption=1))
    return sim, seen


def test_disable_1rtt_encryption_negotiated() -> None:
    sim, seen = _plain_sim(25, True, True)
    assert sim.handshake()
    payload = random.Random(4).randbytes(60_000)
    assert _transfer(sim, 60_000) == payload
    assert sim.client.plaintext_1rtt and sim.server is not None and sim.server.plaintext_1rtt
    # the stream bytes travel in the clear in short-header packets
    assert any(payload[1000:1032] in d for t, d in seen if t and not d[0] & 0x80)


def test_disable_1rtt_encryption_needs_both() -> None:
    sim, seen = _plain_sim(26, True, False)
    assert sim.handshake()
    payload = random.Random(4).randbytes(60_000)
    assert _transfer(sim, 60_000) == payload
    assert not sim.client.plaintext_1rtt
    assert not any(payload[1000:1032] in d for _t, d in seen)


# -------------------------------------------------------------- rejected 0-RTT
def _early_client(sim: NetSim) -> int:
    c = sim.client
    c.connect(SERVER_ADDR, ("127.0.0.1", 40000), sim.now)
    c.set_transport_param(abi.TransportParam(remote=1, max_streams_bidi=10, max_data=100000,
                                             max_stream_data_bidi_remote=50000))
    c.set_crypto_secret(abi.CryptoSecret(send=1, level=abi.CryptoLevel.EARLY, type=51,
                                         secret=b"e" * 32))
    sim.client_hs.start()
    sid = c.stream_open(-1, 0)
    assert c.send_stream(sid, b"early data" * 100, 0x200, True) == 1000
    return sid


@pytest.mark.parametrize("signal", [False, True])
def test_rejected_zero_rtt_is_resent_in_1rtt(signal: bool) -> None:
    sim = NetSim(seed=27)  # the server installs no EARLY key: 0-RTT is dropped
    sid = _early_client(sim)
    rcv = StreamReceiver()
    resent: list[int] = []

    def step(s: NetSim) -> None:
        rcv.step(s.server)
        if signal and not resent and s.client.state == ConnState.ESTABLISHED:
            resent.append(s.client.early_data_rejected())

    sim.on_step = step
    assert sim.run(lambda s: sid in rcv.fin, max_time=30)
    assert rcv.stream(sid) == b"early data" * 100
    if signal:
        assert resent and resent[0] >= 1


# ------------------------------------------------------ with the real TLS 1.3
@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_real_tls_retry_and_transfer(version: int) -> None:
    sim = NetSim(seed=28, real_tls=True)
    sim.client.set_config(abi.Config(version=version))
    sim.listener = _listener(validate=True)
    assert sim.handshake()
    assert sim.stateless == ["retry"]
    assert sim.client.version == version
    assert _transfer(sim, 100_000) == random.Random(4).randbytes(100_000)


def test_real_tls_migration_and_key_update() -> None:
    sim = NetSim(seed=29, real_tls=True, loss=0.02)
    sim.use_from = True
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed and len(s.client.dest) > 1,
                   max_time=5)
    sim.client.key_update()
    sim.client.migrate(NEW_LOCAL, sim.now)
    assert _transfer(sim, 200_000) == random.Random(4).randbytes(200_000)
    assert sim.run(lambda s: s.client.local_addr == NEW_LOCAL, max_time=10)
    assert sim.server is not None and sim.server.key_phase == sim.client.key_phase == 1


@pytest.mark.parametrize("eager", [False, True])
def test_real_tls_compatible_upgrade_to_v2(eager: bool) -> None:
    """pyquic.tls.driver installs the client's parameters before it reads the
    server's, so a server preferring v2 upgrades (RFC 9368 §2.3).  With
    ``eager`` the server ACKs the ClientHello in v1 before its TLS runs; the
    client must still follow the later v2 Initials (kernel packet.c follows
    a compatible Initial at any time while establishing)."""
    sim = NetSim(seed=30, real_tls=True)
    sim.flush_on_receive = eager
    sim.listener = _listener(version=VERSION_2)
    assert sim.handshake(max_time=10)
    assert sim.server is not None
    assert sim.client.original_version == VERSION_1
    assert sim.client.version == sim.server.version == VERSION_2
    assert _transfer(sim, 20_000) == random.Random(4).randbytes(20_000)


def test_real_tls_compatible_upgrade_lossy() -> None:
    for seed in range(8):
        sim = NetSim(seed=300 + seed, real_tls=True, loss=0.1)
        sim.flush_on_receive = bool(seed & 1)
        sim.listener = _listener(version=VERSION_2)
        assert sim.handshake(max_time=30), seed
        assert sim.server is not None
        assert sim.client.version == sim.server.version == VERSION_2, seed


def test_version_negotiation_restarts_client_hello() -> None:
    """After a VN the old ClientHello (version_information naming the old
    version) is dropped; the driver's new one, built on transport parameters
    fetched again, completes the handshake in the new version (RFC 9368 §4)."""
    from pyquic.abi import CryptoLevel

    from .netsim import TlsHandshake

    sim = NetSim(seed=5, real_tls=True)
    c = sim.client
    c.hold_initial_after_vn = True
    sim.connect()
    assert c.datagrams_to_send(sim.now)  # the first Initial: lost
    with pytest.raises(OSError):
        c.restart_initial(b"x")  # no VN yet
    c.receive_datagram(build_version_negotiation(c.scid, c.dcid, [VERSION_2]),
                       SERVER_ADDR, None, sim.now)
    assert c.version == VERSION_2 and c.version_negotiated and c.initial_restart_pending
    assert c.datagrams_to_send(sim.now) == []  # the stale ClientHello is not resent
    hs = TlsHandshake(c, sim.now)
    hs.started = True
    hs._ensure()
    assert hs.ctx is not None
    hs.ctx.start()
    out = hs.ctx.data_to_send()
    assert [lvl for lvl, _ in out] == [CryptoLevel.INITIAL]
    c.restart_initial(out[0][1])
    assert not c.initial_restart_pending
    sim.client_hs = hs
    assert sim.run(lambda s: s.server is not None and s.client.state == ConnState.ESTABLISHED
                   and s.server.state == ConnState.ESTABLISHED, max_time=10)
    assert sim.server is not None and sim.server.version == VERSION_2
    assert _transfer(sim, 5000) == bytes(random.Random(4).randbytes(5000))
