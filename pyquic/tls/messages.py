"""TLS 1.3 handshake message codecs for QUIC (RFC 8446 §4, RFC 9001 §8).

Every decoder takes the message *body* (without the 4-byte handshake header)
and raises :class:`TlsAlert` with the alert RFC 8446 prescribes for the fault
(``decode_error`` for bad framing, ``illegal_parameter`` for a well-formed but
forbidden value, ``missing_extension`` for an absent mandatory extension...).
Encoders return the full message including the handshake header, which is what
goes into the transcript and onto the wire.

QUIC rules baked in (RFC 9001 §8): no middlebox-compatibility mode (empty
legacy_session_id), the transport-parameters extension 0x39 is carried as
opaque bytes, EndOfEarlyData and KeyUpdate are never used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

# ---------------------------------------------------------------- constants


class HandshakeType(IntEnum):
    """RFC 8446 §4 handshake message types."""

    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    END_OF_EARLY_DATA = 5
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    CERTIFICATE_REQUEST = 13
    CERTIFICATE_VERIFY = 15
    FINISHED = 20
    KEY_UPDATE = 24
    MESSAGE_HASH = 254


class ExtensionType(IntEnum):
    """Extension code points used here (RFC 8446 §4.2, RFC 7301, RFC 9001)."""

    SERVER_NAME = 0
    SUPPORTED_GROUPS = 10
    SIGNATURE_ALGORITHMS = 13
    ALPN = 16
    PRE_SHARED_KEY = 41
    EARLY_DATA = 42
    SUPPORTED_VERSIONS = 43
    COOKIE = 44
    PSK_KEY_EXCHANGE_MODES = 45
    CERTIFICATE_AUTHORITIES = 47
    POST_HANDSHAKE_AUTH = 49
    SIGNATURE_ALGORITHMS_CERT = 50
    KEY_SHARE = 51
    QUIC_TRANSPORT_PARAMETERS = 0x39


class CipherSuite(IntEnum):
    """TLS 1.3 cipher suites supported for QUIC (RFC 8446 §B.4)."""

    AES_128_GCM_SHA256 = 0x1301
    AES_256_GCM_SHA384 = 0x1302
    CHACHA20_POLY1305_SHA256 = 0x1303


class Group(IntEnum):
    """Named groups (RFC 8446 §4.2.7)."""

    SECP256R1 = 0x0017
    SECP384R1 = 0x0018
    X25519 = 0x001D


class SignatureScheme(IntEnum):
    """Signature schemes (RFC 8446 §4.2.3)."""

    RSA_PKCS1_SHA256 = 0x0401
    RSA_PKCS1_SHA384 = 0x0501
    RSA_PKCS1_SHA512 = 0x0601
    ECDSA_SECP256R1_SHA256 = 0x0403
    ECDSA_SECP384R1_SHA384 = 0x0503
    ECDSA_SECP521R1_SHA512 = 0x0603
    RSA_PSS_RSAE_SHA256 = 0x0804
    RSA_PSS_RSAE_SHA384 = 0x0805
    RSA_PSS_RSAE_SHA512 = 0x0806
    ED25519 = 0x0807


class PskKeyExchangeMode(IntEnum):
    """RFC 8446 §4.2.9."""

    PSK_KE = 0
    PSK_DHE_KE = 1


class AlertDescription(IntEnum):
    """TLS alerts (RFC 8446 §6); QUIC sends them as CRYPTO_ERROR 0x100+alert."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


def enum_members(enum_cls: type[Enum]) -> Any:
    """A plain class holding ``enum_cls``'s members as attributes: on Python
    3.11 an attribute load from an Enum class costs several times one from a
    plain class, and the handshake compares types and states often."""
    return type(f"_{enum_cls.__name__}Members", (), {m.name: m for m in enum_cls})


_E: Any = enum_members(ExtensionType)

TLS_VERSION_1_2 = 0x0303
TLS_VERSION_1_3 = 0x0304

#: ServerHello.random of a HelloRetryRequest (RFC 8446 §4.1.3).
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

#: RFC 9001 §4.6.1: max_early_data_size in a QUIC NewSessionTicket.
QUIC_MAX_EARLY_DATA = 0xFFFFFFFF


