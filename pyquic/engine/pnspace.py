"""Packet number spaces: received-PN tracking, ACK generation and sent-packet records.

Twin of the kernel's ``net/quic/pnspace.c`` plus the sent-packet bookkeeping of
``outqueue.c``.  One :class:`PnSpace` exists per space (Initial, Handshake,
Application; RFC 9000 §12.3).  It is pure bookkeeping: no frames are encoded
here, and time is always passed in (seconds, float).

Receive side
    :meth:`PnSpace.is_duplicate`, :meth:`PnSpace.on_packet_received` (records a
    PN and decides when an ACK is due: at once for Initial/Handshake, for
    out-of-order arrivals, or after ``ack_eliciting_threshold`` ack-eliciting
    packets; otherwise after ``max_ack_delay``, RFC 9000 §13.2.1-13.2.2),
    :meth:`PnSpace.ack_ranges` (inclusive ``(first, last)`` pairs, highest
    first, as ``frame.AckFrame`` takes them), :meth:`PnSpace.on_ack_sent`,
    :meth:`PnSpace.on_ack_of_ack` (forget ranges the peer knows we acked,
    RFC 9000 §13.2.4).

Send side
    :class:`SentPacket` records, :meth:`PnSpace.on_packet_sent`,
    :meth:`PnSpace.on_ack_received` (newly acked packets, RFC 9002 §A.7) and
    :meth:`PnSpace.detect_lost` (packet and time thresholds, RFC 9002 §6.1).
"""

from __future__ import annotations

from typing import Any

# RFC 9002 §6.1.1 / §6.1.2
K_PACKET_THRESHOLD = 3
K_TIME_THRESHOLD = 9 / 8
K_GRANULARITY = 0.001
# Upper bound on ranges kept for ACK frames (the kernel keeps 32 gap blocks).
MAX_ACK_RANGES = 32


class SentPacket:
    """What was sent in one packet, kept until it is acked or declared lost.

    ``frames`` is opaque to this module: the outqueue stores what it needs to
    retransmit the packet's information (RFC 9000 §13.3) or act on its ack.
    """

    __slots__ = (
        "ack_eliciting",
        "frames",
        "in_flight",
        "is_pmtu_probe",
        "largest_ack",
        "pn",
        "sent_time",
        "size",
    )

    def __init__(self, pn: int, sent_time: float, size: int, ack_eliciting: bool,
                 in_flight: bool, frames: list[Any], largest_ack: int = -1) -> None:
        self.pn = pn
        self.sent_time = sent_time
        self.size = size
        self.ack_eliciting = ack_eliciting
        self.in_flight = in_flight
        self.frames = frames
        self.largest_ack = largest_ack  # largest PN in an ACK frame it carried
        self.is_pmtu_probe = False

    def __repr__(self) -> str:
        return f"SentPacket(pn={self.pn}, size={self.size}, frames={len(self.frames)})"


