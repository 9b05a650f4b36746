"""Tests for pyquic.engine.outqueue: send buffers, packing, coalescing, padding."""

from __future__ import annotations

from pyquic import abi
from pyquic.abi import CryptoLevel
from pyquic.engine.connection import QuicConnection
from pyquic.engine.outqueue import REC_CRYPTO, SendBuffer
from pyquic.engine.packet import PacketType, parse_header

from .netsim import CLIENT_ADDR, SERVER_ADDR


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
