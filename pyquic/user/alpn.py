"""Read a client's first Initial packet on a listening endpoint.

The kernel picks the listening socket for a new connection by the ALPN list
in the ClientHello (net/quic/packet.c, ``quic_packet_parse_alpn``): it
decrypts the client's first Initial with the Initial keys derived from the
packet's Destination Connection ID, takes the CRYPTO frame at offset 0 and
walks the ClientHello to the ALPN extension. This module does the same for the
user backend's endpoint, and builds the Initial packet carrying a
CONNECTION_CLOSE(CONNECTION_REFUSED) sent when a listener's accept queue is
full (RFC 9000 §5.2.2).

Only the long-header parsing and the ClientHello walk live here; the packet
keys come from :mod:`pyquic.engine.crypto`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyquic.engine import crypto as _crypto

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF

_TLS_CLIENT_HELLO = 1
_TLS_EXT_ALPN = 16
_MAX_EXTENSIONS = 128
_ALPN_MAX_LEN = 128
_FRAME_PADDING = 0x00
_FRAME_PING = 0x01
_FRAME_CRYPTO = 0x06
_FRAME_CONNECTION_CLOSE = 0x1C
CONNECTION_REFUSED = 0x02


class InitialError(ValueError):
    """The datagram is not a client Initial this module can read."""


@dataclass
class LongHeader:
    """The invariant fields of a long-header packet (RFC 8999 §5.1)."""

    first_byte: int
    version: int
    dcid: bytes
    scid: bytes
    #: offset just after the SCID (where version-specific fields start)
    offset: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    # RFC 9000 §16: the two top bits give the length.
    if pos >= len(buf):
        raise InitialError("truncated varint")
    first = buf[pos]
    length = 1 << (first >> 6)
    if pos + length > len(buf):
        raise InitialError("truncated varint")
    value = first & 0x3F
    for i in range(1, length):
        value = (value << 8) | buf[pos + i]
    return value, pos + length


def _encode_varint(value: int) -> bytes:
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x40000000:
        return (value | 0x80000000).to_bytes(4, "big")
    return (value | 0xC000000000000000).to_bytes(8, "big")


def parse_long_header(data: bytes) -> LongHeader:
    """Parse the version-independent part of a long header."""
    if len(data) < 7 or not data[0] & 0x80:
        raise InitialError("not a long header")
    version = int.from_bytes(data[1:5], "big")
    dlen = data[5]
    pos = 6 + dlen
    if dlen > 20 or pos >= len(data):
        raise InitialError("bad DCID length")
    dcid = bytes(data[6:pos])
    slen = data[pos]
    pos += 1
    if slen > 20 or pos + slen > len(data):
        raise InitialError("bad SCID length")
    scid = bytes(data[pos : pos + slen])
    return LongHeader(data[0], version, dcid, scid, pos + slen)


def is_initial(hdr: LongHeader) -> bool:
    """True for an Initial packet of QUIC v1 or v2 (RFC 9000 §17.2.2, RFC 9369 §3.2)."""
    ptype = (hdr.first_byte >> 4) & 0x03
    if hdr.version == VERSION_1:
        return ptype == 0
    if hdr.version == VERSION_2:
        return ptype == 1
    return False


def decrypt_client_initial(data: bytes) -> tuple[LongHeader, bytes]:
    """Remove header protection and decrypt the first (Initial) packet of ``data``.

    Returns the header and the plaintext frames. RFC 9001 §5.2 (Initial
    keys), §5.4 (header protection).
    """
    hdr = parse_long_header(data)
    if not is_initial(hdr):
        raise InitialError("not an Initial packet")
    pos = hdr.offset
    token_len, pos = _varint(data, pos)
    pos += token_len
    length, pos = _varint(data, pos)
    pn_offset = pos
    if pn_offset + length > len(data) or length < 20:
        raise InitialError("bad Initial length")
    try:
        # the server's receive key: the same (cached) one its connection gets
        key = _crypto.initial_keys(hdr.version, hdr.dcid, False)[1]
    except ValueError as exc:
        raise InitialError(str(exc)) from None
    sample = bytes(data[pn_offset + 4 : pn_offset + 20])
    mask = key.hp_mask(sample)
    first = data[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset : pn_offset + pn_len], mask[1:]))
    pn = int.from_bytes(pn_bytes, "big")
    header = bytes((first,)) + bytes(data[1:pn_offset]) + pn_bytes
    end = pn_offset + length
    try:
        payload = key.decrypt(pn, header, bytes(data[pn_offset + pn_len : end]))
    except Exception as exc:  # CryptoError: not authentic, not ours to read
        raise InitialError("Initial decryption failed") from exc
    return hdr, payload


def _first_crypto_data(payload: bytes) -> bytes | None:
    """The data of the CRYPTO frame at offset 0, after PADDING/PING frames."""
    pos = 0
    n = len(payload)
    while pos < n and payload[pos] in (_FRAME_PADDING, _FRAME_PING):
        pos += 1
    if pos >= n or payload[pos] != _FRAME_CRYPTO:
        return None
    offset, pos = _varint(payload, pos + 1)
    if offset:
        return None
    length, pos = _varint(payload, pos)
    if pos + length > n:
        return None
    return payload[pos : pos + length]


def client_hello_alpns(hello: bytes) -> list[bytes] | None:
    """The ALPN protocol names of a ClientHello (RFC 8446 §4.1.2, RFC 7301 §3.1).

    Returns None when the message has no (complete) ALPN extension, which the
    kernel routes to a listener without ALPN. Raises InitialError when the
    message is malformed.
    """
    n = len(hello)
    if n < 4 or hello[0] != _TLS_CLIENT_HELLO:
        raise InitialError("not a ClientHello")
    mlen = int.from_bytes(hello[1:4], "big")
    end = min(n, 4 + mlen)
    pos = 4 + 2 + 32  # legacy_version, random
    if pos >= end:
        raise InitialError("short ClientHello")
    if hello[pos] != 0:  # legacy_session_id must be empty in QUIC
        raise InitialError("session id in ClientHello")
    pos += 1
    for width in (2, 1):  # cipher_suites, legacy_compression_methods
        if pos + width > end:
            raise InitialError("short ClientHello")
        skip = int.from_bytes(hello[pos : pos + width], "big")
        pos += width + skip
        if pos > end:
            raise InitialError("short ClientHello")
    if pos + 2 > end:
        raise InitialError("short ClientHello")
    ext_end = min(end, pos + 2 + int.from_bytes(hello[pos : pos + 2], "big"))
    pos += 2
    count = 0
    while ext_end - pos >= 4:
        count += 1
        if count > _MAX_EXTENSIONS:
            raise InitialError("too many extensions")
        etype = int.from_bytes(hello[pos : pos + 2], "big")
        elen = int.from_bytes(hello[pos + 2 : pos + 4], "big")
        pos += 4
        if pos + elen > ext_end:
            return None  # incomplete: the rest is in a later packet
        if etype == _TLS_EXT_ALPN:
            if elen > _ALPN_MAX_LEN or elen < 2:
                raise InitialError("bad ALPN extension")
            llen = int.from_bytes(hello[pos : pos + 2], "big")
            p = pos + 2
            stop = p + llen
            if stop > pos + elen:
                raise InitialError("bad ALPN list")
            names: list[bytes] = []
            while p < stop:
                ln = hello[p]
                if p + 1 + ln > stop:
                    raise InitialError("bad ALPN list")
                names.append(bytes(hello[p + 1 : p + 1 + ln]))
                p += 1 + ln
            return names
        pos += elen
    return None


def initial_alpns(data: bytes) -> list[bytes] | None:
    """ALPN names offered in a client's first Initial datagram (None: no ALPN)."""
    _, payload = decrypt_client_initial(data)
    hello = _first_crypto_data(payload)
    if hello is None:
        return None
    return client_hello_alpns(hello)


