"""Tests for pyquic.engine.path: anti-amplification and path validation."""

from __future__ import annotations

from pyquic.engine.path import MIN_PMTU, AltState, PathGroup


def _rand(n: int) -> bytes:
    return bytes(range(n))


def test_amplification_limit_three_times() -> None:
    g = PathGroup(_rand)
    assert g.send_allowance() == 0
    g.on_received(1200)
    assert g.send_allowance() == 3600  # RFC 9000 §8.1
    g.on_sent(3000)
    assert g.send_allowance() == 600
    g.on_sent(1000)
    assert g.send_allowance() == 0
    g.validate()
    assert g.send_allowance() is None


def test_challenge_response() -> None:
    g = PathGroup(_rand)
    data = g.start_challenge(1, now=1.0, timeout=3.0)
    assert len(data) == 8 and g.alt_state == AltState.PROBING
    assert g.on_response(b"x" * 8) == -1
    assert g.on_response(data) == 1
    assert g.challenge is None


def test_lookup_and_swap() -> None:
    g = PathGroup(_rand)
    g.set_addresses(0, ("127.0.0.1", 1), ("127.0.0.1", 2))
    g.set_addresses(1, ("127.0.0.1", 3), ("127.0.0.1", 2))
    assert g.lookup(("127.0.0.1", 1), ("127.0.0.1", 2)) == 0
    assert g.lookup(("127.0.0.1", 3), ("127.0.0.1", 2)) == 1
    assert g.lookup(("127.0.0.1", 1), ("127.0.0.1", 9)) == -1
    g.swap()
    assert g.local == ("127.0.0.1", 3)


def test_mtu_floor_and_peer_cap() -> None:
    g = PathGroup(_rand)
    g.mtu = 1500
    g.peer_max_udp_payload = 1300
    assert g.max_datagram_size() == 1300
    g.peer_max_udp_payload = 1000
    assert g.max_datagram_size() == MIN_PMTU
