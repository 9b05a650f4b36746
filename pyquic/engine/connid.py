"""Connection ID sets, sans-I/O (twin of net/quic/connid.c).

Two sets per connection, as in the kernel:

- ``SourceConnIdSet``: the IDs *we* issue (the peer sends to them).  Each has
  a sequence number and a stateless reset token (RFC 9000 §5.1, §10.3).  We
  keep at most the peer's active_connection_id_limit unretired IDs (those with
  a sequence number >= the Retire Prior To we last sent), never more than
  ``ISSUE_LIMIT`` (the kernel's QUIC_CONN_ID_LIMIT, 8).
- ``DestConnIdSet``: the IDs the *peer* issued (we send to them), bounded by
  our active_connection_id_limit; it owns the "active" ID used on the current
  path and an "alt" ID for a path being validated (migration).

Kernel socket-option semantics (socket.c quic_sock_set_connection_id): with
``prior_to`` set, IDs below it are retired (source: by issuing new IDs whose
NEW_CONNECTION_ID carries Retire Prior To; dest: by sending
RETIRE_CONNECTION_ID); ``prior_to`` must satisfy ``first < prior_to <= last``;
with ``active`` set, the active ID switches to that higher-numbered one.  Every
refused request is EINVAL; on the dest set, EAGAIN while a migration holds an
alt ID.  ``get`` reports ``(active seq, first seq)``.

Peer violations raise ``QuicError``: RETIRE_CONNECTION_ID for a sequence
number never issued or for the packet's own DCID, or on a zero-length ID:
PROTOCOL_VIOLATION (RFC 9000 §19.16); NEW_CONNECTION_ID with Retire Prior To
above its sequence number: FRAME_ENCODING_ERROR; over our limit:
CONNECTION_ID_LIMIT_ERROR (§5.1.1); a sequence number reused for another ID,
or an ID reused with another sequence number or token: PROTOCOL_VIOLATION
(§19.15); NEW_CONNECTION_ID while we use a zero-length DCID:
PROTOCOL_VIOLATION.

Differences from the kernel (RFC 9000 followed): any issued sequence number
may be retired individually (the kernel removes every ID up to it and refuses
the highest one); the NEW_CONNECTION_ID limit counts the IDs at or above the
Retire Prior To (§5.1.1) rather than ``seq - prior_to + 1``.  The "established"
check of the socket option is the connection's.

Public API (stable)::

    @dataclass
    class ConnectionId:
        seq: int; cid: bytes; token: bytes          # token: 16 bytes, b"" if unknown
        retire_prior_to: int = 0                    # for the NEW_CONNECTION_ID frame we send

    class SourceConnIdSet:
        SourceConnIdSet(random: Callable[[int], bytes] = os.urandom, cid_len: int = 8,
                        token_for: Callable[[bytes], bytes] | None = None)
        max_count: int                      # peer's active_connection_id_limit (default 2)
        retire_prior_to: int                # highest Retire Prior To we sent
        add(cid, seq=None, token=None) -> ConnectionId   # initial SCID (seq 0), preferred address
        issue() -> list[ConnectionId]       # new IDs to announce (NEW_CONNECTION_ID frames)
        on_retire(seq, packet_dcid_seq=None, frame_type=None) -> list[ConnectionId]
              # removes it, returns replacements to announce
        set_connection_id(prior_to=0, active=0) -> list[ConnectionId]   # socket option
        get_connection_id() -> tuple[int, int]   # (active seq, first seq)
        active: ConnectionId; active_seq: int; first_number: int; last_number: int
        find(seq) -> ConnectionId | None; lookup(cid) -> ConnectionId | None
        cids() -> set[bytes]; __iter__ (by seq); __len__

    class DestConnIdSet:
        DestConnIdSet(max_count: int = 7)   # our active_connection_id_limit
        max_count: int; retire_prior_to: int
        add(cid, seq=0, token=None) -> ConnectionId     # initial DCID / preferred address
        set_token(seq, token) -> None                   # stateless_reset_token parameter
        on_new_connection_id(seq, retire_prior_to, cid, token, frame_type=None) -> list[int]
              # sequence numbers to send RETIRE_CONNECTION_ID for
        retire(seq) -> bool                             # stop using one ID (RETIRE to send)
        set_connection_id(prior_to=0, active=0) -> list[int]   # socket option
        get_connection_id() -> tuple[int, int]
        is_stateless_reset(token) -> bool               # constant-time compare
        active: ConnectionId; active_seq; first_number; last_number; find(seq)
        alt: ConnectionId | None
        select_alt(nat_rebinding: bool = False) -> bool   # kernel quic_conn_id_select_alt
        swap_active() -> None; clear_alt() -> None
        __iter__; __len__
"""