def build_refuse(data: bytes, errcode: int = CONNECTION_REFUSED) -> bytes:
    """An Initial packet closing the connection the client Initial ``data`` opens.

    Sent by a listener that cannot queue the connection (RFC 9000 §5.2.2). The
    SCID is the client's original DCID, the DCID the client's SCID, and the
    frame a transport CONNECTION_CLOSE (RFC 9000 §19.19).
    """
    hdr = parse_long_header(data)
    if not is_initial(hdr):
        raise InitialError("not an Initial packet")
    try:
        key = _crypto.initial_keys(hdr.version, hdr.dcid, False)[0]
    except ValueError as exc:
        raise InitialError(str(exc)) from None
    frame = (
        bytes((_FRAME_CONNECTION_CLOSE,))
        + _encode_varint(errcode)
        + _encode_varint(0)
        + _encode_varint(0)
    )
    # Enough payload for a 16-byte header-protection sample (RFC 9001 §5.4.2).
    frame += bytes(max(0, 20 - len(frame)))
    pn = 0
    pn_len = 1
    ptype = 0 if hdr.version == VERSION_1 else 1
    first = 0xC0 | (ptype << 4) | (pn_len - 1)
    length = pn_len + len(frame) + key.tag_len
    header = (
        bytes((first,))
        + hdr.version.to_bytes(4, "big")
        + bytes((len(hdr.scid),))
        + hdr.scid
        + bytes((len(hdr.dcid),))
        + hdr.dcid
        + _encode_varint(0)  # token length
        + _encode_varint(length)
    )
    pn_offset = len(header)
    header += pn.to_bytes(pn_len, "big")
    sealed = key.encrypt(pn, header, frame)
    sample = sealed[4 - pn_len : 20 - pn_len]
    mask = key.hp_mask(sample)
    out = bytearray(header + sealed)
    out[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        out[pn_offset + i] ^= mask[1 + i]
    return bytes(out)

