"""Tests for pyquic.engine.transport_param (RFC 9000 §7.4, §18; RFC 9368; RFC 9221)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyquic.engine.common import encode_varint
from pyquic.engine.errors import TRANSPORT_PARAMETER_ERROR, QuicError
from pyquic.engine.transport_param import (
    ParamId,
    PreferredAddress,
    TransportParameters,
    VersionInformation,
    decode_transport_parameters,
)


def param(pid: int, value: bytes) -> bytes:
    return encode_varint(pid) + encode_varint(len(value)) + value


def expect_error(buf: bytes, sent_by_server: bool) -> None:
    with pytest.raises(QuicError) as ei:
        TransportParameters.decode(buf, sent_by_server)
    assert ei.value.error_code == TRANSPORT_PARAMETER_ERROR


def full_server_params() -> TransportParameters:
    return TransportParameters(
        original_destination_connection_id=b"\x01" * 8,
        max_idle_timeout=30000,
        stateless_reset_token=b"\x02" * 16,
        max_udp_payload_size=1452,
        initial_max_data=1 << 20,
        initial_max_stream_data_bidi_local=65536,
        initial_max_stream_data_bidi_remote=65537,
        initial_max_stream_data_uni=65538,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=3,
        ack_delay_exponent=10,
        max_ack_delay=50,
        disable_active_migration=True,
        preferred_address=PreferredAddress(
            b"\x7f\x00\x00\x01", 4433, b"\x00" * 15 + b"\x01", 4434, b"\x03" * 8, b"\x04" * 16
        ),
        active_connection_id_limit=8,
        initial_source_connection_id=b"\x05" * 8,
        retry_source_connection_id=b"\x06" * 4,
        max_datagram_frame_size=1200,
        grease_quic_bit=True,
        version_information=VersionInformation(0x00000001, [0x00000001, 0x6B3343CF]),
        disable_1rtt_encryption=True,
    )


def test_roundtrip_server_all_fields() -> None:
    p = full_server_params()
    assert TransportParameters.decode(p.encode(), sent_by_server=True) == p
    assert decode_transport_parameters(p.encode(), True) == p


def test_defaults_not_encoded_and_restored() -> None:
    assert TransportParameters().encode() == b""
    d = TransportParameters.decode(b"", sent_by_server=False)
    assert (d.max_udp_payload_size, d.ack_delay_exponent, d.max_ack_delay) == (65527, 3, 25)
    assert d.active_connection_id_limit == 2 and d.max_datagram_frame_size == 0
    assert d.original_destination_connection_id is None and not d.grease_quic_bit


def test_client_params_roundtrip() -> None:
    p = TransportParameters(
        initial_source_connection_id=b"",
        initial_max_data=1000,
        version_information=VersionInformation(1, [1]),
    )
    assert TransportParameters.decode(p.encode(), sent_by_server=False) == p


def test_wire_encoding_and_ids() -> None:
    assert ParamId.GREASE_QUIC_BIT == 0x2AB2
    assert ParamId.DISABLE_1RTT_ENCRYPTION == 0xBAAD
    assert ParamId.VERSION_INFORMATION == 0x11
    assert ParamId.MAX_DATAGRAM_FRAME_SIZE == 0x20
    enc = TransportParameters(grease_quic_bit=True).encode()
    assert enc == bytes.fromhex("6ab200")  # 2-byte varint id
    enc = TransportParameters(initial_max_data=0x10000).encode()
    assert enc == bytes.fromhex("040480010000")


@pytest.mark.parametrize(
    "pid",
    [
        ParamId.ORIGINAL_DESTINATION_CONNECTION_ID,
        ParamId.STATELESS_RESET_TOKEN,
        ParamId.PREFERRED_ADDRESS,
        ParamId.RETRY_SOURCE_CONNECTION_ID,
    ],
)
def test_server_only_from_client(pid: ParamId) -> None:
    # RFC 9000 §18.2: a server MUST treat these as TRANSPORT_PARAMETER_ERROR
    p = full_server_params()
    value = {
        ParamId.ORIGINAL_DESTINATION_CONNECTION_ID: b"\x01" * 8,
        ParamId.STATELESS_RESET_TOKEN: b"\x02" * 16,
        ParamId.PREFERRED_ADDRESS: p.preferred_address.encode() if p.preferred_address else b"",
        ParamId.RETRY_SOURCE_CONNECTION_ID: b"\x06",
    }[pid]
    buf = param(pid, value)
    expect_error(buf, sent_by_server=False)
    TransportParameters.decode(buf, sent_by_server=True)  # fine from a server


@pytest.mark.parametrize(
    ("pid", "value"),
    [
        (ParamId.ACK_DELAY_EXPONENT, 21),
        (ParamId.MAX_ACK_DELAY, 1 << 14),
        (ParamId.MAX_UDP_PAYLOAD_SIZE, 1199),
        (ParamId.ACTIVE_CONNECTION_ID_LIMIT, 1),
        (ParamId.ACTIVE_CONNECTION_ID_LIMIT, 0),
        (ParamId.INITIAL_MAX_STREAMS_BIDI, (1 << 60) + 1),
        (ParamId.INITIAL_MAX_STREAMS_UNI, (1 << 60) + 1),
    ],
)
def test_out_of_range(pid: int, value: int) -> None:
    expect_error(param(pid, encode_varint(value)), sent_by_server=True)


@pytest.mark.parametrize(
    ("pid", "value"),
    [
        (ParamId.ACK_DELAY_EXPONENT, 20),
        (ParamId.MAX_ACK_DELAY, (1 << 14) - 1),
        (ParamId.MAX_UDP_PAYLOAD_SIZE, 1200),
        (ParamId.ACTIVE_CONNECTION_ID_LIMIT, 2),
    ],
)
def test_in_range_edges(pid: int, value: int) -> None:
    TransportParameters.decode(param(pid, encode_varint(value)), sent_by_server=True)


def test_duplicates_rejected() -> None:
    one = param(ParamId.INITIAL_MAX_DATA, encode_varint(5))
    expect_error(one + one, sent_by_server=True)
    unknown = param(0x1F * 7 + 27, b"x")
    expect_error(unknown + unknown, sent_by_server=True)


def test_unknown_ignored() -> None:
    buf = param(0x1F * 3 + 27, b"grease") + param(ParamId.INITIAL_MAX_DATA, encode_varint(7))
    assert TransportParameters.decode(buf, False).initial_max_data == 7


@pytest.mark.parametrize(
    "buf",
    [
        param(ParamId.INITIAL_MAX_DATA, encode_varint(5) + b"\x00"),  # trailing bytes
        param(ParamId.INITIAL_MAX_DATA, b""),  # empty integer
        param(ParamId.INITIAL_MAX_DATA, b"\x40"),  # truncated varint inside
        param(ParamId.INITIAL_SOURCE_CONNECTION_ID, b"\x00" * 21),  # CID too long
        param(ParamId.STATELESS_RESET_TOKEN, b"\x00" * 15),
        param(ParamId.DISABLE_ACTIVE_MIGRATION, b"\x00"),
        param(ParamId.GREASE_QUIC_BIT, b"\x00"),
        param(ParamId.DISABLE_1RTT_ENCRYPTION, b"\x00"),  # from a server: must be empty
        param(ParamId.VERSION_INFORMATION, b""),
        param(ParamId.VERSION_INFORMATION, b"\x00\x00\x00\x01\x00"),
        param(ParamId.VERSION_INFORMATION, b"\x00\x00\x00\x00"),  # chosen version 0
        param(ParamId.VERSION_INFORMATION, b"\x00\x00\x00\x01\x00\x00\x00\x00"),
        param(ParamId.PREFERRED_ADDRESS, b"\x00" * 24 + b"\x00" + b"\x00" * 16),  # empty CID
        param(ParamId.PREFERRED_ADDRESS, b"\x00" * 24 + b"\x04abcd" + b"\x00" * 15),
        param(ParamId.PREFERRED_ADDRESS, b"\x00" * 24 + b"\x04abcd" + b"\x00" * 17),
        b"\x04",  # truncated id/length
        b"\x04\x05\x01",  # length beyond the buffer
    ],
)
def test_malformed(buf: bytes) -> None:
    expect_error(buf, sent_by_server=True)


def test_version_information_rules() -> None:
    # RFC 9368 §4: a server treats a chosen version missing from the
    # available versions as a parsing failure.
    buf = param(ParamId.VERSION_INFORMATION, bytes.fromhex("0000000100000002"))
    expect_error(buf, sent_by_server=False)
    got = TransportParameters.decode(buf, sent_by_server=True)
    assert got.version_information == VersionInformation(1, [2])


def test_disable_1rtt_from_client_may_carry_data() -> None:
    # the kernel accepts a value in the client's disable_1rtt_encryption
    buf = param(ParamId.DISABLE_1RTT_ENCRYPTION, b"\x01")
    assert TransportParameters.decode(buf, sent_by_server=False).disable_1rtt_encryption


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_random_bytes_only_raise_quic_error(data: bytes, by_server: bool) -> None:
    try:
        TransportParameters.decode(data, by_server)
    except QuicError as e:
        assert e.error_code == TRANSPORT_PARAMETER_ERROR


def test_every_truncation_of_full_params() -> None:
    enc = full_server_params().encode()
    for n in range(len(enc)):
        try:
            TransportParameters.decode(enc[:n], True)
        except QuicError as e:
            assert e.error_code == TRANSPORT_PARAMETER_ERROR