from __future__ import annotations

import errno
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._rand import urandom
from .errors import (
    CONNECTION_ID_LIMIT_ERROR,
    FRAME_ENCODING_ERROR,
    PROTOCOL_VIOLATION,
    QuicError,
)

__all__ = [
    "CID_DEFAULT_LEN",
    "CID_MAX_LEN",
    "DEFAULT_ACTIVE_CID_LIMIT",
    "ISSUE_LIMIT",
    "RESET_TOKEN_LEN",
    "ConnectionId",
    "DestConnIdSet",
    "SourceConnIdSet",
]

CID_MAX_LEN = 20  # RFC 9000 §17.2
CID_DEFAULT_LEN = 8  # kernel QUIC_CONN_ID_DEF_LEN
RESET_TOKEN_LEN = 16  # RFC 9000 §10.3
DEFAULT_ACTIVE_CID_LIMIT = 7  # kernel QUIC_CONN_ID_DEF (our transport parameter)
ISSUE_LIMIT = 8  # kernel QUIC_CONN_ID_LIMIT
_U32_MAX = 0xFFFFFFFF


def _einval(msg: str) -> OSError:
    return OSError(errno.EINVAL, msg)


@dataclass(slots=True)
class ConnectionId:
    """One connection ID with its sequence number and stateless reset token."""

    seq: int
    cid: bytes
    token: bytes = b""
    retire_prior_to: int = 0


class _ConnIdSet:
    """Common part: IDs ordered by sequence number and the active one."""

    def __init__(self) -> None:
        self._by_seq: dict[int, ConnectionId] = {}
        self._active: ConnectionId | None = None

    def __len__(self) -> int:
        return len(self._by_seq)

    def __iter__(self) -> Iterator[ConnectionId]:
        return iter([self._by_seq[s] for s in sorted(self._by_seq)])

    def find(self, seq: int) -> ConnectionId | None:
        """The ID with this sequence number, or None."""
        return self._by_seq.get(seq)

    @property
    def active(self) -> ConnectionId:
        """The ID in use on the current path."""
        if self._active is None:
            raise LookupError("connection ID set is empty")
        return self._active

    @property
    def active_seq(self) -> int:
        return self.active.seq

    @property
    def first_number(self) -> int:
        """Lowest sequence number held (kernel quic_conn_id_first_number)."""
        return min(self._by_seq) if self._by_seq else 0

    @property
    def last_number(self) -> int:
        """Highest sequence number held."""
        return max(self._by_seq) if self._by_seq else -1

    def get_connection_id(self) -> tuple[int, int]:
        """(active seq, first seq), what getsockopt(CONNECTION_ID) reports."""
        return self.active_seq, self.first_number

    def _remove(self, seq: int) -> None:
        cid = self._by_seq.pop(seq, None)
        if cid is not None and cid is self._active:
            self._active = self._lowest()

    def _lowest(self) -> ConnectionId | None:
        """After the active ID goes, the next one up takes over (connid.c)."""
        if not self._by_seq:
            return None
        return self._by_seq[min(self._by_seq)]

    def _switch_active(self, active: int) -> None:
        """Kernel rule: only to a higher-numbered ID that exists, else EINVAL."""
        if self._active is None or active <= self._active.seq:
            raise _einval("active connection ID must be higher than the current one")
        new = self._by_seq.get(active)
        if new is None:
            raise _einval("no connection ID with that sequence number")
        self._active = new

    def _check_prior_to(self, prior_to: int, max_count: int) -> None:
        if (prior_to > self.last_number or prior_to <= self.first_number
                or prior_to + max_count > _U32_MAX):
            raise _einval("invalid prior_to")


