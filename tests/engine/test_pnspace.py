"""Tests for pyquic.engine.pnspace: PN tracking, ACK policy, loss detection."""

from __future__ import annotations

from pyquic.engine.pnspace import K_PACKET_THRESHOLD, MAX_ACK_RANGES, PnSpace, SentPacket


def _sent(pn: int, t: float, size: int = 1000, eliciting: bool = True) -> SentPacket:
    return SentPacket(pn, t, size, eliciting, True, [f"f{pn}"])


def test_in_order_ranges_and_duplicates() -> None:
    s = PnSpace()
    for pn in range(5):
        assert not s.is_duplicate(pn)
        s.on_packet_received(pn, 1.0, True)
    assert s.ack_ranges() == [(0, 4)]
    assert s.is_duplicate(3)
    assert not s.is_duplicate(5)


def test_gaps_are_merged_and_reported_highest_first() -> None:
    s = PnSpace()
    for pn in (0, 1, 5, 6, 3, 9):
        s.on_packet_received(pn, 0.0, True)
    assert s.ack_ranges() == [(9, 9), (5, 6), (3, 3), (0, 1)]
    s.on_packet_received(2, 0.0, True)
    s.on_packet_received(4, 0.0, True)
    assert s.ack_ranges() == [(9, 9), (0, 6)]
    assert s.is_duplicate(4) and not s.is_duplicate(7)


def test_range_count_bounded_and_floor_rejects_old() -> None:
    s = PnSpace()
    for i in range(MAX_ACK_RANGES + 10):
        s.on_packet_received(i * 2, 0.0, False)
    assert len(s.ack_ranges()) == MAX_ACK_RANGES
    assert s.is_duplicate(1)  # below the floor: too old to track


def test_ack_threshold_and_delay() -> None:
    s = PnSpace(max_ack_delay=0.025)
    s.on_packet_received(0, 10.0, True)
    assert not s.ack_due(10.0)
    assert s.ack_deadline == 10.025
    assert s.ack_due(10.03)
    s.on_packet_received(1, 10.001, True)
    assert s.ack_due(10.001)  # every second ack-eliciting packet
    s.on_ack_sent()
    assert not s.ack_due(11.0)
    s.on_packet_received(2, 12.0, False)
    assert not s.ack_due(20.0)  # non-eliciting alone never forces an ACK
    assert s.ack_pending


def test_reordering_and_immediate_spaces_ack_at_once() -> None:
    s = PnSpace()
    s.on_packet_received(0, 0.0, True)
    s.on_ack_sent()
    s.on_packet_received(2, 0.0, True)
    assert s.ack_due(0.0)
    init = PnSpace(immediate=True)
    init.on_packet_received(0, 0.0, True)
    assert init.ack_due(0.0)


def test_ack_delay_measured_from_largest() -> None:
    s = PnSpace()
    s.on_packet_received(0, 1.0, True)
    assert abs(s.ack_delay(1.5) - 0.5) < 1e-9


def test_ack_of_ack_prunes_old_ranges() -> None:
    s = PnSpace()
    for pn in (0, 1, 3, 5, 7):
        s.on_packet_received(pn, 0.0, True)
    s.on_ack_of_ack(5)
    assert s.ack_ranges() == [(7, 7), (5, 5)]
    assert s.is_duplicate(3)


def test_ack_processing_returns_newly_acked() -> None:
    s = PnSpace()
    for pn in range(10):
        s.on_packet_sent(_sent(pn, float(pn)))
        s.next_pn = pn + 1
    assert s.bytes_in_flight == 10000
    acked = s.on_ack_received([(7, 9), (2, 4)])
    assert [p.pn for p in acked] == [2, 3, 4, 7, 8, 9]
    assert s.largest_acked == 9
    assert s.bytes_in_flight == 4000
    assert s.on_ack_received([(7, 9), (2, 4)]) == []  # nothing new


def test_loss_by_packet_threshold_and_time() -> None:
    s = PnSpace()
    for pn in range(6):
        s.on_packet_sent(_sent(pn, 100.0 + pn * 0.001))
    s.on_ack_received([(5, 5)])
    lost = s.detect_lost(100.006, latest_rtt=0.1, smoothed_rtt=0.1)
    # 5 - 3 = 2: PNs 0..2 lost by packet threshold; 3, 4 wait on time.
    assert [p.pn for p in lost] == [0, 1, 2]
    assert 5 - K_PACKET_THRESHOLD == 2
    assert s.loss_time is not None
    assert abs(s.loss_time - (100.003 + 0.1125)) < 1e-9
    lost = s.detect_lost(s.loss_time + 0.0011, 0.1, 0.1)
    assert [p.pn for p in lost] == [3, 4]
    assert s.loss_time is None and s.bytes_in_flight == 0


def test_discard_returns_in_flight() -> None:
    s = PnSpace()
    s.on_packet_sent(_sent(0, 0.0))
    s.on_packet_received(0, 0.0, True)
    assert [p.pn for p in s.discard()] == [0]
    assert s.bytes_in_flight == 0 and not s.ack_due(1.0)
