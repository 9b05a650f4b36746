"""Tests for pyquic.engine.outqueue: send buffers, packing, coalescing, padding."""

from __future__ import annotations

import pytest

from pyquic import abi
from pyquic.abi import CryptoLevel
from pyquic.engine import frame as fr
from pyquic.engine.connection import QuicConnection
from pyquic.engine.outqueue import APP, REC_CRYPTO, OutQueue, SendBuffer
from pyquic.engine.packet import PacketType, parse_header

from .netsim import CLIENT_ADDR, SERVER_ADDR
from .test_fastpath import _read_all
from .test_settle import _frames, _pair, _payload, _send, _to_client, _to_server


def test_sendbuffer_pop_in_order_with_fin() -> None:
    b = SendBuffer()
    b.write(b"abcdef", fin=True)
    assert b.pop(4) == (0, b"abcd", False)
    assert b.pop(4) == (4, b"ef", True)
    assert b.pop(4) is None and not b.has_pending()


def test_sendbuffer_lost_ranges_go_first_and_ack_frees() -> None:
    b = SendBuffer()
    b.write(b"0123456789")
    b.pop(4)
    b.pop(4)
    b.on_lost(0, 4, False)
    assert b.pop(10) == (0, b"0123", False)
    assert b.pop(10) == (8, b"89", False)
    b.on_acked(4, 4, False)
    assert b.unacked == 10  # a hole at the front keeps everything
    b.on_acked(0, 4, False)
    assert b.base == 8 and b.unacked == 2
    b.on_acked(8, 2, False)
    assert b.all_acked()


def test_sendbuffer_lost_after_ack_is_ignored() -> None:
    b = SendBuffer()
    b.write(b"xyz", fin=True)
    b.pop(10)
    b.on_acked(0, 3, True)
    b.on_lost(0, 3, True)
    assert not b.has_pending() and b.all_acked()


def _client_with_hello(size: int) -> QuicConnection:
    c = QuicConnection(True)
    c.connect(SERVER_ADDR, CLIENT_ADDR, 0.0)
    c.send_handshake(CryptoLevel.INITIAL, b"h" * size)
    return c


def test_initial_padded_to_1200() -> None:
    c = _client_with_hello(50)
    (d, _addr), = c.datagrams_to_send(0.0)
    assert len(d) >= 1200
    h = parse_header(d, 0, 8)
    assert h.packet_type == PacketType.INITIAL and h.packet_end == len(d)


def test_large_crypto_split_across_packets_within_mtu() -> None:
    c = _client_with_hello(5000)
    out = c.datagrams_to_send(0.0)
    assert len(out) >= 4
    assert all(1200 <= len(d) <= c.paths.max_datagram_size() for d, _ in out)
    sent = c.spaces[0].sent
    covered = sorted((r[2], r[3]) for p in sent.values() for r in p.frames if r[0] == REC_CRYPTO)
    total = 0
    for off, n in covered:
        assert off == total
        total += n
    assert total == 5000


def test_coalesced_initial_and_handshake() -> None:
    c = _client_with_hello(100)
    c.datagrams_to_send(0.0)
    c.set_crypto_secret(abi.CryptoSecret(send=1, level=2, type=51, secret=b"s" * 32))
    c.send_handshake(CryptoLevel.HANDSHAKE, b"fin")
    c.spaces[0].on_packet_received(0, 0.1, True)  # an Initial ACK is owed
    (d, _), = c.datagrams_to_send(0.1)
    first = parse_header(d, 0, 8)
    assert first.packet_type == PacketType.INITIAL
    second = parse_header(d, first.packet_end, 8)
    assert second.packet_type == PacketType.HANDSHAKE
    assert len(d) >= 1200


