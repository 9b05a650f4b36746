"""QUIC packet headers, packet numbers and packet protection (RFC 9000 §17, RFC 9001 §5).

Public API (stable):

- ``SUPPORTED_VERSIONS = (VERSION_1, VERSION_2)``; ``MAX_CID_LEN = 20``;
  ``MIN_INITIAL_SIZE = 1200``; ``STATELESS_RESET_TOKEN_LEN = 16``.
- ``PacketType(IntEnum)``: INITIAL=0, ZERO_RTT=1, HANDSHAKE=2, RETRY=3,
  VERSION_NEGOTIATION=4, ONE_RTT=5, and UNKNOWN_VERSION=6 (extension: a long
  header of a version we do not support; only dcid/scid/version are valid and
  the endpoint should answer with Version Negotiation).
- ``long_type_bits(version, packet_type) -> int`` and
  ``packet_type_from_bits(version, bits) -> PacketType``: the 2-bit long
  header type field, v1 and v2 (RFC 9369 §3.2).
- ``PacketError(ValueError)``: malformed packet -> drop it (RFC 9000 §12.2
  allows dropping the rest of a datagram too).
- ``Header`` dataclass: ``first_byte`` (still protected), ``is_long``,
  ``version`` (0 for short headers), ``packet_type``, ``dcid``, ``scid``
  (b"" for short), ``token`` (Initial token / Retry token), ``offset`` (start
  of the packet in buf), ``pn_offset`` (start of the protected packet number),
  ``packet_end`` (end of this packet in buf: loop on it for coalesced
  packets), ``integrity_tag`` (Retry), ``supported_versions`` (VN).
- ``parse_header(buf, offset=0, short_dcid_len=0, *, allow_zero_fixed_bit=False)
  -> Header``: PacketError if malformed.  The fixed bit must be 1 unless
  ``allow_zero_fixed_bit`` (RFC 9287 grease_quic_bit negotiated).
- ``packet_number_length(full_pn, largest_acked: int | None) -> int`` (1..4,
  RFC 9000 §17.1, App. A.2); ``encode_packet_number(full_pn, largest_acked)
  -> bytes`` (the truncated packet number); ``decode_packet_number(truncated,
  pn_len, largest_pn) -> int`` (App. A.3; ``pn_len`` in BYTES; pass
  ``largest_pn=-1`` when nothing was received yet).
- ``encode_long_header(packet_type, version, dcid, scid, pn, pn_len,
  payload_len, token=b"", tag_len=16) -> bytes`` (unprotected header ending
  with the truncated pn; Length = pn_len + payload_len + tag_len, written as
  a 2-byte varint when < 16384, else 4 bytes).
  ``encode_short_header(dcid, pn, pn_len, key_phase=0, spin=0,
  fixed_bit=1) -> bytes``.
- ``min_payload_len(pn_len) -> int``: the smallest plaintext payload that
  leaves room for the header-protection sample (pad with PADDING frames).
- ``initial_padding(datagram_len) -> int``: PADDING bytes to add so a
  datagram carrying an Initial reaches 1200 bytes (RFC 9000 §14.1).
- ``protect(key, header, payload, pn) -> bytes``: AEAD-encrypt ``payload``
  with the unprotected ``header`` as AAD and the FULL packet number ``pn`` in
  the nonce, then apply header protection; returns the whole packet.
  ``header`` must end with the truncated packet number and its first byte
  carries pn_len - 1 in the low two bits.
- Receiving, two steps so the caller can pick the 1-RTT key by key phase:
  ``remove_header_protection(key, buf, header) -> Unmasked`` (any key with the
  right hp key; PacketError if too short) giving ``first_byte`` (unmasked),
  ``pn_len``, ``truncated_pn``, ``aad`` (the unprotected header bytes),
  ``key_phase`` (0/1, short headers; 0 for long); then
  ``decrypt_payload(key, buf, header, unmasked, pn) -> bytes`` (CryptoError if
  authentication fails; QuicError(PROTOCOL_VIOLATION) for non-zero reserved
  bits after successful decryption, RFC 9000 §17.2/§17.3.1).
  ``unprotect(key, buf, header, largest_pn) -> tuple[int, int, bytes]`` does
  both with one key: (unmasked first byte, full pn, plaintext payload).
- ``build_retry(version, dcid, scid, odcid, token) -> bytes`` (with the
  integrity tag); ``verify_retry(version, odcid, buf, header) -> bool``.
- ``build_version_negotiation(dcid, scid, versions, first_byte=0xC0) ->
  bytes`` (dcid/scid as they appear in the VN packet, i.e. the client's
  scid/dcid); ``parse_version_negotiation(buf) -> tuple[bytes, bytes,
  list[int]]`` (dcid, scid, versions).
- ``stateless_reset_token_of(datagram) -> bytes | None`` (last 16 bytes of a
  datagram that could be a Stateless Reset, RFC 9000 §10.3);
  ``is_stateless_reset(datagram, tokens) -> bool``;
  ``build_stateless_reset(token, length, random_bytes) -> bytes``.
"""

