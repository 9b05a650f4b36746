"""Stateless endpoint logic: address-validation tokens, Retry, Version
Negotiation and Stateless Reset for datagrams that match no connection.

The kernel does this in ``quic_packet_listen_process`` (packet.c) for a
listening socket.  The user backend's demultiplexer calls
:func:`stateless_response` for every datagram whose destination connection ID
belongs to no connection; the answer tells it whether to create a connection
(``accept``), which datagram to send back, or to drop it.

Public API::

    TOKEN_RETRY, TOKEN_NEW                      # first byte of a token
    RETRY_TOKEN_LIFETIME, NEW_TOKEN_LIFETIME    # seconds
    make_token(key, kind, addr, now, odcid=b"", random=pyquic._rand.urandom) -> bytes
    open_token(key, token, addr, now) -> tuple[int, bytes] | None   # (kind, odcid)
    reset_token(key, cid) -> bytes              # 16-byte stateless reset token
    reset_token_key(key) -> HmacKey             # .digest(cid)[:16] == reset_token(key, cid)
    @dataclass class Decision: accept: bool; response: bytes | None; reason: str
    stateless_response(datagram, remote, local, now, listener,
                       *, cid_len=8, random=pyquic._rand.urandom) -> Decision
    refuse_response(datagram, error_code=CONNECTION_REFUSED) -> bytes | None

How the socket layer uses it: for each received datagram whose DCID belongs
to no connection, call ``stateless_response``; send ``response`` (if any)
back to ``remote`` from ``local``; if ``accept`` create the connection
(``QuicConnection(False)``, ``inherit(listener)``, ``accept(datagram, ...)``)
or, when the accept backlog is full, send ``refuse_response(datagram)``.

``key`` is a 32-byte static secret; a listener ``QuicConnection`` keeps one
in ``static_key`` and accepted connections inherit it, so the NEW_TOKEN
tokens and stateless reset tokens they issue are recognised here later.
Tokens are AES-GCM sealed (RFC 9000 §8.1.1, §8.1.3) and bound to the client
address: a Retry token to (host, port) and a short lifetime; a NEW_TOKEN
token to the host only (the client's next connection uses another port).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._hmac import HmacKey, hmac_digest
from .._rand import urandom
from .crypto import hkdf_expand_label, hkdf_extract, initial_keys
from .errors import CONNECTION_REFUSED, INVALID_TOKEN
from .frame import ConnectionCloseFrame
from .packet import (
    SUPPORTED_VERSIONS,
    PacketError,
    PacketType,
    build_retry,
    build_stateless_reset,
    build_version_negotiation,
    encode_long_header,
    parse_header,
    protect,
)

__all__ = [
    "NEW_TOKEN_LIFETIME",
    "RETRY_TOKEN_LIFETIME",
    "TOKEN_NEW",
    "TOKEN_RETRY",
    "Decision",
    "make_token",
    "open_token",
    "refuse_response",
    "reset_token",
    "reset_token_key",
    "stateless_response",
]

TOKEN_RETRY = 0x01  # kernel QUIC_TOKEN_FLAG_RETRY
TOKEN_NEW = 0x00
RETRY_TOKEN_LIFETIME = 10.0
NEW_TOKEN_LIFETIME = 3 * 86400.0
_NONCE_LEN = 12
MIN_INITIAL_SIZE = 1200
RESET_MIN_LEN = 21  # RFC 9000 §10.3: 5 unpredictable bytes + 16-byte token
RESET_DEF_LEN = 41  # kernel QUIC_STATELESS_RESET_DEF_LEN


@lru_cache(maxsize=64)
def _subkey(key: bytes, label: bytes) -> bytes:
    # cached: a listener's key serves every connection it accepts (reset
    # tokens for each connection ID, tokens for each handshake)
    return hkdf_expand_label("sha256", hkdf_extract("sha256", b"pyquic", key), label, b"", 32)


def _addr_bytes(addr: Any, with_port: bool) -> bytes:
    if isinstance(addr, tuple) and addr:
        host = str(addr[0]).encode()
        if with_port and len(addr) > 1:
            return host + b"|" + str(addr[1]).encode()
        return host
    return repr(addr).encode()


def make_token(key: bytes, kind: int, addr: Any, now: float, odcid: bytes = b"",
               random: Callable[[int], bytes] = urandom) -> bytes:
    """Seal an address-validation token (Retry: ``kind`` TOKEN_RETRY with the
    original DCID; NEW_TOKEN: TOKEN_NEW)."""
    nonce = random(_NONCE_LEN)
    plain = struct.pack("!d", now) + bytes((len(odcid),)) + odcid
    aad = bytes((kind,)) + _addr_bytes(addr, kind == TOKEN_RETRY)
    sealed = AESGCM(_subkey(key, b"token")).encrypt(nonce, plain, aad)
    return bytes((kind,)) + nonce + sealed


def open_token(key: bytes, token: bytes, addr: Any, now: float) -> tuple[int, bytes] | None:
    """Check a token: (kind, original DCID) if it is ours, for ``addr`` and
    not expired; None otherwise."""
    if len(token) < 1 + _NONCE_LEN + 16 + 9 or token[0] not in (TOKEN_RETRY, TOKEN_NEW):
        return None
    kind = token[0]
    aad = bytes((kind,)) + _addr_bytes(addr, kind == TOKEN_RETRY)
    try:
        plain = AESGCM(_subkey(key, b"token")).decrypt(
            bytes(token[1:1 + _NONCE_LEN]), bytes(token[1 + _NONCE_LEN:]), aad)
    except InvalidTag:
        return None
    (issued,) = struct.unpack("!d", plain[:8])
    n = plain[8]
    odcid = plain[9:9 + n]
    life = RETRY_TOKEN_LIFETIME if kind == TOKEN_RETRY else NEW_TOKEN_LIFETIME
    if not issued - 1.0 <= now <= issued + life:
        return None
    return kind, odcid


def reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token for one of our connection IDs (RFC 9000
    §10.3.2: derived from a static key so it survives losing the state)."""
    return hmac_digest(_subkey(key, b"stateless_reset"), cid, "sha256")[:16]