def test_server_amplification_limit() -> None:
    """RFC 9000 §8.1: at most 3x the bytes received before validation."""
    c = _client_with_hello(100)
    (hello, _), = c.datagrams_to_send(0.0)
    s = QuicConnection(False)
    s.accept(hello, CLIENT_ADDR, SERVER_ADDR, 0.01)
    s.send_handshake(CryptoLevel.INITIAL, b"s" * 100)
    s.set_crypto_secret(abi.CryptoSecret(send=1, level=2, type=51, secret=b"s" * 32))
    s.send_handshake(CryptoLevel.HANDSHAKE, b"c" * 20000)
    out = s.datagrams_to_send(0.01)
    sent = sum(len(d) for d, _ in out)
    assert 0 < sent <= 3 * len(hello)
    assert s.datagrams_to_send(0.02) == []  # blocked until the client speaks


def test_replayed_packets_do_not_raise_the_amplification_budget() -> None:
    """RFC 9000 §8.1: a packet held until its keys arrive counts once, on arrival."""
    c = _client_with_hello(100)
    (hello, _), = c.datagrams_to_send(0.0)
    s = QuicConnection(False)
    s.accept(hello, CLIENT_ADDR, SERVER_ADDR, 0.01)
    hs_secret = b"h" * 32
    c.set_crypto_secret(abi.CryptoSecret(send=1, level=2, type=51, secret=hs_secret))
    c.send_handshake(CryptoLevel.HANDSHAKE, b"f" * 50)
    early = [d for d, _ in c.datagrams_to_send(0.02)]
    assert early
    for d in early:  # no Handshake keys yet: the server holds these packets
        s.receive_datagram(d, CLIENT_ADDR, SERVER_ADDR, 0.02)
    received = s.paths.ampl_received
    assert received == len(hello) + sum(len(d) for d in early)
    s.set_crypto_secret(abi.CryptoSecret(send=0, level=2, type=51, secret=hs_secret))
    assert s.paths.ampl_received == received


def test_general_packer_sealing_matches_reference_protect(monkeypatch) -> None:
    """The general packer's inline sealing (cached long-header prefix, one
    AEAD call and one header-protection mask per packet) gives the very bytes
    ``encode_long_header``/``encode_short_header`` + ``protect`` give, for every
    packet of handshakes, transfers, retransmissions and closes; and each
    packet's tracked payload length is its real length."""
    from pyquic.engine import outqueue
    from pyquic.engine.packet import encode_long_header, encode_short_header, protect

    from .netsim import NetSim, StreamSender

    checked = {PacketType.INITIAL: 0, PacketType.HANDSHAKE: 0, PacketType.ONE_RTT: 0}
    orig = outqueue.OutQueue._seal

    def seal(self, conn, now, pkts):  # type: ignore[no-untyped-def]
        expected = []
        for p in pkts:
            plain = b"".join(p.payload)
            assert p.plen == len(plain)
            if p.ptype == PacketType.ONE_RTT:
                hdr = encode_short_header(p.dcid, p.pn, p.pn_len, key_phase=conn.key_phase)
            else:
                tok = conn.initial_token if p.space == 0 else b""
                hdr = encode_long_header(p.ptype, conn.version, p.dcid, conn.scid, p.pn,
                                         p.pn_len, len(plain), tok, p.key.tag_len)
            expected.append(protect(p.key, hdr, plain, p.pn))
            checked[p.ptype] += 1
        out = orig(self, conn, now, pkts)
        assert out == b"".join(expected)
        return out

    monkeypatch.setattr(outqueue.OutQueue, "_seal", seal)
    for seed, loss in ((1, 0.0), (2, 0.1)):
        sim = NetSim(seed=seed, loss=loss)
        assert sim.handshake()
        snd = StreamSender(sim.client, [b"d" * 20000])
        sim.on_step = lambda s, snd=snd: snd.step()
        sim.run(lambda s, snd=snd: snd.done, max_time=30)
        sim.client.close(sim.now, 5)
        sim.run(lambda s: False, max_time=1)
    assert all(checked.values()), checked