class TlsAlert(Exception):
    """A fatal TLS alert; QUIC reports it as CRYPTO_ERROR 0x100 + alert (RFC 9001 §4.8)."""

    def __init__(self, description: int, reason: str = "", quic_error: int | None = None) -> None:
        self.description = int(description)
        self.reason = reason
        self._quic_error = quic_error
        try:
            name = AlertDescription(self.description).name
        except ValueError:
            name = f"alert {self.description}"
        super().__init__(f"{name}: {reason}" if reason else name)

    @property
    def error_code(self) -> int:
        """The QUIC transport error: CRYPTO_ERROR 0x100+alert (RFC 9001 §4.8) unless
        a QUIC rule names another code (e.g. PROTOCOL_VIOLATION, RFC 9001 §8.4)."""
        return self._quic_error if self._quic_error is not None else 0x100 + self.description


def _decode_error(what: str) -> TlsAlert:
    return TlsAlert(AlertDescription.decode_error, what)


def _illegal(what: str) -> TlsAlert:
    return TlsAlert(AlertDescription.illegal_parameter, what)


# ---------------------------------------------------------------- primitives


#: big-endian uint16 arrays of the usual list lengths
_U16S = {n: struct.Struct(f">{n}H") for n in range(1, 33)}


class Reader:
    """Bounds-checked reader; any overrun is a decode_error (RFC 8446 §6.2)."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def eof(self) -> bool:
        return self.pos >= self.end

    def remaining(self) -> int:
        return self.end - self.pos

    def uint(self, size: int) -> int:
        pos = self.pos
        if pos + size > self.end:
            raise _decode_error("message truncated")
        self.pos = pos + size
        return int.from_bytes(self.buf[pos : pos + size], "big")

    def raw(self, size: int) -> bytes:
        pos = self.pos
        if pos + size > self.end:
            raise _decode_error("message truncated")
        self.pos = pos + size
        return bytes(self.buf[pos : pos + size])

    def vec(self, len_size: int, min_len: int = 0) -> bytes:
        # uint(len_size) then raw(n), inline (the same checks in the same order)
        pos = self.pos
        start = pos + len_size
        if start > self.end:
            raise _decode_error("message truncated")
        n = int.from_bytes(self.buf[pos:start], "big")
        if n < min_len:
            raise _decode_error("vector too short")
        stop = start + n
        if stop > self.end:
            raise _decode_error("message truncated")
        self.pos = stop
        return bytes(self.buf[start:stop])

    def sub(self, len_size: int, min_len: int = 0) -> Reader:
        pos = self.pos
        start = pos + len_size
        if start > self.end:
            raise _decode_error("message truncated")
        n = int.from_bytes(self.buf[pos:start], "big")
        if n < min_len:
            raise _decode_error("vector too short")
        stop = start + n
        if stop > self.end:
            raise _decode_error("message truncated")
        self.pos = stop
        return Reader(self.buf, start, stop)

    def uint_list(self, len_size: int, item_size: int, min_len: int = 0) -> list[int]:
        data = self.vec(len_size, min_len)
        if len(data) % item_size:
            raise _decode_error("bad list length")
        if item_size == 2:  # cipher suites, groups, signature schemes, versions
            count = len(data) >> 1
            return list((_U16S.get(count) or struct.Struct(f">{count}H")).unpack(data))
        return [
            int.from_bytes(data[i : i + item_size], "big") for i in range(0, len(data), item_size)
        ]

    def done(self) -> None:
        if self.pos != self.end:
            raise _decode_error("trailing bytes")


def _u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def _u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def _u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def vec8(data: bytes) -> bytes:
    return _u8(len(data)) + data


def vec16(data: bytes) -> bytes:
    return _u16(len(data)) + data


def vec24(data: bytes) -> bytes:
    return _u24(len(data)) + data


def _u16_list(values: list[int]) -> bytes:
    return vec16(b"".join(_u16(v) for v in values))


def handshake_message(msg_type: int, body: bytes) -> bytes:
    """Frame a handshake message: type(1) length(3) body (RFC 8446 §4)."""
    return _u8(msg_type) + _u24(len(body)) + body


def split_messages(buf: bytes | bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Cut complete handshake messages off ``buf``.

    Returns ``([(type, full_message_bytes)], consumed)``; a partial tail is left.
    """
    out: list[tuple[int, bytes]] = []
    pos = 0
    n = len(buf)
    while n - pos >= 4:
        length = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        if n - pos - 4 < length:
            break
        out.append((buf[pos], bytes(buf[pos : pos + 4 + length])))
        pos += 4 + length
    return out, pos


