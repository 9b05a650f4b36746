"""cmsg helpers: the tuples sendmsg takes and recvmsg returns."""

from __future__ import annotations

import errno
import socket

import pytest

from pyquic import abi


def test_cmsg_space() -> None:
    assert abi.STREAM_INFO_CMSG_SPACE == socket.CMSG_SPACE(16) == 32
    assert abi.HANDSHAKE_INFO_CMSG_SPACE == socket.CMSG_SPACE(1)


def test_stream_info_cmsg() -> None:
    level, ctype, data = abi.stream_info_cmsg(5, abi.StreamFlag.FIN | abi.StreamFlag.NEW)
    assert (level, ctype) == (288, 0)
    assert data == (5).to_bytes(8, "little") + (0x600).to_bytes(4, "little") + bytes(4)
    _, _, data = abi.stream_info_cmsg(-1, 0)
    assert data[:8] == b"\xff" * 8
    with pytest.raises(ValueError, match=r"StreamInfo\.stream_flags"):
        abi.stream_info_cmsg(0, -1)


def test_handshake_info_cmsg() -> None:
    assert abi.handshake_info_cmsg(abi.CryptoLevel.HANDSHAKE) == (288, 1, b"\x02")
    with pytest.raises(ValueError, match=r"HandshakeInfo\.crypto_level: 256"):
        abi.handshake_info_cmsg(256)


def test_parse_round_trip() -> None:
    anc = [abi.stream_info_cmsg(8, abi.StreamFlag.FIN), abi.handshake_info_cmsg(3)]
    sinfo, hinfo = abi.parse_ancdata(anc)
    assert sinfo == abi.StreamInfo(8, 0x200)
    assert hinfo == abi.HandshakeInfo(3)
    assert abi.parse_ancdata([]) == (None, None)


def test_parse_skips_other_levels_and_rejects_unknown_types() -> None:
    other = (socket.SOL_SOCKET, 1, b"\x01\x02\x03\x04")  # e.g. SCM_RIGHTS: not ours
    assert abi.parse_ancdata([other, abi.handshake_info_cmsg(1)]) == (None, abi.HandshakeInfo(1))
    with pytest.raises(OSError) as info:
        abi.parse_ancdata([(abi.SOL_QUIC, 2, b"\0")])
    assert info.value.errno == errno.EINVAL


def test_parse_short_payload_overlays_defaults() -> None:
    # the kernel copies a short cmsg over stream_id = -1, flags = 0
    sinfo, _ = abi.parse_ancdata([(abi.SOL_QUIC, 0, b"\x04\0\0\0")])
    assert sinfo == abi.StreamInfo(0xFFFFFFFF00000004 - (1 << 64), 0)
    sinfo, _ = abi.parse_ancdata([(abi.SOL_QUIC, 0, b"")])
    assert sinfo == abi.StreamInfo(-1, 0)
    _, hinfo = abi.parse_ancdata([(abi.SOL_QUIC, 1, b"")])
    assert hinfo == abi.HandshakeInfo(0)

