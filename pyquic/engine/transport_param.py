"""QUIC transport parameters extension (RFC 9000 §7.4, §18).

Values are kept in wire units: ``max_idle_timeout`` and ``max_ack_delay`` in
milliseconds (the kernel's ``quic_transport_param`` uses microseconds; the
connection converts).

Public API (stable):

- ``TransportParameters`` dataclass, defaults are the RFC defaults (a field at
  its default is not encoded):
  ``original_destination_connection_id: bytes | None``,
  ``max_idle_timeout: int = 0`` (ms), ``stateless_reset_token: bytes | None``,
  ``max_udp_payload_size: int = 65527``, ``initial_max_data: int = 0``,
  ``initial_max_stream_data_bidi_local/bidi_remote/uni: int = 0``,
  ``initial_max_streams_bidi/uni: int = 0``, ``ack_delay_exponent: int = 3``,
  ``max_ack_delay: int = 25`` (ms), ``disable_active_migration: bool``,
  ``preferred_address: PreferredAddress | None``,
  ``active_connection_id_limit: int = 2``,
  ``initial_source_connection_id: bytes | None``,
  ``retry_source_connection_id: bytes | None``,
  ``max_datagram_frame_size: int = 0`` (RFC 9221 §3, 0 = no DATAGRAM),
  ``grease_quic_bit: bool`` (RFC 9287), ``version_information:
  VersionInformation | None`` (RFC 9368 §3), ``disable_1rtt_encryption: bool``
  (the kernel's extension, id 0xbaad).
  ``encode() -> bytes``; ``@classmethod decode(buf, sent_by_server: bool) ->
  TransportParameters`` raising QuicError(TRANSPORT_PARAMETER_ERROR, None,
  reason) on malformed input, duplicates, server-only parameters sent by a
  client, or out-of-range values; unknown ids are skipped.
- ``decode_transport_parameters(buf, sent_by_server) -> TransportParameters``
  (same as the classmethod).
- ``PreferredAddress(ipv4_address: bytes (4), ipv4_port: int, ipv6_address:
  bytes (16), ipv6_port: int, connection_id: bytes, stateless_reset_token:
  bytes)`` (RFC 9000 §18.2).
- ``VersionInformation(chosen_version: int, available_versions: list[int])``.
- ``ParamId(IntEnum)``: the parameter ids.

The checks that depend on connection state (§7.3 connection-ID
authentication, required presence of initial_source_connection_id etc.) are
the connection's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .common import Buffer, BufferReadError, decode_varint, encode_varint
from .errors import TRANSPORT_PARAMETER_ERROR, QuicError

__all__ = [
    "ParamId",
    "PreferredAddress",
    "TransportParameters",
    "VersionInformation",
    "decode_transport_parameters",
]


class ParamId(IntEnum):
    ORIGINAL_DESTINATION_CONNECTION_ID = 0x00
    MAX_IDLE_TIMEOUT = 0x01
    STATELESS_RESET_TOKEN = 0x02
    MAX_UDP_PAYLOAD_SIZE = 0x03
    INITIAL_MAX_DATA = 0x04
    INITIAL_MAX_STREAM_DATA_BIDI_LOCAL = 0x05
    INITIAL_MAX_STREAM_DATA_BIDI_REMOTE = 0x06
    INITIAL_MAX_STREAM_DATA_UNI = 0x07
    INITIAL_MAX_STREAMS_BIDI = 0x08
    INITIAL_MAX_STREAMS_UNI = 0x09
    ACK_DELAY_EXPONENT = 0x0A
    MAX_ACK_DELAY = 0x0B
    DISABLE_ACTIVE_MIGRATION = 0x0C
    PREFERRED_ADDRESS = 0x0D
    ACTIVE_CONNECTION_ID_LIMIT = 0x0E
    INITIAL_SOURCE_CONNECTION_ID = 0x0F
    RETRY_SOURCE_CONNECTION_ID = 0x10
    VERSION_INFORMATION = 0x11  # RFC 9368 §3
    MAX_DATAGRAM_FRAME_SIZE = 0x20  # RFC 9221 §3
    GREASE_QUIC_BIT = 0x2AB2  # RFC 9287 §3
    DISABLE_1RTT_ENCRYPTION = 0xBAAD  # lxin/quic extension (frame.h)


@dataclass(slots=True)
class PreferredAddress:
    ipv4_address: bytes
    ipv4_port: int
    ipv6_address: bytes
    ipv6_port: int
    connection_id: bytes
    stateless_reset_token: bytes

    def encode(self) -> bytes:
        return (
            self.ipv4_address
            + self.ipv4_port.to_bytes(2, "big")
            + self.ipv6_address
            + self.ipv6_port.to_bytes(2, "big")
            + bytes((len(self.connection_id),))
            + self.connection_id
            + self.stateless_reset_token
        )


@dataclass(slots=True)
class VersionInformation:
    chosen_version: int
    available_versions: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        return b"".join(
            v.to_bytes(4, "big") for v in [self.chosen_version, *self.available_versions]
        )


_INT_PARAMS = (
    ("max_idle_timeout", ParamId.MAX_IDLE_TIMEOUT, 0),
    ("max_udp_payload_size", ParamId.MAX_UDP_PAYLOAD_SIZE, 65527),
    ("initial_max_data", ParamId.INITIAL_MAX_DATA, 0),
    ("initial_max_stream_data_bidi_local", ParamId.INITIAL_MAX_STREAM_DATA_BIDI_LOCAL, 0),
    ("initial_max_stream_data_bidi_remote", ParamId.INITIAL_MAX_STREAM_DATA_BIDI_REMOTE, 0),
    ("initial_max_stream_data_uni", ParamId.INITIAL_MAX_STREAM_DATA_UNI, 0),
    ("initial_max_streams_bidi", ParamId.INITIAL_MAX_STREAMS_BIDI, 0),
    ("initial_max_streams_uni", ParamId.INITIAL_MAX_STREAMS_UNI, 0),
    ("ack_delay_exponent", ParamId.ACK_DELAY_EXPONENT, 3),
    ("max_ack_delay", ParamId.MAX_ACK_DELAY, 25),
    ("active_connection_id_limit", ParamId.ACTIVE_CONNECTION_ID_LIMIT, 2),
    ("max_datagram_frame_size", ParamId.MAX_DATAGRAM_FRAME_SIZE, 0),
)
_INT_BY_ID: dict[int, str] = {pid: name for name, pid, _ in _INT_PARAMS}
_CID_PARAMS = (
    ("original_destination_connection_id", ParamId.ORIGINAL_DESTINATION_CONNECTION_ID),
    ("initial_source_connection_id", ParamId.INITIAL_SOURCE_CONNECTION_ID),
    ("retry_source_connection_id", ParamId.RETRY_SOURCE_CONNECTION_ID),
)
_CID_BY_ID: dict[int, str] = {pid: name for name, pid in _CID_PARAMS}
_FLAG_PARAMS = (
    ("disable_active_migration", ParamId.DISABLE_ACTIVE_MIGRATION),
    ("grease_quic_bit", ParamId.GREASE_QUIC_BIT),
    ("disable_1rtt_encryption", ParamId.DISABLE_1RTT_ENCRYPTION),
)
_FLAG_BY_ID: dict[int, str] = {pid: name for name, pid in _FLAG_PARAMS}
# RFC 9000 §18.2: only a server may send these.
_SERVER_ONLY = frozenset(
    {
        ParamId.ORIGINAL_DESTINATION_CONNECTION_ID,
        ParamId.STATELESS_RESET_TOKEN,
        ParamId.PREFERRED_ADDRESS,
        ParamId.RETRY_SOURCE_CONNECTION_ID,
    }
)
_MAX_STREAMS = 1 << 60


def _fail(reason: str) -> QuicError:
    return QuicError(TRANSPORT_PARAMETER_ERROR, None, reason)


def _param(pid: int, value: bytes) -> bytes:
    return encode_varint(pid) + encode_varint(len(value)) + value


@dataclass(slots=True)
class TransportParameters:
    """The transport parameters one endpoint sends (RFC 9000 §18.2)."""

    original_destination_connection_id: bytes | None = None
    max_idle_timeout: int = 0
    stateless_reset_token: bytes | None = None
    max_udp_payload_size: int = 65527
    initial_max_data: int = 0
    initial_max_stream_data_bidi_local: int = 0
    initial_max_stream_data_bidi_remote: int = 0
    initial_max_stream_data_uni: int = 0
    initial_max_streams_bidi: int = 0
    initial_max_streams_uni: int = 0
    ack_delay_exponent: int = 3
    max_ack_delay: int = 25
    disable_active_migration: bool = False
    preferred_address: PreferredAddress | None = None
    active_connection_id_limit: int = 2
    initial_source_connection_id: bytes | None = None
    retry_source_connection_id: bytes | None = None
    max_datagram_frame_size: int = 0
    grease_quic_bit: bool = False
    version_information: VersionInformation | None = None
    disable_1rtt_encryption: bool = False

    def encode(self) -> bytes:
        """Encode the parameters that differ from their defaults."""
        parts: list[bytes] = []
        for name, pid in _CID_PARAMS:
            cid = getattr(self, name)
            if cid is not None:
                parts.append(_param(pid, cid))
        if self.stateless_reset_token is not None:
            parts.append(_param(ParamId.STATELESS_RESET_TOKEN, self.stateless_reset_token))
        for name, pid, default in _INT_PARAMS:
            value = getattr(self, name)
            if value != default:
                parts.append(_param(pid, encode_varint(value)))
        for name, pid in _FLAG_PARAMS:
            if getattr(self, name):
                parts.append(_param(pid, b""))
        if self.preferred_address is not None:
            parts.append(_param(ParamId.PREFERRED_ADDRESS, self.preferred_address.encode()))
        if self.version_information is not None:
            parts.append(
                _param(ParamId.VERSION_INFORMATION, self.version_information.encode())
            )
        return b"".join(parts)

    @classmethod
    def decode(cls, buf: bytes, sent_by_server: bool) -> TransportParameters:
        """Decode and validate a peer's parameters (RFC 9000 §7.4, §18.2)."""
        try:
            return _decode(bytes(buf), sent_by_server)
        except BufferReadError:
            raise _fail("truncated transport parameters") from None