def _encode_extensions(exts: list[tuple[int, bytes]]) -> bytes:
    return vec16(b"".join(_u16(t) + vec16(d) for t, d in exts))


def _decode_extensions(r: Reader) -> list[tuple[int, bytes]]:
    block = r.sub(2)
    seen: set[int] = set()
    out: list[tuple[int, bytes]] = []
    # type(2) and length(2) read in place (the Reader's checks, inline)
    buf, pos, end = block.buf, block.pos, block.end
    while pos < end:
        if pos + 4 > end:
            raise _decode_error("message truncated")
        etype = buf[pos] << 8 | buf[pos + 1]
        start = pos + 4
        pos = start + (buf[pos + 2] << 8 | buf[pos + 3])
        if pos > end:
            raise _decode_error("message truncated")
        # RFC 8446 §4.2: no more than one extension of the same type.
        if etype in seen:
            raise _illegal(f"duplicate extension {etype}")
        seen.add(etype)
        out.append((etype, bytes(buf[start:pos])))
    return out


# ---------------------------------------------------------------- extensions


def encode_server_name(name: str) -> bytes:
    """RFC 6066 §3: a server_name_list with one host_name entry."""
    host = name.encode("idna") if not name.isascii() else name.encode()
    return vec16(_u8(0) + vec16(host))


def decode_server_name(data: bytes) -> str:
    r = Reader(data)
    names = r.sub(2, 1)
    r.done()
    host: str | None = None
    while not names.eof():
        name_type = names.uint(1)
        value = names.vec(2, 1)
        if name_type == 0:
            if host is not None:
                raise _illegal("two host names")
            try:
                host = value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise _decode_error("server name not ASCII") from exc
    if host is None:
        raise _illegal("no host_name in server_name")
    return host


def encode_alpn(protocols: list[bytes]) -> bytes:
    return vec16(b"".join(vec8(p) for p in protocols))


def decode_alpn(data: bytes) -> list[bytes]:
    r = Reader(data)
    lst = r.sub(2, 2)
    r.done()
    out = []
    while not lst.eof():
        out.append(lst.vec(1, 1))  # RFC 7301 §3.1: empty names are not allowed
    return out


def encode_key_share_entry(group: int, key: bytes) -> bytes:
    return _u16(group) + vec16(key)


def _decode_key_share_entry(r: Reader) -> tuple[int, bytes]:
    group = r.uint(2)
    key = r.vec(2, 1)
    return group, key


@dataclass
class OfferedPsks:
    """The ClientHello pre_shared_key extension (RFC 8446 §4.2.11)."""

    identities: list[tuple[bytes, int]]  # (identity, obfuscated_ticket_age)
    binders: list[bytes]

    def encode(self) -> bytes:
        ids = b"".join(vec16(i) + _u32(age) for i, age in self.identities)
        return vec16(ids) + self.binders_encoded()

    def binders_encoded(self) -> bytes:
        return vec16(b"".join(vec8(b) for b in self.binders))

    @classmethod
    def decode(cls, data: bytes) -> OfferedPsks:
        r = Reader(data)
        ids_r = r.sub(2, 7)
        identities = []
        while not ids_r.eof():
            ident = ids_r.vec(2, 1)
            identities.append((ident, ids_r.uint(4)))
        b_r = r.sub(2, 33)
        binders = []
        while not b_r.eof():
            binders.append(b_r.vec(1, 32))
        r.done()
        # RFC 8446 §4.2.11: one binder per identity.
        if len(binders) != len(identities):
            raise _illegal("PSK binder count mismatch")
        return cls(identities, binders)


# ---------------------------------------------------------------- ClientHello