class PnSpace:
    """State of one packet number space, both directions."""

    __slots__ = (
        "ack_deadline",
        "ack_eliciting_threshold",
        "ack_needed",
        "ack_pending",
        "bytes_in_flight",
        "discarded",
        "ecn_ce",
        "eliciting_in_flight",
        "eliciting_since_ack",
        "floor",
        "immediate",
        "largest_acked",
        "largest_received",
        "largest_received_time",
        "last_ack_eliciting_time",
        "level",
        "loss_time",
        "max_ack_delay",
        "next_pn",
        "ranges",
        "sent",
    )

    def __init__(self, level: int = 0, *, max_ack_delay: float = 0.025,
                 immediate: bool = False, ack_eliciting_threshold: int = 2) -> None:
        self.level = level
        # received PNs as ascending, disjoint, non-adjacent [start, end] ranges
        self.ranges: list[list[int]] = []
        self.floor = 0  # PNs below this are treated as already received
        self.largest_received = -1
        self.largest_received_time = 0.0
        self.ack_needed = False  # send an ACK at the next opportunity
        self.ack_deadline: float | None = None  # delayed-ACK deadline
        self.eliciting_since_ack = 0
        self.ack_pending = False  # something new to acknowledge
        self.ack_eliciting_threshold = ack_eliciting_threshold
        self.max_ack_delay = max_ack_delay
        self.immediate = immediate  # Initial/Handshake: never delay ACKs
        # send side
        self.next_pn = 0
        self.sent: dict[int, SentPacket] = {}
        self.largest_acked = -1
        self.loss_time: float | None = None
        self.last_ack_eliciting_time: float | None = None
        self.bytes_in_flight = 0
        self.eliciting_in_flight = 0
        self.discarded = False
        self.ecn_ce = 0

    # ------------------------------------------------------------ receive side
    def is_duplicate(self, pn: int) -> bool:
        """True when ``pn`` was already received (or is too old to track)."""
        if pn < self.floor:
            return True
        ranges = self.ranges
        if not ranges or pn > ranges[-1][1]:
            return False
        for r in reversed(ranges):
            if pn > r[1]:
                return False
            if pn >= r[0]:
                return True
        return False

    def on_packet_received(self, pn: int, now: float, ack_eliciting: bool) -> None:
        """Record a processed packet and schedule the ACK (RFC 9000 §13.2)."""
        ranges = self.ranges
        out_of_order = False
        if not ranges:
            ranges.append([pn, pn])
            out_of_order = pn != 0 and self.largest_received >= 0
        else:
            last = ranges[-1]
            if pn == last[1] + 1:
                last[1] = pn
            elif pn > last[1]:
                ranges.append([pn, pn])
                out_of_order = True  # a gap opened
            else:
                out_of_order = True  # fills a gap
                self._insert(pn)
            if len(ranges) > MAX_ACK_RANGES:
                dropped = ranges.pop(0)
                self.floor = max(self.floor, dropped[1] + 1)
        if pn > self.largest_received:
            self.largest_received = pn
            self.largest_received_time = now
        self.ack_pending = True
        if not ack_eliciting:
            return
        self.eliciting_since_ack += 1
        # RFC 9000 §13.2.1: immediate ACK for Initial/Handshake and reordering;
        # §13.2.2: at least every second ack-eliciting packet.
        if (self.immediate or out_of_order
                or self.eliciting_since_ack >= self.ack_eliciting_threshold):
            self.ack_needed = True
        elif self.ack_deadline is None:
            self.ack_deadline = now + self.max_ack_delay

    def _insert(self, pn: int) -> None:
        ranges = self.ranges
        lo, hi = 0, len(ranges)
        while lo < hi:  # first range whose end >= pn
            mid = (lo + hi) // 2
            if ranges[mid][1] < pn:
                lo = mid + 1
            else:
                hi = mid
        i = lo
        if i < len(ranges) and ranges[i][0] <= pn:
            return  # already present
        prev_adj = i > 0 and ranges[i - 1][1] + 1 == pn
        next_adj = i < len(ranges) and ranges[i][0] - 1 == pn
        if prev_adj and next_adj:
            ranges[i - 1][1] = ranges[i][1]
            del ranges[i]
        elif prev_adj:
            ranges[i - 1][1] = pn
        elif next_adj:
            ranges[i][0] = pn
        else:
            ranges.insert(i, [pn, pn])

    def ack_ranges(self) -> list[tuple[int, int]]:
        """Received ranges as inclusive ``(first, last)`` pairs, highest first."""
        return [(r[0], r[1]) for r in reversed(self.ranges)]

    def ack_due(self, now: float) -> bool:
        """True when an ACK frame must be sent now (not merely piggybacked)."""
        if not self.ack_pending:
            return False
        return self.ack_needed or (self.ack_deadline is not None and now >= self.ack_deadline)

    def ack_delay(self, now: float) -> float:
        """Time since the largest PN arrived (RFC 9000 §19.3 ACK Delay)."""
        return max(0.0, now - self.largest_received_time)

    def on_ack_sent(self) -> None:
        """An ACK frame covering the current ranges went out."""
        self.ack_needed = False
        self.ack_deadline = None
        self.eliciting_since_ack = 0
        self.ack_pending = False

    def on_ack_of_ack(self, largest: int) -> None:
        """The peer got our ACK whose largest PN was ``largest``: stop repeating
        ranges wholly below it (RFC 9000 §13.2.4), keeping the one holding it."""
        ranges = self.ranges
        n = 0
        while n < len(ranges) - 1 and ranges[n][1] < largest:
            n += 1
        if n:
            self.floor = max(self.floor, ranges[n - 1][1] + 1)
            del ranges[:n]

    # ---------------------------------------------------------------- send side
    def on_packet_sent(self, packet: SentPacket) -> None:
        self.sent[packet.pn] = packet
        if packet.in_flight:
            self.bytes_in_flight += packet.size
            if packet.ack_eliciting:
                self.eliciting_in_flight += 1
                self.last_ack_eliciting_time = packet.sent_time

    def _forget(self, p: SentPacket) -> None:
        if p.in_flight:
            self.bytes_in_flight -= p.size
            if p.ack_eliciting:
                self.eliciting_in_flight -= 1

    def on_ack_received(self, ranges: list[tuple[int, int]]) -> list[SentPacket]:
        """Process ACK ranges (``(first, last)``, highest first); return the
        newly acknowledged packets in ascending PN order (RFC 9002 §A.7)."""
        sent = self.sent
        if not ranges or not sent:
            if ranges and ranges[0][1] > self.largest_acked:
                self.largest_acked = ranges[0][1]
            return []
        largest = ranges[0][1]
        acked: list[SentPacket] = []
        asc = ranges[::-1]
        idx = 0
        first, last = asc[0]
        nr = len(asc)
        for pn in sent:
            if pn > largest:
                break
            while pn > last:
                idx += 1
                if idx >= nr:
                    break
                first, last = asc[idx]
            if idx >= nr:
                break
            if pn >= first:
                acked.append(sent[pn])
        nbytes = neliciting = 0
        for p in acked:
            del sent[p.pn]
            if p.in_flight:  # _forget, summed
                nbytes += p.size
                if p.ack_eliciting:
                    neliciting += 1
        self.bytes_in_flight -= nbytes
        self.eliciting_in_flight -= neliciting
        self.largest_acked = max(self.largest_acked, largest)
        return acked

    def loss_delay(self, latest_rtt: float, smoothed_rtt: float) -> float:
        """RFC 9002 §6.1.2 time threshold."""
        return max(K_TIME_THRESHOLD * max(latest_rtt, smoothed_rtt), K_GRANULARITY)

    def detect_lost(self, now: float, latest_rtt: float, smoothed_rtt: float) -> list[SentPacket]:
        """Declare lost packets below the largest acked (RFC 9002 §6.1) and set
        ``loss_time`` for the earliest one that may still be late."""
        self.loss_time = None
        if self.largest_acked < 0 or not self.sent:
            return []
        delay = self.loss_delay(latest_rtt, smoothed_rtt)
        lost_pn = self.largest_acked - K_PACKET_THRESHOLD
        lost: list[SentPacket] = []
        for pn, p in self.sent.items():
            if pn > self.largest_acked:
                break
            t = p.sent_time + delay  # same expression as loss_time: no float drift
            if pn <= lost_pn or t <= now:
                lost.append(p)
            elif self.loss_time is None or t < self.loss_time:
                self.loss_time = t
        for p in lost:
            del self.sent[p.pn]
            self._forget(p)
        return lost

    def discard(self) -> list[SentPacket]:
        """Drop all state when the space's keys are discarded (RFC 9002 §6.4);
        returns the packets that were in flight for congestion accounting."""
        packets = list(self.sent.values())
        self.sent.clear()
        self.bytes_in_flight = 0
        self.eliciting_in_flight = 0
        self.loss_time = None
        self.last_ack_eliciting_time = None
        self.ack_needed = False
        self.ack_pending = False
        self.ack_deadline = None
        self.discarded = True
        return packets