def reset_token_key(key: bytes) -> HmacKey:
    """The HMAC key behind :func:`reset_token`, for computing many tokens:
    ``reset_token_key(key).digest(cid)[:16] == reset_token(key, cid)``."""
    return HmacKey(_subkey(key, b"stateless_reset"), "sha256")


@dataclass
class Decision:
    """What to do with a datagram that matched no connection."""

    accept: bool  # create a connection for it (QuicConnection.accept)
    response: bytes | None = None  # datagram to send back to the source address
    reason: str = ""


def _initial_close(version: int, dcid: bytes, scid: bytes, code: int) -> bytes:
    """A server Initial carrying CONNECTION_CLOSE (kernel refuse_close): sent
    to the client's SCID (``dcid``) from its DCID (``scid``), whose Initial
    keys protect it."""
    send, _recv = initial_keys(version, scid, False)
    payload = ConnectionCloseFrame(code, 0, b"").encode()
    payload += bytes(max(0, 20 - len(payload)))
    header = encode_long_header(PacketType.INITIAL, version, dcid, scid, 0, 2,
                                len(payload), b"", send.tag_len)
    return protect(send, header, payload, 0)


def refuse_response(datagram: bytes, error_code: int = CONNECTION_REFUSED,
                    cid_len: int = 8) -> bytes | None:
    """An Initial CONNECTION_CLOSE refusing the client Initial in ``datagram``
    (RFC 9000 §5.2.2, e.g. a full accept backlog); None if it is not one."""
    try:
        hdr = parse_header(datagram, 0, cid_len)
    except PacketError:
        return None
    if hdr.packet_type != PacketType.INITIAL:
        return None
    return _initial_close(hdr.version, hdr.scid, hdr.dcid, error_code)


