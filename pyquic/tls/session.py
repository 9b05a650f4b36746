"""Resumption state: the client's saved session and the server's sealed tickets.

Client side, :class:`SessionTicket` is what a later connection needs to resume
(RFC 8446 §4.6.1, §2.2): the ticket, the PSK derived from it, the cipher suite,
ALPN and the peer's transport parameters for 0-RTT (RFC 9001 §4.6.1 and §7.4.1).
``to_bytes``/``from_bytes`` give the opaque "session data" the driver hands out.

Server side, tickets are self-contained: the resumption PSK and its context are
sealed with AES-256-GCM under a key derived from the socket's ticket key
(QUIC_SOCKOPT_SESSION_TICKET), so any server holding that key can resume.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyquic._rand import urandom
from pyquic.tls.keyschedule import hkdf_expand_label, hkdf_extract

_MAGIC = b"PQS1"


def _put(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def get(self) -> bytes:
        if self.pos + 4 > len(self.data):
            raise ValueError("session data truncated")
        (n,) = struct.unpack_from("!I", self.data, self.pos)
        self.pos += 4
        if self.pos + n > len(self.data):
            raise ValueError("session data truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def get_int(self) -> int:
        return int.from_bytes(self.get(), "big")


@dataclass
class SessionTicket:
    """A resumable session as the client keeps it."""

    ticket: bytes
    psk: bytes
    cipher_suite: int
    age_add: int
    lifetime: int
    received_at: float
    max_early_data: int = 0
    alpn: str | None = None
    server_name: str | None = None
    #: The server's quic_transport_parameters extension, as received.
    peer_transport_parameters: bytes = b""
    #: The kernel's ``struct quic_transport_param`` (remote=1) for 0-RTT, if saved.
    kernel_transport_param: bytes = b""

    def is_valid(self, now: float) -> bool:
        """Within its lifetime (RFC 8446 §4.6.1)."""
        return now - self.received_at < self.lifetime

    def obfuscated_age(self, now: float) -> int:
        """obfuscated_ticket_age (RFC 8446 §4.2.11.1)."""
        age_ms = max(0, int((now - self.received_at) * 1000))
        return (age_ms + self.age_add) & 0xFFFFFFFF

    def to_bytes(self) -> bytes:
        return _MAGIC + b"".join(
            _put(x)
            for x in (
                self.ticket,
                self.psk,
                self.cipher_suite.to_bytes(2, "big"),
                self.age_add.to_bytes(4, "big"),
                self.lifetime.to_bytes(4, "big"),
                struct.pack("!d", self.received_at),
                self.max_early_data.to_bytes(4, "big"),
                (self.alpn or "").encode(),
                (self.server_name or "").encode(),
                self.peer_transport_parameters,
                self.kernel_transport_param,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionTicket:
        if not data.startswith(_MAGIC):
            raise ValueError("not pyquic session data")
        c = _Cursor(data[len(_MAGIC) :])
        ticket = c.get()
        psk = c.get()
        suite = c.get_int()
        age_add = c.get_int()
        lifetime = c.get_int()
        (received_at,) = struct.unpack("!d", c.get())
        max_early = c.get_int()
        alpn = c.get().decode() or None
        server_name = c.get().decode() or None
        peer_tp = c.get()
        kernel_tp = c.get()
        return cls(ticket, psk, suite, age_add, lifetime, received_at, max_early, alpn,
                   server_name, peer_tp, kernel_tp)


@dataclass
class TicketContents:
    """What a server seals into a ticket."""

    psk: bytes
    cipher_suite: int
    age_add: int
    issued_at: float
    max_early_data: int
    alpn: str | None
    server_name: str | None


class TicketSealer:
    """Seals and opens stateless tickets under a key derived from ``ticket_key``."""

    def __init__(self, ticket_key: bytes) -> None:
        if len(ticket_key) < 16:
            raise ValueError("ticket key must be at least 16 bytes")
        prk = hkdf_extract("sha256", b"pyquic ticket", ticket_key)
        self._aead = AESGCM(hkdf_expand_label("sha256", prk, b"ticket key", b"", 32))

    def seal(self, t: TicketContents, random: bytes | None = None) -> bytes:
        nonce = random if random is not None else urandom(12)
        plain = b"".join(
            _put(x)
            for x in (
                t.psk,
                t.cipher_suite.to_bytes(2, "big"),
                t.age_add.to_bytes(4, "big"),
                struct.pack("!d", t.issued_at),
                t.max_early_data.to_bytes(4, "big"),
                (t.alpn or "").encode(),
                (t.server_name or "").encode(),
            )
        )
        return nonce + self._aead.encrypt(nonce, plain, b"pyquic-ticket")

    def open(self, ticket: bytes) -> TicketContents | None:
        """The contents, or None for a ticket this key did not seal."""
        if len(ticket) < 12 + 16:
            return None
        try:
            plain = self._aead.decrypt(ticket[:12], ticket[12:], b"pyquic-ticket")
            c = _Cursor(plain)
            psk = c.get()
            suite = c.get_int()
            age_add = c.get_int()
            (issued_at,) = struct.unpack("!d", c.get())
            max_early = c.get_int()
            alpn = c.get().decode() or None
            sni = c.get().decode() or None
        except (InvalidTag, ValueError, struct.error):
            return None
        return TicketContents(psk, suite, age_add, issued_at, max_early, alpn, sni)
