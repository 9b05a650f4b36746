"""Network paths: addresses, validation, anti-amplification and MTU.

Twin of the kernel's ``net/quic/path.c`` (``struct quic_path_group``).  A
:class:`PathGroup` holds the active path (index 0) and an alternate one
(index 1) used while migrating or probing a preferred address.  Addresses are
opaque hashable tuples as Python's socket module uses them.

* Anti-amplification (RFC 9000 §8.1): until the peer's address is validated a
  server may send at most three times the bytes it received.
* Path validation (RFC 9000 §8.2): PATH_CHALLENGE with 8 random bytes,
  PATH_RESPONSE echoing those of any challenge of the validation in
  progress; the timeouts are the connection's (§8.2.4).
* MTU: the datagram size in use (1200 minimum, RFC 9000 §14), capped by the
  peer's ``max_udp_payload_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any

Addr = Any  # an opaque, hashable socket address tuple

MIN_PMTU = 1200  # RFC 9000 §14
MAX_PMTU = 65535
# Datagram size used by default: a 1500-byte link minus IPv6 and UDP headers
# (the kernel uses the route MTU; 1200 is the floor).
DEFAULT_PMTU = 1452
AMPLIFICATION_FACTOR = 3  # RFC 9000 §8.1
ENTROPY_LEN = 8  # PATH_CHALLENGE data, RFC 9000 §19.17
MAX_ALT_PROBES = 5


class AltState(IntEnum):
    """Connection migration state, as the kernel names it."""

    NONE = 0
    PENDING = 1  # waiting for a fresh destination CID
    PROBING = 2  # PATH_CHALLENGE outstanding on the alternate path
    SWAPPED = 3  # the alternate path became the active one


class Path:
    """One (local, remote) address pair."""

    __slots__ = ("local", "remote")

    def __init__(self, local: Addr = None, remote: Addr = None) -> None:
        self.local = local
        self.remote = remote

    def matches(self, local: Addr, remote: Addr) -> bool:
        return self.remote == remote and (self.local is None or local is None
                                          or self.local == local)

    def __repr__(self) -> str:
        return f"Path(local={self.local!r}, remote={self.remote!r})"


class PathGroup:
    """Active and alternate paths plus the per-connection path state."""

    def __init__(self, random: Callable[[int], bytes]) -> None:
        self._random = random
        self.paths = [Path(), Path()]
        self.validated = False  # peer address validated (RFC 9000 §8.1)
        self.ampl_sent = 0
        self.ampl_received = 0
        self.mtu = DEFAULT_PMTU
        self.peer_max_udp_payload = 65527
        # path validation (RFC 9000 §8.2)
        self.challenge: bytes | None = None  # the latest; None: no validation
        self._sent: list[bytes] = []  # every challenge of this validation
        self.challenge_path = 0
        self.challenge_deadline: float | None = None
        self.alt_probes = 0
        self.alt_state = AltState.NONE
        self.pending_responses: list[tuple[bytes, int]] = []  # (data, path index)
        # migration parameters
        self.disable_local_migration = False  # peer's disable_active_migration
        self.disable_peer_migration = False  # ours
        self.pref_addr = False
        self.plpmtud_interval = 0
        self.keepalive_interval = 0

    # -------------------------------------------------------------- addresses
    @property
    def local(self) -> Addr:
        return self.paths[0].local

    @property
    def remote(self) -> Addr:
        return self.paths[0].remote

    def set_addresses(self, index: int, local: Addr, remote: Addr) -> None:
        self.paths[index].local = local
        self.paths[index].remote = remote

    def lookup(self, local: Addr, remote: Addr) -> int:
        """Index of the path a datagram arrived on, or -1 for a new path."""
        for i, p in enumerate(self.paths):
            if p.remote is not None and p.matches(local, remote):
                return i
        return -1

    def swap(self) -> None:
        """Make the alternate path the active one (migration complete)."""
        self.paths.reverse()

    # ------------------------------------------------------ anti-amplification
    def on_received(self, nbytes: int) -> None:
        if not self.validated:
            self.ampl_received += nbytes

    def on_sent(self, nbytes: int) -> None:
        if not self.validated:
            self.ampl_sent += nbytes

    def send_allowance(self) -> int | None:
        """Bytes that may still be sent, or None when unlimited (§8.1)."""
        if self.validated:
            return None
        return max(0, AMPLIFICATION_FACTOR * self.ampl_received - self.ampl_sent)

    def validate(self) -> None:
        self.validated = True

    # ------------------------------------------------------------------- MTU
    def max_datagram_size(self) -> int:
        return max(MIN_PMTU, min(self.mtu, self.peer_max_udp_payload))

    # ------------------------------------------------------- path validation
    def start_challenge(self, index: int, now: float, timeout: float,
                        again: bool = False) -> bytes:
        """Begin validating path ``index`` (or send another challenge for it);
        returns the PATH_CHALLENGE data.  With ``again``, a response to any
        challenge of the same validation counts (a late answer to an earlier
        probe)."""
        self.challenge = self._random(ENTROPY_LEN)
        if not again or self.challenge_path != index or len(self._sent) >= MAX_ALT_PROBES:
            self._sent.clear()
        self._sent.append(self.challenge)
        self.challenge_path = index
        self.challenge_deadline = now + timeout
        self.alt_probes += 1
        if index == 1:
            self.alt_state = AltState.PROBING
        return self.challenge

    def on_response(self, data: bytes) -> int:
        """A PATH_RESPONSE arrived: returns the validated path index or -1."""
        if self.challenge is None or data not in self._sent:
            return -1
        index = self.challenge_path
        self._sent.clear()
        self.challenge = None
        self.challenge_deadline = None
        self.alt_probes = 0
        return index

    def on_challenge(self, data: bytes, index: int) -> None:
        """Queue the PATH_RESPONSE owed on path ``index`` (RFC 9000 §8.2.2)."""
        if len(self.pending_responses) < 8:
            self.pending_responses.append((data, index))

    def abandon_challenge(self) -> None:
        self._sent.clear()
        self.challenge = None
        self.challenge_deadline = None
        self.alt_probes = 0
        self.alt_state = AltState.NONE
        self.paths[1] = Path()