# ------------------------------------------------- OutQueue._build_small
# (the request/response datagram: the pending ACK + all of the only pending
# stream's new bytes in one 1-RTT packet)

def _norm(frames: list) -> list[tuple]:
    """Frames without PADDING, as comparable tuples (the STREAM frame's
    Length field and offset width may differ between packers)."""
    out: list[tuple] = []
    for f in frames:
        if isinstance(f, fr.PaddingFrame):
            continue
        if isinstance(f, fr.StreamFrame):
            out.append(("stream", f.stream_id, f.offset, bytes(f.data), f.fin))
        elif isinstance(f, fr.AckFrame):
            out.append(("ack", list(f.ranges), f.ack_delay, f.ecn))
        else:
            out.append((type(f).__name__,))
    return out


def _small_reply(monkeypatch, fast: bool, gap: bool, fin: bool, sid: int):
    """Server's reply to one request (three with the first lost when ``gap``),
    packed by _build_small (``fast``) or by the general packer; returns
    (the datagram, the decoded payload, its frames, what the client then reads,
    how many datagrams _build_small built)."""
    sim, cli, srv = _pair()
    t0 = sim.now
    reqs = [_send(cli, b"req%d" % i, t0) for i in range(3 if gap else 1)]
    for r in reqs[1:] if gap else reqs:
        _to_server(srv, r, t0 + 0.004)
    assert srv.spaces[APP].ack_pending
    built: list[bytes] = []
    if fast:
        orig = OutQueue._build_small

        def spy(self, *a):
            d = orig(self, *a)
            if d is not None:
                built.append(d)
            return d

        monkeypatch.setattr(OutQueue, "_build_small", spy)
    else:
        monkeypatch.setattr(OutQueue, "_fast_ok", lambda self, conn: False)
    flags = (0x200 if fin else 0) | (0x400 if sid != 0 else 0)
    data = bytes(range(200))
    assert srv.send_stream(sid, data, flags, True) == len(data)
    out = [d for d, _a in srv.datagrams_to_send(t0 + 0.006)]
    monkeypatch.undo()
    assert len(out) == 1
    payload = _payload(cli, out[0])
    frames = fr.parse_frames(payload, int(PacketType.ONE_RTT))
    # the peer engine takes it: the reply reaches the application
    _to_client(cli, out, t0 + 0.01)
    got = []
    for _ in range(10):
        item = cli.recv(65536)
        if item is None:
            break
        got.append((item.stream_id, item.data, bool(item.stream_flags & 0x200)))
    assert _read_all(cli) == b""
    return out[0], payload, frames, got, len(built)


@pytest.mark.parametrize("sid", [0, 1])  # 0: continues at offset 2; 1: new, offset 0
@pytest.mark.parametrize("fin", [False, True])
@pytest.mark.parametrize("gap", [False, True])  # single-range / multi-range ACK
def test_build_small_matches_the_general_packer(monkeypatch, gap: bool, fin: bool,
                                                sid: int) -> None:
    _d, payload, fast, got_fast, n_small = _small_reply(monkeypatch, True, gap, fin, sid)
    _d2, _p, slow, got_slow, _n = _small_reply(monkeypatch, False, gap, fin, sid)
    assert n_small == 1  # built by _build_small
    assert _norm(fast) == _norm(slow)
    kinds = [t[0] for t in _norm(fast)]
    assert kinds == ["ack", "stream"]  # RFC 9000 §13.2.1: the ACK piggybacked
    ack, stream = _norm(fast)
    assert len(ack[1]) == (2 if gap else 1)
    assert stream[1] == sid and stream[2] == (2 if sid == 0 else 0)
    assert stream[3] == bytes(range(200)) and stream[4] == fin
    # the ACK's bytes are what AckFrame.encode makes (the inline encoder's)
    enc = fr.AckFrame(fast[0].ranges, fast[0].ack_delay).encode()
    assert payload[:len(enc)] == enc
    # the STREAM frame is the last one, without Length (RFC 9000 §19.8)
    st = next(f for f in fast if isinstance(f, fr.StreamFrame))
    assert not st.has_length
    assert got_fast == got_slow
    assert b"".join(g[1] for g in got_fast) == bytes(range(200))
    assert any(g[2] for g in got_fast) == fin


