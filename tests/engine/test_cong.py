"""Tests for pyquic.engine.cong (RFC 9002 §5-§7, RFC 9438)."""

from __future__ import annotations

import itertools

import pytest

from pyquic.abi import CongAlgo
from pyquic.engine.cong import (
    K_GRANULARITY,
    CongestionControl,
    Cubic,
    NewReno,
    Pacer,
    RttEstimator,
    in_persistent_congestion,
    new_congestion_control,
)

MSS = 1200


def test_rtt_initial_state() -> None:
    r = RttEstimator()
    assert r.smoothed_rtt == pytest.approx(0.333)  # kernel QUIC_RTT_INIT
    assert r.rttvar == pytest.approx(0.1665)
    assert not r.has_sample
    r2 = RttEstimator(initial_rtt=0.1)
    assert r2.pto(False) == pytest.approx(0.1 + 4 * 0.05)


def test_rtt_samples() -> None:
    # RFC 9002 §5.3
    r = RttEstimator(max_ack_delay=0.025)
    r.update(0.100, ack_delay=0.050, handshake_confirmed=False, now=1.0)
    assert (r.min_rtt, r.smoothed_rtt, r.rttvar) == (0.100, 0.100, 0.050)
    assert r.first_sample_time == 1.0
    # ack_delay 0.050 capped to max_ack_delay 0.025 once confirmed
    r.update(0.200, ack_delay=0.050, handshake_confirmed=True, now=2.0)
    adjusted = 0.175
    assert r.latest_rtt == 0.200 and r.min_rtt == 0.100
    assert r.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * abs(0.100 - adjusted))
    assert r.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * adjusted)
    # ack delay not subtracted if that would go below min_rtt
    s = RttEstimator()
    s.update(0.100, 0, False, 0.0)
    s.update(0.110, 0.020, False, 1.0)
    assert s.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)
    assert s.pto() == pytest.approx(s.smoothed_rtt + max(4 * s.rttvar, K_GRANULARITY) + 0.025)
    assert s.loss_delay() == pytest.approx(9 / 8 * max(s.latest_rtt, s.smoothed_rtt))
    assert s.persistent_congestion_duration() == pytest.approx(3 * s.pto())


def test_persistent_congestion_detection() -> None:
    d = 1.0
    # run of losses spanning more than d after the first sample
    assert in_persistent_congestion([(1.0, True), (1.5, True), (2.1, True)], d, 0.5)
    # an acked packet in between breaks the run
    assert not in_persistent_congestion([(1.0, True), (1.5, False), (2.1, True)], d, 0.5)
    # packets before the first RTT sample do not count
    assert not in_persistent_congestion([(0.1, True), (0.9, True), (1.2, True)], d, 0.5)
    assert not in_persistent_congestion([(1.0, True), (3.0, True)], d, None)
    assert not in_persistent_congestion([(1.0, True), (1.9, True)], d, 0.5)


def test_initial_window() -> None:
    # RFC 9002 §7.2
    assert NewReno(1200).congestion_window == 12000
    assert NewReno(1500).congestion_window == 14720
    assert NewReno(9000).congestion_window == 18000
    assert NewReno(1200).minimum_window() == 2400


def test_newreno_slow_start_loss_recovery() -> None:
    cc = NewReno(MSS)
    for _ in range(10):
        cc.on_packet_sent(MSS, 0.0)
    assert cc.bytes_in_flight == 12000 and not cc.can_send(MSS)
    assert cc.available() == 0
    cc.on_packet_acked(MSS, 0.0, 0.1)
    assert cc.congestion_window == 13200 and cc.bytes_in_flight == 10800
    assert cc.in_slow_start
    # loss: halve, enter recovery
    cc.on_packets_lost(MSS, largest_lost_time_sent=0.0, now=0.2)
    assert cc.congestion_window == 6600 and cc.ssthresh == 6600
    assert cc.recovery_start_time == 0.2 and cc.in_recovery(0.0)
    # acks of packets sent before recovery do not grow the window
    cc.on_packet_acked(MSS, 0.0, 0.25)
    assert cc.congestion_window == 6600
    # a second loss of a pre-recovery packet does not reduce again
    cc.on_packets_lost(MSS, 0.1, 0.3)
    assert cc.congestion_window == 6600
    # congestion avoidance: +1 MSS per window of acked bytes
    grown = 0
    for _ in range(11):
        cc.on_packet_sent(MSS, 0.4)
        cc.on_packet_acked(MSS, 0.4, 0.5)
        grown = cc.congestion_window - 6600
        if grown:
            break
    assert grown == MSS
    # a loss after recovery reduces again
    cc.on_packets_lost(MSS, 0.45, 0.6)
    assert cc.congestion_window == 3900
    # never below the minimum window
    for i in range(5):
        cc.on_packets_lost(0, 1.0 + i, 1.0 + i + 0.01)
    assert cc.congestion_window == 2400
    cc.on_persistent_congestion(10.0)
    assert cc.congestion_window == 2400 and cc.recovery_start_time is None


def test_app_limited_and_discard() -> None:
    cc = NewReno(MSS)
    cc.app_limited = True
    cc.on_packet_sent(MSS, 0)
    cc.on_packet_acked(MSS, 0, 0.1)
    assert cc.congestion_window == 12000
    cc.on_packet_sent(MSS, 0)
    cc.on_packet_discarded(MSS)
    assert cc.bytes_in_flight == 0