class SourceConnIdSet(_ConnIdSet):
    """Connection IDs we issue to the peer (kernel quic_source)."""

    def __init__(self, random: Callable[[int], bytes] = urandom,
                 cid_len: int = CID_DEFAULT_LEN,
                 token_for: Callable[[bytes], bytes] | None = None) -> None:
        super().__init__()
        self._random = random
        self.cid_len = cid_len
        self._token_for = token_for
        self.max_count = 2  # RFC 9000 §18.2 default active_connection_id_limit
        self.retire_prior_to = 0
        self._next_seq = 0
        self._by_cid: dict[bytes, ConnectionId] = {}

    def _token(self, cid: bytes) -> bytes:
        if self._token_for is not None:
            return self._token_for(cid)
        return self._random(RESET_TOKEN_LEN)

    def add(self, cid: bytes, seq: int | None = None, token: bytes | None = None) -> ConnectionId:
        """Register an ID issued outside NEW_CONNECTION_ID (handshake SCID: seq 0,
        preferred_address: seq 1).  The first one added becomes active."""
        if len(cid) > CID_MAX_LEN:
            raise ValueError("connection ID longer than 20 bytes")
        if seq is None:
            seq = self._next_seq
        if token is None:
            token = self._token(cid) if cid else b""
        entry = ConnectionId(seq, cid, token, self.retire_prior_to)
        self._by_seq[seq] = entry
        if cid:
            self._by_cid[cid] = entry
        self._next_seq = max(self._next_seq, seq + 1)
        if self._active is None:
            self._active = entry
        return entry

    def lookup(self, cid: bytes) -> ConnectionId | None:
        """The entry for a connection ID value (endpoint demultiplexing)."""
        return self._by_cid.get(cid)

    def cids(self) -> set[bytes]:
        """Every ID value the peer may use to reach us."""
        return set(self._by_cid)

    @property
    def last_number(self) -> int:
        """Highest sequence number ever issued."""
        return self._next_seq - 1

    def _unretired(self) -> int:
        rpt = self.retire_prior_to
        return sum(1 for s in self._by_seq if s >= rpt)

    def issue(self) -> list[ConnectionId]:
        """Issue new IDs until the peer holds its limit (RFC 9000 §5.1.1).

        Returns them for NEW_CONNECTION_ID frames (their ``retire_prior_to``
        is the current Retire Prior To).  Nothing with a zero-length SCID.
        """
        if self._active is not None and not self._active.cid:
            return []
        out: list[ConnectionId] = []
        limit = min(self.max_count, ISSUE_LIMIT)
        count = self._unretired()
        while count < limit and self._next_seq <= _U32_MAX:
            cid = self._random(self.cid_len)
            if cid in self._by_cid:
                continue  # pragma: no cover - collision of random IDs
            entry = self.add(cid)
            entry.retire_prior_to = self.retire_prior_to
            out.append(entry)
            count += 1
        return out

    def on_retire(self, seq: int, packet_dcid_seq: int | None = None,
                  frame_type: int | None = None) -> list[ConnectionId]:
        """The peer's RETIRE_CONNECTION_ID (RFC 9000 §19.16); returns replacements."""
        if self._active is not None and not self._active.cid:
            raise QuicError(PROTOCOL_VIOLATION, frame_type, "RETIRE_CONNECTION_ID on zero-length ID")
        if seq > self.last_number:
            raise QuicError(PROTOCOL_VIOLATION, frame_type, "retiring a never issued ID")
        if packet_dcid_seq is not None and seq == packet_dcid_seq:
            raise QuicError(PROTOCOL_VIOLATION, frame_type, "retiring the packet's own DCID")
        entry = self._by_seq.get(seq)
        if entry is None:
            return []  # already retired
        self._by_cid.pop(entry.cid, None)
        was_active = entry is self._active
        del self._by_seq[seq]
        out = self.issue()
        if was_active:
            self._active = self._lowest()
        return out

    def set_connection_id(self, prior_to: int = 0, active: int = 0) -> list[ConnectionId]:
        """setsockopt(CONNECTION_ID) on the source set; returns IDs to announce."""
        if prior_to:
            self._check_prior_to(prior_to, self.max_count)
        if active:
            self._switch_active(active)
        if not prior_to:
            return []
        self.retire_prior_to = max(self.retire_prior_to, prior_to)
        return self.issue()


