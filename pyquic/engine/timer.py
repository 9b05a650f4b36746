"""Connection timers as deadlines (twin of the kernel's ``net/quic/timer.c``).

The engine never sleeps: each timer is an absolute deadline in seconds, the
connection reports the earliest through ``next_timer()`` and the socket layer
calls ``handle_timer(now)`` when it passes.  :class:`Timers` only stores
deadlines; the connection decides what each one does:

``LOSS``  loss detection / PTO (RFC 9002 §6.2), ``ACK`` delayed ACK
(RFC 9000 §13.2.1), ``IDLE`` idle timeout (RFC 9000 §10.1), ``PATH`` path
validation / keep-alive, ``PACE`` pacing release, ``PMTU`` PLPMTUD probing,
``CLOSE`` end of the closing/draining period (RFC 9000 §10.2).
"""

from __future__ import annotations

from enum import IntEnum


class TimerKind(IntEnum):
    LOSS = 0
    ACK = 1
    PATH = 2
    PMTU = 3
    PACE = 4
    IDLE = 5
    KEEPALIVE = 6
    CLOSE = 7


_N = len(TimerKind)


class Timers:
    """A fixed set of optional deadlines with an O(kinds) earliest lookup."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: list[float | None] = [None] * _N

    def set(self, kind: TimerKind, when: float | None) -> None:
        """Arm (or with ``None`` stop) ``kind`` at absolute time ``when``."""
        self._at[kind] = when

    def start_if_idle(self, kind: TimerKind, when: float) -> None:
        """Arm ``kind`` unless it is already armed (kernel quic_timer_start)."""
        if self._at[kind] is None:
            self._at[kind] = when

    def stop(self, kind: TimerKind) -> None:
        self._at[kind] = None

    def get(self, kind: TimerKind) -> float | None:
        return self._at[kind]

    def stop_all(self) -> None:
        self._at = [None] * _N

    def next(self) -> float | None:
        """The earliest armed deadline, or None."""
        best: float | None = None
        for t in self._at:
            if t is not None and (best is None or t < best):
                best = t
        return best

    def expired(self, now: float) -> list[TimerKind]:
        """Kinds whose deadline is at or before ``now`` (in kind order); they
        stay armed until the caller stops or re-arms them."""
        return [TimerKind(i) for i, t in enumerate(self._at) if t is not None and t <= now]
