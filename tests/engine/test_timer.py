"""Tests for pyquic.engine.timer."""

from __future__ import annotations

from pyquic.engine.timer import TimerKind, Timers


def test_next_is_earliest() -> None:
    t = Timers()
    assert t.next() is None
    t.set(TimerKind.IDLE, 30.0)
    t.set(TimerKind.ACK, 1.5)
    assert t.next() == 1.5
    t.stop(TimerKind.ACK)
    assert t.next() == 30.0


def test_start_if_idle_keeps_existing() -> None:
    t = Timers()
    t.start_if_idle(TimerKind.PACE, 2.0)
    t.start_if_idle(TimerKind.PACE, 1.0)
    assert t.get(TimerKind.PACE) == 2.0


def test_expired_lists_due_kinds() -> None:
    t = Timers()
    t.set(TimerKind.LOSS, 1.0)
    t.set(TimerKind.IDLE, 5.0)
    assert t.expired(0.5) == []
    assert t.expired(1.0) == [TimerKind.LOSS]
    t.stop_all()
    assert t.next() is None