def stateless_response(datagram: bytes, remote: Any, local: Any, now: float,
                       listener: Any, *, cid_len: int = 8,
                       random: Callable[[int], bytes] = urandom) -> Decision:
    """Decide how to answer a datagram that matched no connection.

    ``listener`` is the listening ``QuicConnection`` (its config decides
    ``validate_peer_address``, its ``static_key`` seals tokens), or None for
    an endpoint without one (then only stateless resets are sent, using no
    key: nothing).  Returns ``Decision(accept=True)`` for a client Initial
    that may create a connection; a Version Negotiation (RFC 9000 §6.1), a
    Retry (§8.1.2), an INVALID_TOKEN close (§8.1.3) or a Stateless Reset
    (§10.3) as ``response``; or neither (drop).
    """
    n = len(datagram)
    if n < 7:
        return Decision(False, None, "runt")
    key: bytes | None = getattr(listener, "static_key", None)
    first = datagram[0]
    if not first & 0x80:
        # short header: stateless reset, smaller than what triggered it (§10.3.3)
        if key is None or n <= RESET_MIN_LEN or n < 1 + cid_len:
            return Decision(False, None, "short header")
        token = reset_token(key, bytes(datagram[1:1 + cid_len]))
        length = min(RESET_DEF_LEN, n - 1)
        return Decision(False, build_stateless_reset(token, length, random(length)),
                        "stateless reset")
    try:
        hdr = parse_header(datagram, 0, cid_len, allow_zero_fixed_bit=True)
    except PacketError:
        return Decision(False, None, "bad header")
    if hdr.packet_type == PacketType.VERSION_NEGOTIATION:
        return Decision(False, None, "version negotiation")  # §6.1: never answer
    if hdr.packet_type == PacketType.UNKNOWN_VERSION:
        if n < MIN_INITIAL_SIZE:
            return Decision(False, None, "small unknown-version datagram")  # §6.1
        versions = list(SUPPORTED_VERSIONS)
        cfg = getattr(listener, "cfg_version", 0)
        if cfg in versions:  # the preferred version first
            versions.remove(cfg)
            versions.insert(0, cfg)
        # a reserved version (RFC 9000 §15) keeps clients from relying on the list
        grease = (int.from_bytes(random(4), "big") & 0xF0F0F0F0) | 0x0A0A0A0A
        resp = build_version_negotiation(hdr.scid, hdr.dcid, versions + [grease],
                                         0x80 | (random(1)[0] & 0x7F))
        return Decision(False, resp, "version negotiation")
    if listener is None:
        return Decision(False, None, "no listener")
    if hdr.packet_type != PacketType.INITIAL:
        if key is None or hdr.packet_type == PacketType.RETRY:
            return Decision(False, None, "not an Initial")
        length = min(RESET_DEF_LEN, n - 1)
        if n <= RESET_MIN_LEN:
            return Decision(False, None, "too small")
        token = reset_token(key, hdr.dcid)
        return Decision(False, build_stateless_reset(token, length, random(length)),
                        "stateless reset")
    if n < MIN_INITIAL_SIZE:
        return Decision(False, None, "undersized Initial")  # RFC 9000 §14.1
    if len(hdr.dcid) < 8:
        return Decision(False, None, "short DCID")  # RFC 9000 §7.2
    if not getattr(listener, "validate_peer_address", 0) or key is None:
        return Decision(True, None, "accept")
    if hdr.token:
        opened = open_token(key, hdr.token, remote, now)
        if opened is not None:
            return Decision(True, None, "token valid")
        if hdr.token[0] == TOKEN_RETRY:
            # §8.1.3: an invalid Retry token: the client will not take another
            return Decision(False, _initial_close(hdr.version, hdr.scid, hdr.dcid,
                                                  INVALID_TOKEN), "invalid retry token")
    # §8.1.2: ask the client to prove its address
    scid = random(cid_len)
    token = make_token(key, TOKEN_RETRY, remote, now, hdr.dcid, random)
    return Decision(False, build_retry(hdr.version, hdr.scid, scid, hdr.dcid, token), "retry")