def _state(conn: QuicConnection, sid: int) -> tuple:
    send = conn.streams.streams[sid].send
    pns = conn.spaces[2]
    return (send._sent_end, send._fin_pending, send.write_offset,
            dict(conn.streams._pending_send).keys() == {sid}, pns.next_pn,
            sorted(pns.sent), pns.ack_pending, pns.bytes_in_flight, conn.cc.bytes_in_flight,
            conn._last_activity)


@pytest.mark.parametrize("n, built", [(1024, True), (1025, False)])
def test_build_small_size_limit(n: int, built: bool) -> None:
    """At most 1024 new bytes; more is left (nothing changed) to the burst packer."""
    sim, cli, srv = _pair()
    now = sim.now + 0.001
    data = bytes(i & 0xFF for i in range(n))
    assert srv.send_stream(0, data, 0, True) == n
    before = _state(srv, 0)
    d = srv.outq._build_small(srv, now, srv.paths.max_datagram_size())
    if built:
        assert d is not None
        (st,) = [f for f in _frames(cli, d) if isinstance(f, fr.StreamFrame)]
        assert (st.offset, bytes(st.data)) == (2, data)
        assert srv.spaces[2].next_pn == before[4] + 1
        assert not srv.streams._pending_send
        return
    assert d is None
    assert _state(srv, 0) == before
    out = [x for x, _a in srv.datagrams_to_send(now)]  # the general/burst packer
    got = b"".join(bytes(f.data) for x in out for f in _frames(cli, x)
                   if isinstance(f, fr.StreamFrame))
    assert got == data


def test_build_small_leaves_lost_ranges_to_the_general_packer() -> None:
    """Lost data goes out again first (RFC 9000 §13.3): not a new-bytes-only
    packet, so _build_small declines and changes nothing."""
    sim, cli, srv = _pair()
    now = sim.now + 0.001
    assert len(_send(srv, b"x" * 100, now)) == 1  # offset 2..102, then lost
    srv.streams.on_stream_lost(0, 2, 100, False)
    assert srv.send_stream(0, b"y" * 50, 0, True) == 50
    assert list(srv.streams._pending_send) == [0]
    before = _state(srv, 0)
    assert srv.outq._build_small(srv, now, srv.paths.max_datagram_size()) is None
    assert _state(srv, 0) == before
    out = [x for x, _a in srv.datagrams_to_send(now)]
    got = sorted((f.offset, bytes(f.data)) for x in out for f in _frames(cli, x)
                 if isinstance(f, fr.StreamFrame))
    assert b"".join(g[1] for g in got) == b"x" * 100 + b"y" * 50
    assert got[0][0] == 2


def test_build_small_respects_the_congestion_window() -> None:
    """RFC 9002 §7: no new packet once the window is full; nothing changes."""
    sim, _cli, srv = _pair()
    mds = srv.paths.max_datagram_size()
    cc = srv.cc
    t = sim.now
    for _ in range(200):  # 1000-byte messages, unacknowledged, until the window is full
        if cc.bytes_in_flight + mds > cc.congestion_window:
            break
        t += 0.01  # (the pacer refills)
        assert srv.send_stream(0, b"w" * 1000, 0, True) == 1000
        assert len(srv.datagrams_to_send(t)) == 1
    assert cc.bytes_in_flight + mds > cc.congestion_window
    assert not srv.streams._pending_send
    t += 1.0
    assert srv.send_stream(0, b"v" * 100, 0, True) == 100
    assert srv.pacer.next_send_time(t) is None  # the pacer would allow it
    before = _state(srv, 0)
    assert srv.outq._build_small(srv, t, mds) is None
    assert _state(srv, 0) == before
