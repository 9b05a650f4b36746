"""RTT estimation, congestion control and pacing (RFC 9002, RFC 9438), sans-I/O.

All times are float seconds; ``now`` is always passed in.

Public API (stable):

- ``K_GRANULARITY = 0.001``, ``K_INITIAL_RTT = 0.333`` (RFC 9002 §6.2.2 and
  the kernel's QUIC_RTT_INIT), ``K_PERSISTENT_CONGESTION_THRESHOLD = 3``,
  ``K_PACKET_THRESHOLD = 3``, ``K_TIME_THRESHOLD = 9/8``.
- ``RttEstimator(initial_rtt=0.333, max_ack_delay=0.025)``: attributes
  ``latest_rtt``, ``smoothed_rtt``, ``rttvar``, ``min_rtt``, ``has_sample``,
  ``first_sample_time``, ``max_ack_delay`` (the peer's, settable);
  ``update(latest_rtt, ack_delay, handshake_confirmed, now) -> None`` (§5.3);
  ``pto(include_max_ack_delay=True) -> float`` (§6.2.1 duration, no backoff);
  ``loss_delay() -> float`` (§6.1.2); ``persistent_congestion_duration() ->
  float`` (§7.6.1).
- ``in_persistent_congestion(packets, duration, first_sample_time) -> bool``:
  ``packets`` are the ack-eliciting packets of all spaces as ``(time_sent,
  lost)`` in send order; true if a run of consecutive lost ones sent after
  the first RTT sample spans more than ``duration`` (§7.6.2).
- ``CongestionControl`` (base, also the NewReno algorithm; ``NewReno`` is an
  alias subclass) with ``max_datagram_size``, ``congestion_window``,
  ``ssthresh`` (float, inf initially), ``bytes_in_flight``,
  ``recovery_start_time`` (None if never), ``app_limited`` (set by the
  caller; no growth while true, §7.8) and methods:
  ``on_packet_sent(size, now)``; ``on_packet_acked(size, time_sent, now,
  rtt)``; ``on_packets_acked(packets, now, rtt)`` (the same for each
  in-flight packet of one ACK, in one call); ``on_packets_lost(lost_bytes,
  largest_lost_time_sent, now)``;
  ``on_ecn_ce(time_sent, now)``; ``on_persistent_congestion(now)``;
  ``on_packet_discarded(size)`` (key discard: remove from flight only);
  ``in_recovery(time_sent) -> bool``; ``can_send(size) -> bool``;
  ``available() -> int``; ``set_max_datagram_size(mss)``; property
  ``in_slow_start``.
- ``NewReno(CongestionControl)`` (RFC 9002 §7), ``Cubic(CongestionControl)``
  (RFC 9438: cubic window, Reno-friendly region, fast convergence).
- ``Pacer(max_datagram_size)`` (RFC 9002 §7.7, token bucket at 1.25 ×
  cwnd/srtt): ``update(congestion_window, smoothed_rtt)``,
  ``next_send_time(now) -> float | None`` (None: may send now),
  ``on_packet_sent(size, now)``.
- ``new_congestion_control(algo: int, max_datagram_size=1200) ->
  CongestionControl`` (``algo`` is ``pyquic.abi.CongAlgo``: RENO=0, CUBIC=1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pyquic.abi import CongAlgo

__all__ = [
    "CONG_CUBIC",
    "CONG_RENO",
    "K_GRANULARITY",
    "K_INITIAL_RTT",
    "K_PACKET_THRESHOLD",
    "K_PERSISTENT_CONGESTION_THRESHOLD",
    "K_TIME_THRESHOLD",
    "CongestionControl",
    "Cubic",
    "NewReno",
    "Pacer",
    "RttEstimator",
    "in_persistent_congestion",
    "new_congestion_control",
]

K_GRANULARITY = 0.001
K_INITIAL_RTT = 0.333
K_PERSISTENT_CONGESTION_THRESHOLD = 3
K_PACKET_THRESHOLD = 3
K_TIME_THRESHOLD = 9 / 8
K_LOSS_REDUCTION_FACTOR = 0.5

CONG_RENO = int(CongAlgo.RENO)
CONG_CUBIC = int(CongAlgo.CUBIC)


class RttEstimator:
    """RTT samples and smoothing (RFC 9002 §5)."""

    def __init__(self, initial_rtt: float = K_INITIAL_RTT, max_ack_delay: float = 0.025) -> None:
        self.initial_rtt = initial_rtt
        self.max_ack_delay = max_ack_delay
        # RFC 9002 §5.3: before the first sample.
        self.latest_rtt = 0.0
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2
        self.min_rtt = 0.0
        self.has_sample = False
        self.first_sample_time: float | None = None

    def update(
        self, latest_rtt: float, ack_delay: float, handshake_confirmed: bool, now: float
    ) -> None:
        """Take an RTT sample (RFC 9002 §5.1-§5.3)."""
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.first_sample_time = now
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        # §5.3: the ack delay is capped once the handshake is confirmed and
        # never makes the sample smaller than min_rtt.
        if handshake_confirmed:
            ack_delay = min(ack_delay, self.max_ack_delay)
        adjusted = latest_rtt
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted

    def pto(self, include_max_ack_delay: bool = True) -> float:
        """Probe timeout duration without backoff (RFC 9002 §6.2.1)."""
        d = self.smoothed_rtt + max(4 * self.rttvar, K_GRANULARITY)
        if include_max_ack_delay:
            d += self.max_ack_delay
        return d

    def loss_delay(self) -> float:
        """Time threshold for loss detection (RFC 9002 §6.1.2)."""
        return max(K_TIME_THRESHOLD * max(self.latest_rtt, self.smoothed_rtt), K_GRANULARITY)

    def persistent_congestion_duration(self) -> float:
        """RFC 9002 §7.6.1."""
        return self.pto(True) * K_PERSISTENT_CONGESTION_THRESHOLD


def in_persistent_congestion(
    packets: Iterable[tuple[float, bool]], duration: float, first_sample_time: float | None
) -> bool:
    """Detect persistent congestion (RFC 9002 §7.6.2)."""
    if first_sample_time is None:
        return False
    run_start: float | None = None
    for time_sent, lost in packets:
        if time_sent <= first_sample_time:
            # §7.6.2: only packets sent after the first RTT sample count.
            continue
        if not lost:
            run_start = None
            continue
        if run_start is None:
            run_start = time_sent
        elif time_sent - run_start > duration:
            return True
    return False


class CongestionControl:
    """Window-based congestion control; the base implements NewReno (RFC 9002 §7)."""

    def __init__(self, max_datagram_size: int = 1200) -> None:
        self.max_datagram_size = max_datagram_size
        self.congestion_window = self._initial_window()
        self.ssthresh: float = math.inf
        self.bytes_in_flight = 0
        self.recovery_start_time: float | None = None
        self.app_limited = False
        self._acked_in_ca = 0

    # §7.2 Initial and Minimum Congestion Window
    def _initial_window(self) -> int:
        mss = self.max_datagram_size
        return min(10 * mss, max(14720, 2 * mss))

    def minimum_window(self) -> int:
        return 2 * self.max_datagram_size

    def set_max_datagram_size(self, mss: int) -> None:
        self.max_datagram_size = mss
        self.congestion_window = max(self.congestion_window, self.minimum_window())

    @property
    def in_slow_start(self) -> bool:
        return self.congestion_window < self.ssthresh

    def in_recovery(self, time_sent: float) -> bool:
        """True if a packet sent at ``time_sent`` belongs to the recovery period."""
        return self.recovery_start_time is not None and time_sent <= self.recovery_start_time

    def can_send(self, size: int) -> bool:
        return self.bytes_in_flight + size <= self.congestion_window

    def available(self) -> int:
        return max(0, self.congestion_window - self.bytes_in_flight)

    def on_packet_sent(self, size: int, now: float) -> None:
        self.bytes_in_flight += size

    def on_packet_discarded(self, size: int) -> None:
        self.bytes_in_flight = max(0, self.bytes_in_flight - size)

    def on_packet_acked(
        self, size: int, time_sent: float, now: float, rtt: RttEstimator | None = None
    ) -> None:
        """An in-flight packet was acknowledged (RFC 9002 §7.3)."""
        self.bytes_in_flight = max(0, self.bytes_in_flight - size)
        # §7.3.2: no growth for packets sent during recovery; §7.8 app-limited.
        if self.in_recovery(time_sent) or self.app_limited:
            return
        if self.congestion_window < self.ssthresh:
            self.congestion_window += size  # §7.3.1 slow start
            return
        self._on_ack_congestion_avoidance(size, now, rtt)

    def on_packets_acked(self, packets: Iterable[Any], now: float,
                         rtt: RttEstimator | None = None) -> None:
        """``on_packet_acked`` for each in-flight packet of one ACK frame, in
        order (``packets`` have ``in_flight``, ``size`` and ``sent_time``)."""
        bif = self.bytes_in_flight
        rs = self.recovery_start_time
        limited = self.app_limited
        for p in packets:
            if not p.in_flight:
                continue
            size = p.size
            bif = bif - size if bif > size else 0
            # §7.3.2: no growth for packets sent during recovery; §7.8 app-limited
            if limited or (rs is not None and p.sent_time <= rs):
                continue
            if self.congestion_window < self.ssthresh:
                self.congestion_window += size  # §7.3.1 slow start
                continue
            self.bytes_in_flight = bif
            self._on_ack_congestion_avoidance(size, now, rtt)
        self.bytes_in_flight = bif

    def _on_ack_congestion_avoidance(
        self, size: int, now: float, rtt: RttEstimator | None
    ) -> None:
        # §7.3.3: one datagram per congestion window acknowledged.
        self._acked_in_ca += size
        if self._acked_in_ca >= self.congestion_window:
            self._acked_in_ca -= self.congestion_window
            self.congestion_window += self.max_datagram_size

    def on_packets_lost(self, lost_bytes: int, largest_lost_time_sent: float, now: float) -> None:
        """Packets were declared lost (RFC 9002 §7.3.2)."""
        self.bytes_in_flight = max(0, self.bytes_in_flight - lost_bytes)
        self._congestion_event(largest_lost_time_sent, now)

    def on_ecn_ce(self, time_sent: float, now: float) -> None:
        """The peer reported a new ECN-CE mark (RFC 9002 §7.1)."""
        self._congestion_event(time_sent, now)

    def _congestion_event(self, time_sent: float, now: float) -> None:
        if self.in_recovery(time_sent):
            return  # §7.3.2: at most one reduction per round trip
        self.recovery_start_time = now
        self._reduce(now)

    def _reduce(self, now: float) -> None:
        self.ssthresh = max(
            round(self.congestion_window * K_LOSS_REDUCTION_FACTOR), self.minimum_window()
        )
        self.congestion_window = int(self.ssthresh)
        self._acked_in_ca = 0

    def on_persistent_congestion(self, now: float) -> None:
        """Collapse to the minimum window (RFC 9002 §7.6.2)."""
        self.congestion_window = self.minimum_window()
        self.recovery_start_time = None
        self._acked_in_ca = 0


class NewReno(CongestionControl):
    """NewReno (RFC 9002 §7), the base behaviour."""


class Cubic(CongestionControl):
    """CUBIC (RFC 9438) with the standard slow start."""

    C = 0.4  # RFC 9438 §5.1
    BETA = 0.7
    ALPHA = 3 * (1 - BETA) / (1 + BETA)  # §4.3

    def __init__(self, max_datagram_size: int = 1200) -> None:
        super().__init__(max_datagram_size)
        self.w_max = 0.0  # segments
        self.k = 0.0
        self.w_est = 0.0  # segments
        self.epoch_start: float | None = None

    def _w_cubic(self, t: float) -> float:
        # §4.2, in segments
        return self.C * (t - self.k) ** 3 + self.w_max

    def _start_epoch(self, now: float) -> None:
        cwnd = self.congestion_window / self.max_datagram_size
        self.epoch_start = now
        self.w_max = max(self.w_max, cwnd)
        self.k = ((self.w_max - cwnd) / self.C) ** (1 / 3)
        self.w_est = cwnd

    def _on_ack_congestion_avoidance(
        self, size: int, now: float, rtt: RttEstimator | None
    ) -> None:
        mss = self.max_datagram_size
        if self.epoch_start is None:
            self._start_epoch(now)
        assert self.epoch_start is not None
        cwnd = self.congestion_window / mss
        t = now - self.epoch_start
        srtt = rtt.smoothed_rtt if rtt is not None else K_INITIAL_RTT
        # §4.2 target, bounded to [cwnd, 1.5 cwnd]
        target = min(max(self._w_cubic(t + srtt), cwnd), 1.5 * cwnd)
        acked = size / mss
        # §4.3 Reno-friendly estimate
        alpha = 1.0 if self.w_est >= self.w_max else self.ALPHA
        self.w_est += alpha * acked / cwnd
        if self._w_cubic(t) < self.w_est:
            new = self.w_est
        else:
            new = cwnd + (target - cwnd) * acked / cwnd
        self.congestion_window = max(int(new * mss), self.congestion_window)

    def _reduce(self, now: float) -> None:
        mss = self.max_datagram_size
        cwnd = self.congestion_window / mss
        # §4.7 fast convergence
        if cwnd < self.w_max:
            self.w_max = cwnd * (1 + self.BETA) / 2
        else:
            self.w_max = cwnd
        self.ssthresh = max(round(self.congestion_window * self.BETA), self.minimum_window())
        self.congestion_window = int(self.ssthresh)
        new_cwnd = self.congestion_window / mss
        self.k = (max(self.w_max - new_cwnd, 0.0) / self.C) ** (1 / 3)
        self.w_est = new_cwnd
        self.epoch_start = now
        self._acked_in_ca = 0

    def on_persistent_congestion(self, now: float) -> None:
        super().on_persistent_congestion(now)
        self.epoch_start = None
        self.w_max = 0.0


class Pacer:
    """Token-bucket pacer (RFC 9002 §7.7)."""

    N = 1.25

    def __init__(self, max_datagram_size: int = 1200) -> None:
        self.max_datagram_size = max_datagram_size
        self.rate = 0.0  # bytes per second; 0 = not paced yet
        self.capacity = 2 * max_datagram_size
        self.tokens = float(self.capacity)
        self.last: float | None = None

    def update(self, congestion_window: int, smoothed_rtt: float) -> None:
        """Recompute the rate from the window and smoothed RTT."""
        mss = self.max_datagram_size
        self.rate = self.N * congestion_window / max(smoothed_rtt, K_GRANULARITY)
        self.capacity = max(2 * mss, min(congestion_window // 4, 16 * mss))
        self.tokens = min(self.tokens, float(self.capacity))

    def _refill(self, now: float) -> None:
        if self.last is not None and now > self.last:
            self.tokens = min(float(self.capacity), self.tokens + (now - self.last) * self.rate)
        self.last = now if self.last is None else max(self.last, now)

    def next_send_time(self, now: float) -> float | None:
        """None if a full-size datagram may be sent now, else when it may."""
        if self.rate <= 0:
            return None
        self._refill(now)
        if self.tokens >= self.max_datagram_size:
            return None
        return now + (self.max_datagram_size - self.tokens) / self.rate

    def on_packet_sent(self, size: int, now: float) -> None:
        if self.rate <= 0:
            return
        self._refill(now)
        self.tokens = max(self.tokens - size, -float(self.capacity))


def new_congestion_control(algo: int, max_datagram_size: int = 1200) -> CongestionControl:
    """Create the controller for ``algo`` (``pyquic.abi.CongAlgo``)."""
    if algo == CONG_RENO:
        return NewReno(max_datagram_size)
    if algo == CONG_CUBIC:
        return Cubic(max_datagram_size)
    raise ValueError(f"unknown congestion control algorithm {algo}")