@dataclass
class ClientHello:
    """RFC 8446 §4.1.2 with the decoded extensions this stack uses."""

    random: bytes
    cipher_suites: list[int]
    legacy_session_id: bytes = b""
    server_name: str | None = None
    supported_groups: list[int] | None = None
    signature_algorithms: list[int] | None = None
    key_share: list[tuple[int, bytes]] | None = None
    supported_versions: list[int] | None = None
    psk_key_exchange_modes: list[int] | None = None
    alpn_protocols: list[bytes] | None = None
    quic_transport_parameters: bytes | None = None
    early_data: bool = False
    cookie: bytes | None = None
    pre_shared_key: OfferedPsks | None = None
    other_extensions: list[tuple[int, bytes]] = field(default_factory=list)

    def _extensions(self) -> list[tuple[int, bytes]]:
        E = _E
        exts: list[tuple[int, bytes]] = []
        if self.server_name is not None:
            exts.append((E.SERVER_NAME, encode_server_name(self.server_name)))
        if self.supported_versions is not None:
            exts.append((E.SUPPORTED_VERSIONS, vec8(b"".join(_u16(v) for v in self.supported_versions))))
        if self.supported_groups is not None:
            exts.append((E.SUPPORTED_GROUPS, _u16_list(self.supported_groups)))
        if self.signature_algorithms is not None:
            exts.append((E.SIGNATURE_ALGORITHMS, _u16_list(self.signature_algorithms)))
        if self.key_share is not None:
            exts.append(
                (E.KEY_SHARE, vec16(b"".join(encode_key_share_entry(g, k) for g, k in self.key_share)))
            )
        if self.alpn_protocols is not None:
            exts.append((E.ALPN, encode_alpn(self.alpn_protocols)))
        if self.cookie is not None:
            exts.append((E.COOKIE, vec16(self.cookie)))
        if self.psk_key_exchange_modes is not None:
            exts.append((E.PSK_KEY_EXCHANGE_MODES, vec8(bytes(self.psk_key_exchange_modes))))
        if self.quic_transport_parameters is not None:
            exts.append((E.QUIC_TRANSPORT_PARAMETERS, self.quic_transport_parameters))
        exts.extend(self.other_extensions)
        if self.early_data:
            exts.append((E.EARLY_DATA, b""))
        if self.pre_shared_key is not None:
            # RFC 8446 §4.2.11: pre_shared_key MUST be the last extension.
            exts.append((E.PRE_SHARED_KEY, self.pre_shared_key.encode()))
        return exts

    def encode(self) -> bytes:
        body = (
            _u16(TLS_VERSION_1_2)
            + self.random
            + vec8(self.legacy_session_id)
            + _u16_list(self.cipher_suites)
            + vec8(b"\x00")
            + _encode_extensions(self._extensions())
        )
        return handshake_message(HandshakeType.CLIENT_HELLO, body)

    @classmethod
    def decode(cls, body: bytes) -> ClientHello:
        E = _E
        r = Reader(body)
        r.uint(2)  # legacy_version: negotiation uses supported_versions (§4.2.1)
        random = r.raw(32)
        session_id = r.vec(1)
        if len(session_id) > 32:
            raise _decode_error("legacy_session_id too long")
        suites = r.uint_list(2, 2, 2)
        compression = r.vec(1, 1)
        # RFC 8446 §4.1.2: exactly one compression method, null.
        if compression != b"\x00":
            raise _illegal("compression methods must be [null]")
        exts = _decode_extensions(r) if not r.eof() else []
        r.done()
        ch = cls(random=random, cipher_suites=suites, legacy_session_id=session_id)
        for i, (etype, data) in enumerate(exts):
            if etype == E.SERVER_NAME:
                ch.server_name = decode_server_name(data)
            elif etype == E.SUPPORTED_GROUPS:
                x = Reader(data)
                ch.supported_groups = x.uint_list(2, 2, 2)
                x.done()
            elif etype == E.SIGNATURE_ALGORITHMS:
                x = Reader(data)
                ch.signature_algorithms = x.uint_list(2, 2, 2)
                x.done()
            elif etype == E.KEY_SHARE:
                x = Reader(data)
                shares = x.sub(2)
                x.done()
                entries = []
                while not shares.eof():
                    entries.append(_decode_key_share_entry(shares))
                # RFC 8446 §4.2.8: at most one share per group.
                if len({g for g, _ in entries}) != len(entries):
                    raise _illegal("duplicate key share group")
                ch.key_share = entries
            elif etype == E.SUPPORTED_VERSIONS:
                x = Reader(data)
                ch.supported_versions = x.uint_list(1, 2, 2)
                x.done()
            elif etype == E.PSK_KEY_EXCHANGE_MODES:
                x = Reader(data)
                ch.psk_key_exchange_modes = list(x.vec(1, 1))
                x.done()
            elif etype == E.ALPN:
                ch.alpn_protocols = decode_alpn(data)
            elif etype == E.QUIC_TRANSPORT_PARAMETERS:
                ch.quic_transport_parameters = data
            elif etype == E.EARLY_DATA:
                if data:
                    raise _decode_error("early_data in ClientHello must be empty")
                ch.early_data = True
            elif etype == E.COOKIE:
                x = Reader(data)
                ch.cookie = x.vec(2, 1)
                x.done()
            elif etype == E.PRE_SHARED_KEY:
                # RFC 8446 §4.2.11: must be the last extension.
                if i != len(exts) - 1:
                    raise _illegal("pre_shared_key is not the last extension")
                ch.pre_shared_key = OfferedPsks.decode(data)
            else:
                ch.other_extensions.append((etype, data))
        return ch