from __future__ import annotations

import hmac
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from .common import BufferReadError, decode_varint, encode_varint, encode_varint_len
from .crypto import VERSION_1, VERSION_2, PacketKey, retry_integrity_tag
from .errors import PROTOCOL_VIOLATION, QuicError

__all__ = [
    "MAX_CID_LEN",
    "MIN_INITIAL_SIZE",
    "STATELESS_RESET_TOKEN_LEN",
    "SUPPORTED_VERSIONS",
    "Header",
    "PacketError",
    "PacketType",
    "Unmasked",
    "build_retry",
    "build_stateless_reset",
    "build_version_negotiation",
    "decode_packet_number",
    "decrypt_payload",
    "encode_long_header",
    "encode_packet_number",
    "encode_short_header",
    "initial_padding",
    "is_stateless_reset",
    "long_type_bits",
    "min_payload_len",
    "packet_number_length",
    "packet_type_from_bits",
    "parse_header",
    "parse_version_negotiation",
    "protect",
    "remove_header_protection",
    "stateless_reset_token_of",
    "unprotect",
    "verify_retry",
]

SUPPORTED_VERSIONS = (VERSION_1, VERSION_2)
MAX_CID_LEN = 20
MIN_INITIAL_SIZE = 1200
STATELESS_RESET_TOKEN_LEN = 16
_SAMPLE_LEN = 16
_TAG_LEN = 16


class PacketType(IntEnum):
    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    RETRY = 3
    VERSION_NEGOTIATION = 4
    ONE_RTT = 5
    UNKNOWN_VERSION = 6


class PacketError(ValueError):
    """A packet that cannot be parsed; it is dropped."""


# RFC 9000 §17.2 (v1) and RFC 9369 §3.2 (v2) long-header type bits.
_V1_TYPES = (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE, PacketType.RETRY)
_V2_TYPES = (PacketType.RETRY, PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE)
_V1_BITS = {t: i for i, t in enumerate(_V1_TYPES)}
_V2_BITS = {t: i for i, t in enumerate(_V2_TYPES)}


def long_type_bits(version: int, packet_type: PacketType) -> int:
    """Return the 2-bit Long Packet Type for ``packet_type`` in ``version``."""
    table = _V2_BITS if version == VERSION_2 else _V1_BITS
    try:
        return table[packet_type]
    except KeyError:
        raise ValueError(f"{packet_type!r} has no long header type bits") from None


def packet_type_from_bits(version: int, bits: int) -> PacketType:
    """Return the packet type of the 2-bit Long Packet Type ``bits``."""
    return (_V2_TYPES if version == VERSION_2 else _V1_TYPES)[bits & 3]


@dataclass(slots=True)
class Header:
    """A parsed (still header-protected) packet header."""

    first_byte: int
    is_long: bool
    version: int
    packet_type: PacketType
    dcid: bytes
    scid: bytes = b""
    token: bytes = b""
    offset: int = 0
    pn_offset: int = 0
    packet_end: int = 0
    integrity_tag: bytes = b""
    supported_versions: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Unmasked:
    """Result of header-protection removal."""

    first_byte: int
    pn_len: int
    truncated_pn: int
    aad: bytes
    key_phase: int


# members as module constants: cheaper to load than from the Enum class (3.11)
_PT_ONE_RTT, _PT_RETRY, _PT_INITIAL = PacketType.ONE_RTT, PacketType.RETRY, PacketType.INITIAL