class DestConnIdSet(_ConnIdSet):
    """Connection IDs the peer issued to us (kernel quic_dest)."""

    def __init__(self, max_count: int = DEFAULT_ACTIVE_CID_LIMIT) -> None:
        super().__init__()
        self.max_count = max_count
        self.retire_prior_to = 0
        self.alt: ConnectionId | None = None

    def add(self, cid: bytes, seq: int = 0, token: bytes | None = None) -> ConnectionId:
        """Register an ID learnt outside NEW_CONNECTION_ID (handshake: seq 0,
        preferred_address: seq 1).  The first one added becomes active."""
        entry = ConnectionId(seq, cid, token or b"")
        self._by_seq[seq] = entry
        if self._active is None:
            self._active = entry
        return entry

    def set_token(self, seq: int, token: bytes) -> None:
        """Attach a stateless reset token (e.g. the server's transport parameter)."""
        entry = self._by_seq.get(seq)
        if entry is not None:
            entry.token = token

    def on_new_connection_id(self, seq: int, retire_prior_to: int, cid: bytes, token: bytes,
                             frame_type: int | None = None) -> list[int]:
        """The peer's NEW_CONNECTION_ID; returns sequence numbers to retire.

        Retirement follows RFC 9000 §5.1.2: IDs below the highest Retire Prior
        To are retired, including one that arrives already below it.
        """
        if self._active is not None and not self._active.cid:
            raise QuicError(PROTOCOL_VIOLATION, frame_type, "NEW_CONNECTION_ID with zero-length DCID")
        if not 1 <= len(cid) <= CID_MAX_LEN:
            raise QuicError(FRAME_ENCODING_ERROR, frame_type, "bad connection ID length")
        if retire_prior_to > seq:  # RFC 9000 §19.15
            raise QuicError(FRAME_ENCODING_ERROR, frame_type, "Retire Prior To above sequence")
        known = self._by_seq.get(seq)
        if known is not None and (known.cid != cid or (
                token and known.token and not hmac.compare_digest(known.token, token))):
            raise QuicError(PROTOCOL_VIOLATION, frame_type, "sequence number reused")
        for other in self._by_seq.values():
            if other.cid == cid and other.seq != seq:
                raise QuicError(PROTOCOL_VIOLATION, frame_type, "connection ID reused")
        new_prior = max(self.retire_prior_to, retire_prior_to)
        if seq < new_prior:
            # RFC 9000 §5.1.2: retire an ID that arrives already retired
            return [] if known is not None else [seq]
        if known is None:
            active_after = sum(1 for s in self._by_seq if s >= new_prior) + 1
            if active_after > self.max_count:  # RFC 9000 §5.1.1
                raise QuicError(CONNECTION_ID_LIMIT_ERROR, frame_type, "too many connection IDs")
            self._by_seq[seq] = ConnectionId(seq, cid, token)
        elif not known.token:
            known.token = token
        retired: list[int] = []
        if new_prior > self.retire_prior_to:
            self.retire_prior_to = new_prior
            retired = sorted(s for s in self._by_seq if s < new_prior)
            for s in retired:
                self._drop(s)
        return retired

    def _drop(self, seq: int) -> None:
        entry = self._by_seq.get(seq)
        if entry is None:
            return
        was_alt = entry is self.alt
        self._remove(seq)
        if was_alt:
            self.alt = self._active

    def retire(self, seq: int) -> bool:
        """Stop using one ID (send RETIRE_CONNECTION_ID); False if unknown or the last one."""
        if seq not in self._by_seq or len(self._by_seq) <= 1:
            return False
        self._drop(seq)
        return True

    def set_connection_id(self, prior_to: int = 0, active: int = 0) -> list[int]:
        """setsockopt(CONNECTION_ID) on the dest set; returns sequence numbers to retire."""
        if self.alt is not None:
            raise OSError(errno.EAGAIN, "connection migration in progress")
        if prior_to:
            self._check_prior_to(prior_to, self.max_count)
        if active:
            self._switch_active(active)
        if not prior_to:
            return []
        retired = sorted(s for s in self._by_seq if s < prior_to)
        for s in retired:
            self._drop(s)
        return retired

    def is_stateless_reset(self, token: bytes) -> bool:
        """True if ``token`` matches a stateless reset token of a held ID (RFC 9000 §10.3.1)."""
        if len(token) != RESET_TOKEN_LEN:
            return False
        found = False
        for entry in self._by_seq.values():
            if entry.token and hmac.compare_digest(entry.token, token):
                found = True
        return found

    def select_alt(self, nat_rebinding: bool = False) -> bool:
        """Pick the ID for a new path (kernel quic_conn_id_select_alt); False if none."""
        if self.alt is not None:
            return True
        active = self.active
        if nat_rebinding:
            self.alt = active
            return True
        higher = [s for s in self._by_seq if s > active.seq]
        if higher:
            self.alt = self._by_seq[min(higher)]
            return True
        if active.seq == self.first_number:
            self.alt = active
            return True
        return False

    def swap_active(self) -> None:
        """Migration done: the alt ID becomes active and the old active becomes alt."""
        if self.alt is not None:
            self._active, self.alt = self.alt, self._active

    def clear_alt(self) -> None:
        """Forget the alt ID (migration finished or abandoned)."""
        self.alt = None