def truncate_client_hello(message: bytes, psk: OfferedPsks) -> bytes:
    """ClientHello up to (not including) the binders list (RFC 8446 §4.2.11.2)."""
    return message[: len(message) - len(psk.binders_encoded())]


# ---------------------------------------------------------------- ServerHello


@dataclass
class ServerHello:
    """ServerHello or HelloRetryRequest (RFC 8446 §4.1.3, §4.1.4)."""

    random: bytes
    cipher_suite: int
    legacy_session_id_echo: bytes = b""
    supported_version: int | None = TLS_VERSION_1_3
    key_share: tuple[int, bytes] | None = None
    selected_group: int | None = None  # HRR only
    pre_shared_key: int | None = None
    cookie: bytes | None = None  # HRR only
    other_extensions: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def is_hrr(self) -> bool:
        return self.random == HRR_RANDOM

    def encode(self) -> bytes:
        E = _E
        exts: list[tuple[int, bytes]] = []
        if self.supported_version is not None:
            exts.append((E.SUPPORTED_VERSIONS, _u16(self.supported_version)))
        if self.key_share is not None:
            exts.append((E.KEY_SHARE, encode_key_share_entry(*self.key_share)))
        if self.selected_group is not None:
            exts.append((E.KEY_SHARE, _u16(self.selected_group)))
        if self.cookie is not None:
            exts.append((E.COOKIE, vec16(self.cookie)))
        if self.pre_shared_key is not None:
            exts.append((E.PRE_SHARED_KEY, _u16(self.pre_shared_key)))
        exts.extend(self.other_extensions)
        body = (
            _u16(TLS_VERSION_1_2)
            + self.random
            + vec8(self.legacy_session_id_echo)
            + _u16(self.cipher_suite)
            + b"\x00"
            + _encode_extensions(exts)
        )
        return handshake_message(HandshakeType.SERVER_HELLO, body)

    @classmethod
    def decode(cls, body: bytes) -> ServerHello:
        E = _E
        r = Reader(body)
        legacy_version = r.uint(2)
        random = r.raw(32)
        session_id = r.vec(1)
        if len(session_id) > 32:
            raise _decode_error("legacy_session_id_echo too long")
        suite = r.uint(2)
        if r.uint(1) != 0:
            raise _illegal("legacy_compression_method must be 0")  # §4.1.3
        exts = _decode_extensions(r)
        r.done()
        sh = cls(random=random, cipher_suite=suite, legacy_session_id_echo=session_id,
                 supported_version=None)
        hrr = random == HRR_RANDOM
        for etype, data in exts:
            x = Reader(data)
            if etype == E.SUPPORTED_VERSIONS:
                sh.supported_version = x.uint(2)
            elif etype == E.KEY_SHARE:
                if hrr:
                    sh.selected_group = x.uint(2)
                else:
                    sh.key_share = _decode_key_share_entry(x)
            elif etype == E.PRE_SHARED_KEY and not hrr:
                sh.pre_shared_key = x.uint(2)
            elif etype == E.COOKIE and hrr:
                sh.cookie = x.vec(2, 1)
            else:
                # §4.1.3/§4.1.4: only the extensions above may appear here.
                raise TlsAlert(AlertDescription.unsupported_extension,
                               f"extension {etype} not allowed in ServerHello")
            x.done()
        # §4.1.3: TLS 1.3 ServerHellos carry supported_versions; QUIC needs 1.3.
        if sh.supported_version != TLS_VERSION_1_3 or legacy_version != TLS_VERSION_1_2:
            raise TlsAlert(AlertDescription.protocol_version, "server did not select TLS 1.3")
        return sh