def parse_header(
    buf: bytes,
    offset: int = 0,
    short_dcid_len: int = 0,
    *,
    allow_zero_fixed_bit: bool = False,
) -> Header:
    """Parse the packet header starting at ``buf[offset]`` (RFC 9000 §17)."""
    end = len(buf)
    if offset >= end:
        raise PacketError("empty packet")
    first = buf[offset]
    if not first & 0x80:
        # Short header (RFC 9000 §17.3.1)
        if not first & 0x40 and not allow_zero_fixed_bit:
            raise PacketError("fixed bit is zero")
        pn_offset = offset + 1 + short_dcid_len
        if pn_offset > end:
            raise PacketError("truncated short header")
        return Header(
            first_byte=first,
            is_long=False,
            version=0,
            packet_type=_PT_ONE_RTT,
            dcid=bytes(buf[offset + 1 : pn_offset]),
            offset=offset,
            pn_offset=pn_offset,
            packet_end=end,
        )
    # Long header (RFC 9000 §17.2, RFC 8999 §5.1)
    pos = offset + 6
    if pos > end:
        raise PacketError("truncated long header")
    version = int.from_bytes(buf[offset + 1 : offset + 5], "big")
    dcid_len = buf[offset + 5]
    dcid = bytes(buf[pos : pos + dcid_len])
    pos += dcid_len
    if pos >= end:
        raise PacketError("truncated long header")
    scid_len = buf[pos]
    pos += 1
    scid = bytes(buf[pos : pos + scid_len])
    pos += scid_len
    if pos > end:
        raise PacketError("truncated long header")
    if version == 0:
        # Version Negotiation (RFC 9000 §17.2.1)
        rest = buf[pos:end]
        if not rest or len(rest) % 4:
            raise PacketError("malformed version negotiation")
        versions = [int.from_bytes(rest[i : i + 4], "big") for i in range(0, len(rest), 4)]
        return Header(
            first_byte=first,
            is_long=True,
            version=0,
            packet_type=PacketType.VERSION_NEGOTIATION,
            dcid=dcid,
            scid=scid,
            offset=offset,
            pn_offset=end,
            packet_end=end,
            supported_versions=versions,
        )
    if version not in SUPPORTED_VERSIONS:
        return Header(
            first_byte=first,
            is_long=True,
            version=version,
            packet_type=PacketType.UNKNOWN_VERSION,
            dcid=dcid,
            scid=scid,
            offset=offset,
            pn_offset=pos,
            packet_end=end,
        )
    if dcid_len > MAX_CID_LEN or scid_len > MAX_CID_LEN:
        raise PacketError("connection ID too long")
    if not first & 0x40 and not allow_zero_fixed_bit:
        raise PacketError("fixed bit is zero")
    ptype = packet_type_from_bits(version, first >> 4)
    token = b""
    try:
        if ptype == _PT_RETRY:
            # RFC 9000 §17.2.5: token then a 16-byte integrity tag.
            if end - pos < _TAG_LEN:
                raise PacketError("truncated retry")
            return Header(
                first_byte=first,
                is_long=True,
                version=version,
                packet_type=ptype,
                dcid=dcid,
                scid=scid,
                token=bytes(buf[pos : end - _TAG_LEN]),
                offset=offset,
                pn_offset=end,
                packet_end=end,
                integrity_tag=bytes(buf[end - _TAG_LEN : end]),
            )
        if ptype == _PT_INITIAL:
            token_len, pos = decode_varint(buf, pos)
            if pos + token_len > end:
                raise PacketError("truncated token")
            token = bytes(buf[pos : pos + token_len])
            pos += token_len
        length, pos = decode_varint(buf, pos)
    except BufferReadError:
        raise PacketError("truncated long header") from None
    packet_end = pos + length
    if packet_end > end:
        raise PacketError("packet length exceeds datagram")
    return Header(
        first_byte=first,
        is_long=True,
        version=version,
        packet_type=ptype,
        dcid=dcid,
        scid=scid,
        token=token,
        offset=offset,
        pn_offset=pos,
        packet_end=packet_end,
    )


def packet_number_length(full_pn: int, largest_acked: int | None) -> int:
    """Bytes needed to send ``full_pn`` (RFC 9000 §17.1, App. A.2)."""
    num_unacked = full_pn + 1 if largest_acked is None else full_pn - largest_acked
    # Twice the range of unacknowledged packets, plus one bit.
    min_bits = num_unacked.bit_length() + 1
    n = (min_bits + 7) // 8
    if n < 1:
        return 1
    if n > 4:
        raise ValueError("too many unacknowledged packets for a 4-byte packet number")
    return n


def encode_packet_number(full_pn: int, largest_acked: int | None) -> bytes:
    """Return the truncated packet number bytes for ``full_pn``."""
    n = packet_number_length(full_pn, largest_acked)
    return (full_pn & ((1 << (8 * n)) - 1)).to_bytes(n, "big")