# parameter id -> (kind, attribute): one dict lookup per parameter
_INT, _CID, _FLAG = 0, 1, 2
_KIND_BY_ID: dict[int, tuple[int, str]] = {
    **{pid: (_INT, name) for pid, name in _INT_BY_ID.items()},
    **{pid: (_CID, name) for pid, name in _CID_BY_ID.items()},
    **{pid: (_FLAG, name) for pid, name in _FLAG_BY_ID.items()},
}


def _decode(data: bytes, sent_by_server: bool) -> TransportParameters:
    params = TransportParameters()
    seen: set[int] = set()
    n = len(data)
    pos = 0
    kinds = _KIND_BY_ID
    while pos < n:
        pid = data[pos]  # ids and lengths are mostly one-byte varints
        if pid < 0x40:
            pos += 1
        else:
            pid, pos = decode_varint(data, pos)
        length = data[pos] if pos < n else 0x40
        if length < 0x40:
            pos += 1
        else:
            length, pos = decode_varint(data, pos)
        if pos + length > n:
            raise BufferReadError("truncated bytes")
        value = data[pos:pos + length]
        pos += length
        # RFC 9000 §7.4: a parameter must not appear twice.
        if pid in seen:
            raise _fail(f"duplicate transport parameter 0x{pid:x}")
        seen.add(pid)
        if pid in _SERVER_ONLY and not sent_by_server:
            raise _fail(f"server-only transport parameter 0x{pid:x} sent by client")
        spec = kinds.get(pid)
        if spec is not None:
            kind, name = spec
            if kind == _INT:
                if length == 1 and value[0] < 0x40:
                    v, vend = value[0], 1
                else:
                    v, vend = decode_varint(value)
                if vend != length:
                    raise _fail(f"trailing bytes in transport parameter 0x{pid:x}")
                setattr(params, name, v)
            elif kind == _CID:
                if length > 20:
                    raise _fail("connection ID too long")
                setattr(params, name, value)
            else:
                # The kernel lets a client put data in disable_1rtt_encryption.
                if value and not (pid == ParamId.DISABLE_1RTT_ENCRYPTION and not sent_by_server):
                    raise _fail(f"transport parameter 0x{pid:x} must be empty")
                setattr(params, name, True)
        elif pid == ParamId.STATELESS_RESET_TOKEN:
            if length != 16:
                raise _fail("stateless_reset_token must be 16 bytes")
            params.stateless_reset_token = value
        elif pid == ParamId.PREFERRED_ADDRESS:
            params.preferred_address = _decode_preferred_address(value)
        elif pid == ParamId.VERSION_INFORMATION:
            params.version_information = _decode_version_information(value, sent_by_server)
        # Unknown parameters are ignored (RFC 9000 §7.4.2).
    _validate(params)
    return params