# ---------------------------------------------------------------- EncryptedExtensions

#: Extensions that RFC 8446 §4.2 forbids in EncryptedExtensions.
_NOT_IN_EE = {
    ExtensionType.SIGNATURE_ALGORITHMS,
    ExtensionType.KEY_SHARE,
    ExtensionType.PRE_SHARED_KEY,
    ExtensionType.PSK_KEY_EXCHANGE_MODES,
    ExtensionType.SUPPORTED_VERSIONS,
    ExtensionType.COOKIE,
    ExtensionType.CERTIFICATE_AUTHORITIES,
    ExtensionType.POST_HANDSHAKE_AUTH,
    ExtensionType.SIGNATURE_ALGORITHMS_CERT,
}


@dataclass
class EncryptedExtensions:
    """RFC 8446 §4.3.1."""

    alpn_protocol: bytes | None = None
    quic_transport_parameters: bytes | None = None
    early_data: bool = False
    server_name_ack: bool = False
    other_extensions: list[tuple[int, bytes]] = field(default_factory=list)

    def encode(self) -> bytes:
        E = _E
        exts: list[tuple[int, bytes]] = []
        if self.server_name_ack:
            exts.append((E.SERVER_NAME, b""))
        if self.alpn_protocol is not None:
            exts.append((E.ALPN, encode_alpn([self.alpn_protocol])))
        if self.early_data:
            exts.append((E.EARLY_DATA, b""))
        if self.quic_transport_parameters is not None:
            exts.append((E.QUIC_TRANSPORT_PARAMETERS, self.quic_transport_parameters))
        exts.extend(self.other_extensions)
        return handshake_message(HandshakeType.ENCRYPTED_EXTENSIONS, _encode_extensions(exts))

    @classmethod
    def decode(cls, body: bytes) -> EncryptedExtensions:
        E = _E
        r = Reader(body)
        exts = _decode_extensions(r)
        r.done()
        ee = cls()
        for etype, data in exts:
            if etype in _NOT_IN_EE:
                raise _illegal(f"extension {etype} not allowed in EncryptedExtensions")
            if etype == E.ALPN:
                protos = decode_alpn(data)
                if len(protos) != 1:  # RFC 7301 §3.1: exactly one name
                    raise _illegal("server must select exactly one ALPN")
                ee.alpn_protocol = protos[0]
            elif etype == E.QUIC_TRANSPORT_PARAMETERS:
                ee.quic_transport_parameters = data
            elif etype == E.EARLY_DATA:
                if data:
                    raise _decode_error("early_data in EncryptedExtensions must be empty")
                ee.early_data = True
            elif etype == E.SERVER_NAME:
                if data:
                    raise _decode_error("server_name acknowledgement must be empty")
                ee.server_name_ack = True
            else:
                ee.other_extensions.append((etype, data))
        return ee


# ---------------------------------------------------------------- certificates