def decode_packet_number(truncated_pn: int, pn_len: int, largest_pn: int) -> int:
    """Recover the full packet number (RFC 9000 App. A.3); ``pn_len`` in bytes."""
    pn_nbits = pn_len * 8
    expected_pn = largest_pn + 1
    pn_win = 1 << pn_nbits
    pn_hwin = pn_win // 2
    pn_mask = pn_win - 1
    candidate_pn = (expected_pn & ~pn_mask) | truncated_pn
    if candidate_pn <= expected_pn - pn_hwin and candidate_pn < (1 << 62) - pn_win:
        return candidate_pn + pn_win
    if candidate_pn > expected_pn + pn_hwin and candidate_pn >= pn_win:
        return candidate_pn - pn_win
    return candidate_pn


def encode_long_header(
    packet_type: PacketType,
    version: int,
    dcid: bytes,
    scid: bytes,
    pn: int,
    pn_len: int,
    payload_len: int,
    token: bytes = b"",
    tag_len: int = _TAG_LEN,
) -> bytes:
    """Build an unprotected Initial/0-RTT/Handshake header ending with the pn."""
    if packet_type not in (PacketType.INITIAL, PacketType.ZERO_RTT, PacketType.HANDSHAKE):
        raise ValueError("use build_retry/build_version_negotiation for those types")
    if not 1 <= pn_len <= 4:
        raise ValueError("pn_len must be 1..4")
    first = 0xC0 | (long_type_bits(version, packet_type) << 4) | (pn_len - 1)
    length = pn_len + payload_len + tag_len
    parts = [
        bytes((first,)),
        version.to_bytes(4, "big"),
        bytes((len(dcid),)),
        dcid,
        bytes((len(scid),)),
        scid,
    ]
    if packet_type == PacketType.INITIAL:
        parts.append(encode_varint(len(token)))
        parts.append(token)
    # A fixed-size Length lets callers size packets before encrypting.
    parts.append(encode_varint_len(length, 2 if length < 0x4000 else 4))
    parts.append((pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big"))
    return b"".join(parts)


def encode_short_header(
    dcid: bytes, pn: int, pn_len: int, key_phase: int = 0, spin: int = 0, fixed_bit: int = 1
) -> bytes:
    """Build an unprotected 1-RTT header (RFC 9000 §17.3.1) ending with the pn."""
    if not 1 <= pn_len <= 4:
        raise ValueError("pn_len must be 1..4")
    first = (
        (0x40 if fixed_bit else 0)
        | (0x20 if spin else 0)
        | (0x04 if key_phase else 0)
        | (pn_len - 1)
    )
    return (
        bytes((first,)) + dcid + (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    )


def min_payload_len(pn_len: int) -> int:
    """Smallest plaintext length so the HP sample fits (RFC 9001 §5.4.2)."""
    return max(0, 4 - pn_len + _SAMPLE_LEN - _TAG_LEN)


def initial_padding(datagram_len: int) -> int:
    """PADDING bytes needed to reach 1200 bytes (RFC 9000 §14.1)."""
    return max(0, MIN_INITIAL_SIZE - datagram_len)


def protect(key: PacketKey, header: bytes, payload: bytes, pn: int) -> bytes:
    """Encrypt ``payload`` and apply header protection (RFC 9001 §5.3, §5.4)."""
    first = header[0]
    pn_len = (first & 0x03) + 1
    pn_offset = len(header) - pn_len
    ciphertext = key.encrypt(pn, header, payload)
    sample_start = 4 - pn_len
    sample = ciphertext[sample_start : sample_start + _SAMPLE_LEN]
    if len(sample) < _SAMPLE_LEN:
        raise ValueError("payload too short for header protection sample")
    mask = key.hp_mask(sample)
    out = bytearray(header)
    out[0] = first ^ (mask[0] & (0x0F if first & 0x80 else 0x1F))
    for i in range(pn_len):
        out[pn_offset + i] ^= mask[1 + i]
    out += ciphertext
    return bytes(out)


def remove_header_protection(key: PacketKey, buf: bytes, header: Header) -> Unmasked:
    """Unmask the first byte and packet number of the packet ``header`` describes."""
    pn_offset = header.pn_offset
    sample_start = pn_offset + 4
    if sample_start + _SAMPLE_LEN > header.packet_end:
        raise PacketError("packet too short for header protection sample")
    mask = key.hp_mask(bytes(buf[sample_start : sample_start + _SAMPLE_LEN]))
    first = header.first_byte
    if first & 0x80:
        first ^= mask[0] & 0x0F
        key_phase = 0
    else:
        first ^= mask[0] & 0x1F
        key_phase = (first >> 2) & 1
    pn_len = (first & 0x03) + 1
    pn_end = pn_offset + pn_len
    truncated = int.from_bytes(buf[pn_offset:pn_end], "big") ^ int.from_bytes(
        mask[1 : 1 + pn_len], "big"
    )
    aad = (
        bytes((first,))
        + bytes(buf[header.offset + 1 : pn_offset])
        + truncated.to_bytes(pn_len, "big")
    )
    return Unmasked(first, pn_len, truncated, aad, key_phase)


def decrypt_payload(
    key: PacketKey, buf: bytes, header: Header, unmasked: Unmasked, pn: int
) -> bytes:
    """AEAD-decrypt the payload; CryptoError on failure (drop the packet)."""
    start = header.pn_offset + unmasked.pn_len
    payload = key.decrypt(pn, unmasked.aad, bytes(buf[start : header.packet_end]))
    # RFC 9000 §17.2 / §17.3.1: reserved bits must be zero once authenticated.
    reserved = 0x0C if header.is_long else 0x18
    if unmasked.first_byte & reserved:
        raise QuicError(PROTOCOL_VIOLATION, None, "reserved header bits set")
    return payload


def unprotect(
    key: PacketKey, buf: bytes, header: Header, largest_pn: int
) -> tuple[int, int, bytes]:
    """Remove protection with one key: (first byte, full pn, payload)."""
    unmasked = remove_header_protection(key, buf, header)
    pn = decode_packet_number(unmasked.truncated_pn, unmasked.pn_len, largest_pn)
    return unmasked.first_byte, pn, decrypt_payload(key, buf, header, unmasked, pn)


def build_retry(version: int, dcid: bytes, scid: bytes, odcid: bytes, token: bytes) -> bytes:
    """Build a Retry packet with its integrity tag (RFC 9000 §17.2.5)."""
    first = 0xC0 | (long_type_bits(version, PacketType.RETRY) << 4) | 0x0F
    pkt = (
        bytes((first,))
        + version.to_bytes(4, "big")
        + bytes((len(dcid),))
        + dcid
        + bytes((len(scid),))
        + scid
        + token
    )
    return pkt + retry_integrity_tag(version, odcid, pkt)


def verify_retry(version: int, odcid: bytes, buf: bytes, header: Header) -> bool:
    """True if the Retry packet in ``buf`` carries a valid integrity tag."""
    pkt = bytes(buf[header.offset : header.packet_end - _TAG_LEN])
    expected = retry_integrity_tag(version, odcid, pkt)
    return hmac.compare_digest(expected, header.integrity_tag)


def build_version_negotiation(
    dcid: bytes, scid: bytes, versions: Iterable[int], first_byte: int = 0xC0
) -> bytes:
    """Build a Version Negotiation packet (RFC 9000 §17.2.1; 0x40 set by default
    so it looks like it has a fixed bit)."""
    return (
        bytes((first_byte | 0x80,))
        + b"\x00\x00\x00\x00"
        + bytes((len(dcid),))
        + dcid
        + bytes((len(scid),))
        + scid
        + b"".join(v.to_bytes(4, "big") for v in versions)
    )


def parse_version_negotiation(buf: bytes) -> tuple[bytes, bytes, list[int]]:
    """Return (dcid, scid, versions) of a Version Negotiation packet."""
    h = parse_header(buf, 0)
    if h.packet_type != PacketType.VERSION_NEGOTIATION:
        raise PacketError("not a version negotiation packet")
    return h.dcid, h.scid, h.supported_versions


def stateless_reset_token_of(datagram: bytes) -> bytes | None:
    """The would-be Stateless Reset Token of a short-header datagram (RFC 9000 §10.3)."""
    # A reset looks like a short header packet of at least 21 bytes.
    if len(datagram) < 21 or datagram[0] & 0x80:
        return None
    return bytes(datagram[-STATELESS_RESET_TOKEN_LEN:])


def is_stateless_reset(datagram: bytes, tokens: Container[bytes]) -> bool:
    """True if the datagram ends with one of the peer's reset ``tokens``."""
    token = stateless_reset_token_of(datagram)
    return token is not None and token in tokens


def build_stateless_reset(token: bytes, length: int, random_bytes: bytes) -> bytes:
    """Build a Stateless Reset (RFC 9000 §10.3): ``random_bytes`` fills the
    unpredictable part and must hold at least ``length - 16`` bytes."""
    if len(token) != STATELESS_RESET_TOKEN_LEN:
        raise ValueError("token must be 16 bytes")
    length = max(length, 21)
    n = length - STATELESS_RESET_TOKEN_LEN
    if len(random_bytes) < n:
        raise ValueError("not enough random bytes")
    first = (random_bytes[0] & 0x3F) | 0x40
    return bytes((first,)) + bytes(random_bytes[1:n]) + token