def _decode_preferred_address(value: bytes) -> PreferredAddress:
    b = Buffer(value)
    try:
        ipv4 = b.pull_bytes(4)
        port4 = b.pull_uint16()
        ipv6 = b.pull_bytes(16)
        port6 = b.pull_uint16()
        cid = b.pull_bytes(b.pull_uint8())
        token = b.pull_bytes(16)
    except BufferReadError:
        raise _fail("truncated preferred_address") from None
    if not b.eof():
        raise _fail("trailing bytes in preferred_address")
    # RFC 9000 §18.2: a zero-length CID with a preferred address is invalid.
    if not 1 <= len(cid) <= 20:
        raise _fail("bad preferred_address connection ID length")
    return PreferredAddress(ipv4, port4, ipv6, port6, cid, token)


def _decode_version_information(value: bytes, sent_by_server: bool) -> VersionInformation:
    # RFC 9368 §3/§4: non-empty list of 4-byte versions, none of them zero.
    if not value or len(value) % 4:
        raise _fail("malformed version_information")
    versions = [int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4)]
    if 0 in versions:
        raise _fail("zero version in version_information")
    info = VersionInformation(versions[0], versions[1:])
    if not sent_by_server and info.chosen_version not in info.available_versions:
        raise _fail("chosen version not in available versions")
    return info


def _validate(p: TransportParameters) -> None:
    # RFC 9000 §18.2 value ranges.
    if p.max_udp_payload_size < 1200:
        raise _fail("max_udp_payload_size below 1200")
    if p.ack_delay_exponent > 20:
        raise _fail("ack_delay_exponent above 20")
    if p.max_ack_delay >= 1 << 14:
        raise _fail("max_ack_delay of 2^14 or more")
    if p.active_connection_id_limit < 2:
        raise _fail("active_connection_id_limit below 2")
    if p.initial_max_streams_bidi > _MAX_STREAMS or p.initial_max_streams_uni > _MAX_STREAMS:
        raise _fail("initial_max_streams above 2^60")


def decode_transport_parameters(buf: bytes, sent_by_server: bool) -> TransportParameters:
    """Same as ``TransportParameters.decode``."""
    return TransportParameters.decode(buf, sent_by_server)