@dataclass
class CertificateRequest:
    """RFC 8446 §4.3.2."""

    context: bytes = b""
    signature_algorithms: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        exts = [(ExtensionType.SIGNATURE_ALGORITHMS, _u16_list(self.signature_algorithms))]
        body = vec8(self.context) + _encode_extensions(list(exts))
        return handshake_message(HandshakeType.CERTIFICATE_REQUEST, body)

    @classmethod
    def decode(cls, body: bytes) -> CertificateRequest:
        r = Reader(body)
        context = r.vec(1)
        exts = _decode_extensions(r)
        r.done()
        req = cls(context=context)
        found = False
        for etype, data in exts:
            if etype == ExtensionType.SIGNATURE_ALGORITHMS:
                x = Reader(data)
                req.signature_algorithms = x.uint_list(2, 2, 2)
                x.done()
                found = True
        # §4.3.2: signature_algorithms MUST be present.
        if not found:
            raise TlsAlert(AlertDescription.missing_extension,
                           "CertificateRequest without signature_algorithms")
        return req


@dataclass
class Certificate:
    """RFC 8446 §4.4.2; entries are DER certificates (X.509 type only)."""

    context: bytes = b""
    certificates: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        entries = b"".join(vec24(c) + vec16(b"") for c in self.certificates)
        body = vec8(self.context) + vec24(entries)
        return handshake_message(HandshakeType.CERTIFICATE, body)

    @classmethod
    def decode(cls, body: bytes) -> Certificate:
        r = Reader(body)
        context = r.vec(1)
        lst = r.sub(3)
        r.done()
        certs = []
        while not lst.eof():
            certs.append(lst.vec(3, 1))
            # per-entry extensions (status_request, SCTs) are ignored after checking form
            _decode_extensions(Reader(vec16(lst.vec(2))))
        return cls(context, certs)


@dataclass
class CertificateVerify:
    """RFC 8446 §4.4.3."""

    algorithm: int
    signature: bytes

    def encode(self) -> bytes:
        return handshake_message(
            HandshakeType.CERTIFICATE_VERIFY, _u16(self.algorithm) + vec16(self.signature)
        )

    @classmethod
    def decode(cls, body: bytes) -> CertificateVerify:
        r = Reader(body)
        alg = r.uint(2)
        sig = r.vec(2, 1)
        r.done()
        return cls(alg, sig)


@dataclass
class Finished:
    """RFC 8446 §4.4.4."""

    verify_data: bytes

    def encode(self) -> bytes:
        return handshake_message(HandshakeType.FINISHED, self.verify_data)

    @classmethod
    def decode(cls, body: bytes) -> Finished:
        return cls(bytes(body))


@dataclass
class NewSessionTicket:
    """RFC 8446 §4.6.1; in QUIC max_early_data is 0xffffffff or absent (RFC 9001 §4.6.1)."""

    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes
    max_early_data: int | None = None

    def encode(self) -> bytes:
        exts: list[tuple[int, bytes]] = []
        if self.max_early_data is not None:
            exts.append((ExtensionType.EARLY_DATA, _u32(self.max_early_data)))
        body = (
            _u32(self.lifetime)
            + _u32(self.age_add)
            + vec8(self.nonce)
            + vec16(self.ticket)
            + _encode_extensions(exts)
        )
        return handshake_message(HandshakeType.NEW_SESSION_TICKET, body)

    @classmethod
    def decode(cls, body: bytes) -> NewSessionTicket:
        r = Reader(body)
        lifetime = r.uint(4)
        age_add = r.uint(4)
        nonce = r.vec(1)
        ticket = r.vec(2, 1)
        exts = _decode_extensions(r)
        r.done()
        # §4.6.1: lifetime at most seven days.
        if lifetime > 604800:
            raise _illegal("ticket lifetime over seven days")
        nst = cls(lifetime, age_add, nonce, ticket)
        for etype, data in exts:
            if etype == ExtensionType.EARLY_DATA:
                x = Reader(data)
                nst.max_early_data = x.uint(4)
                x.done()
        return nst


def parse_message(data: bytes) -> tuple[int, bytes]:
    """Split one full handshake message into ``(type, body)``; decode_error if malformed."""
    if len(data) < 4:
        raise _decode_error("short handshake header")
    length = int.from_bytes(data[1:4], "big")
    if len(data) != 4 + length:
        raise _decode_error("handshake length mismatch")
    return data[0], data[4:]