def test_ecn_ce_is_congestion_event() -> None:
    cc = NewReno(MSS)
    cc.on_ecn_ce(time_sent=0.5, now=1.0)
    assert cc.congestion_window == 6000 and cc.recovery_start_time == 1.0


def test_cubic_reduction_and_growth() -> None:
    cc = Cubic(MSS)
    cc.congestion_window = 100 * MSS
    cc.ssthresh = 100 * MSS  # in congestion avoidance
    cc.on_packets_lost(MSS, 0.0, 1.0)
    # RFC 9438 §4.6: beta_cubic = 0.7
    assert cc.congestion_window == 70 * MSS
    assert cc.w_max == pytest.approx(100)
    assert cc.k == pytest.approx(((100 - 70) / 0.4) ** (1 / 3))
    rtt = RttEstimator()
    rtt.update(0.05, 0, True, 0.0)
    # ack a full window per RTT for a while: window grows back toward w_max
    now = 1.0
    history = []
    for _ in range(200):
        now += 0.05
        w = cc.congestion_window
        for _ in range(w // MSS):
            cc.on_packet_acked(MSS, now - 0.01, now, rtt)
        history.append(cc.congestion_window)
        if now - 1.0 > cc.k + 1:
            break
    assert history[0] > 70 * MSS
    assert all(b >= a for a, b in itertools.pairwise(history))
    # around K the window is close to w_max, and then exceeds it (convex region)
    assert cc.congestion_window > 100 * MSS
    # growth is bounded to 1.5x per RTT
    assert all(b <= 1.5 * a + MSS for a, b in itertools.pairwise(history))


def test_cubic_fast_convergence() -> None:
    cc = Cubic(MSS)
    cc.congestion_window = 100 * MSS
    cc.ssthresh = 100 * MSS
    cc.on_packets_lost(MSS, 0.0, 1.0)
    # second loss below the previous w_max: w_max = cwnd * (1 + beta) / 2
    cc.on_packets_lost(MSS, 2.0, 3.0)
    assert cc.w_max == pytest.approx(70 * (1 + 0.7) / 2)
    assert cc.congestion_window == 49 * MSS
    cc.on_persistent_congestion(4.0)
    assert cc.congestion_window == 2 * MSS and cc.epoch_start is None


def test_cubic_slow_start_like_reno() -> None:
    cc = Cubic(MSS)
    cc.on_packet_sent(MSS, 0)
    cc.on_packet_acked(MSS, 0, 0.1)
    assert cc.congestion_window == 13200


def test_factory() -> None:
    assert type(new_congestion_control(CongAlgo.RENO, 1200)) is NewReno
    c = new_congestion_control(CongAlgo.CUBIC, 1350)
    assert isinstance(c, Cubic) and isinstance(c, CongestionControl)
    assert c.max_datagram_size == 1350
    with pytest.raises(ValueError):
        new_congestion_control(7, 1200)


def test_pacer() -> None:
    p = Pacer(MSS)
    assert p.next_send_time(0.0) is None  # no rate yet: unpaced
    p.update(congestion_window=12000, smoothed_rtt=0.1)
    assert p.rate == pytest.approx(1.25 * 12000 / 0.1)
    now = 0.0
    sent = 0
    # burst up to the bucket, then paced
    for _ in range(20):
        if p.next_send_time(now) is not None:
            break
        p.on_packet_sent(MSS, now)
        sent += 1
    assert 1 <= sent <= 3
    t = p.next_send_time(now)
    assert t is not None and t > now
    assert t - now <= MSS / p.rate + 1e-9
    # at that time a packet may go
    assert p.next_send_time(t) is None
    # over one second the pacer lets through about rate bytes
    now = 1.0
    total = 0
    for _ in range(10000):
        nxt = p.next_send_time(now)
        if nxt is not None:
            now = nxt
        if now > 2.0:
            break
        p.on_packet_sent(MSS, now)
        total += MSS
    assert total == pytest.approx(p.rate, rel=0.05)


@pytest.mark.parametrize("algo", [CongAlgo.RENO, CongAlgo.CUBIC])
def test_on_packets_acked_equals_one_call_per_packet(algo: CongAlgo) -> None:
    """The batched ACK path grows the window exactly as per-packet calls:
    slow start into congestion avoidance, no growth for packets sent in
    recovery (RFC 9002 §7.3.2), none while app-limited (§7.8)."""
    import random
    from types import SimpleNamespace

    rng = random.Random(5)
    one = new_congestion_control(algo, 1200)
    many = new_congestion_control(algo, 1200)
    rtt = RttEstimator()
    rtt.update(0.01, 0.0, True, 0.0)
    t = 1.0
    for step in range(60):
        pkts = [SimpleNamespace(size=rng.choice((1200, 1200, 600, 40)), sent_time=t - 0.01 * i,
                                in_flight=rng.random() < 0.9) for i in range(rng.randint(1, 40))]
        for cc in (one, many):
            for p in pkts:
                if p.in_flight:
                    cc.on_packet_sent(p.size, p.sent_time)
            if step == 20:
                cc.on_packets_lost(1200, t - 0.1, t)  # recovery starts
            cc.app_limited = step in (30, 31)
        for p in pkts:
            if p.in_flight:
                one.on_packet_acked(p.size, p.sent_time, t, rtt)
        many.on_packets_acked(pkts, t, rtt)
        assert vars(one) == vars(many), step
        t += 0.01
    assert one.congestion_window > one.ssthresh  # reached congestion avoidance
