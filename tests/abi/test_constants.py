"""Constant and enum values of pyquic.abi (DESIGN.md "ABI facts", linux/quic.h)."""

from __future__ import annotations

import socket
from enum import IntEnum, IntFlag
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi import constants as c


def test_protocol_numbers() -> None:
    assert abi.IPPROTO_QUIC == 261
    assert abi.SOL_QUIC == 288


def test_msg_bits_match_linux() -> None:
    assert (c.MSG_FIN, c.MSG_SYN, c.MSG_CONFIRM, c.MSG_RST) == (0x200, 0x400, 0x800, 0x1000)
    assert (c.MSG_ERRQUEUE, c.MSG_MORE, c.MSG_WAITFORONE) == (0x2000, 0x8000, 0x10000)
    # where Python's socket module knows the bit, it agrees
    for name in ("MSG_CONFIRM", "MSG_ERRQUEUE", "MSG_MORE", "MSG_WAITFORONE"):
        if hasattr(socket, name):
            assert getattr(socket, name) == getattr(c, name), name


def test_stream_and_msg_flags() -> None:
    assert abi.StreamFlag.NEW == 0x400 == abi.MSG_SYN
    assert abi.StreamFlag.FIN == 0x200 == abi.MSG_FIN
    assert abi.StreamFlag.UNI == 0x800
    assert abi.StreamFlag.DONTWAIT == 0x10000
    assert abi.StreamFlag.SNDBLOCK == 0x2000
    assert abi.MsgFlag.DATAGRAM == 0x1000 == abi.MSG_RST
    assert abi.MsgFlag.NOTIFICATION == 0x8000
    assert abi.MSG_QUIC_STREAM_NEW == 0x400
    assert abi.MSG_QUIC_STREAM_FIN == 0x200
    assert abi.MSG_QUIC_STREAM_UNI == 0x800
    assert abi.MSG_QUIC_STREAM_DONTWAIT == 0x10000
    assert abi.MSG_QUIC_STREAM_SNDBLOCK == 0x2000
    assert abi.MSG_QUIC_DATAGRAM == 0x1000
    assert abi.MSG_QUIC_NOTIFICATION == 0x8000
    assert abi.STREAM_FLAGS_MASK == 0x400 | 0x200 | 0x800 | 0x10000 | 0x2000
    assert issubclass(abi.StreamFlag, IntFlag) and issubclass(abi.MsgFlag, IntFlag)


def test_enum_values() -> None:
    assert [(m.name, m.value) for m in abi.CmsgType] == [("STREAM_INFO", 0), ("HANDSHAKE_INFO", 1)]
    assert [(m.name, m.value) for m in abi.CryptoLevel] == [
        ("APP", 0), ("INITIAL", 1), ("HANDSHAKE", 2), ("EARLY", 3)]
    assert [m.name for m in abi.SockOpt] == [
        "EVENT", "STREAM_OPEN", "STREAM_RESET", "STREAM_STOP_SENDING", "CONNECTION_ID",
        "CONNECTION_CLOSE", "CONNECTION_MIGRATION", "KEY_UPDATE", "TRANSPORT_PARAM", "CONFIG",
        "TOKEN", "ALPN", "SESSION_TICKET", "CRYPTO_SECRET", "TRANSPORT_PARAM_EXT"]
    assert [m.value for m in abi.SockOpt] == list(range(15))
    assert [m.name for m in abi.EventType] == [
        "NONE", "STREAM_UPDATE", "STREAM_MAX_DATA", "STREAM_MAX_STREAM", "CONNECTION_ID",
        "CONNECTION_CLOSE", "CONNECTION_MIGRATION", "KEY_UPDATE", "NEW_TOKEN",
        "NEW_SESSION_TICKET"]
    assert [m.value for m in abi.EventType] == list(range(10))
    assert [m.name for m in abi.StreamState] == [
        "SEND_READY", "SEND_SEND", "SEND_SENT", "SEND_RECVD", "SEND_RESET_SENT",
        "SEND_RESET_RECVD", "RECV_RECV", "RECV_SIZE_KNOWN", "RECV_RECVD", "RECV_READ",
        "RECV_RESET_RECVD", "RECV_RESET_READ"]
    assert [m.value for m in abi.StreamState] == list(range(12))
    assert (abi.CongAlgo.RENO, abi.CongAlgo.CUBIC) == (0, 1)
    assert (abi.Version.V1, abi.Version.V2) == (1, 0x6B3343CF)
    assert [m.value for m in abi.TlsCipher] == [51, 52, 53, 54]
    assert [m.name for m in abi.TlsCipher] == [
        "AES_GCM_128", "AES_GCM_256", "AES_CCM_128", "CHACHA20_POLY1305"]


def test_transport_errors_rfc9000_section_20_1() -> None:
    te = abi.TransportError
    assert [m.value for m in te][:-1] == list(range(0x12))
    assert te.NONE == 0 and te.PROTOCOL_VIOLATION == 0x0A and te.CRYPTO_BUF_EXCEEDED == 0x0D
    assert te.VERSION_NEGOTIATION == 0x11 and te.CRYPTO == 0x100


def test_tls_cipher_matches_linux_tls_h() -> None:
    from pathlib import Path

    tls_h = Path("/usr/include/linux/tls.h")
    if not tls_h.is_file():
        pytest.skip("no /usr/include/linux/tls.h")
    import re

    text = tls_h.read_text()
    for m in abi.TlsCipher:
        found = re.search(rf"#define\s+TLS_CIPHER_{m.name}\s+(\d+)\s*$", text, re.MULTILINE)
        assert found is not None, m.name
        assert int(found.group(1)) == m.value


_C_PREFIXES: list[tuple[type[IntEnum], str, dict[str, str]]] = [
    (abi.CmsgType, "QUIC_", {}),
    (abi.CryptoLevel, "QUIC_CRYPTO_", {}),
    (abi.SockOpt, "QUIC_SOCKOPT_", {}),
    (abi.EventType, "QUIC_EVENT_", {}),
    (abi.CongAlgo, "QUIC_CONG_ALG_", {}),
    (abi.Version, "QUIC_VERSION_", {}),
    (abi.TransportError, "QUIC_TRANSPORT_ERROR_", {}),
]


def _c_name(enum: type[Any], prefix: str, member: Any) -> str:
    if enum is abi.StreamState:
        side, _, rest = member.name.partition("_")
        return f"QUIC_STREAM_{side}_STATE_{rest}"
    return prefix + member.name


@pytest.mark.parametrize(
    "enum,prefix",
    [(e, p) for e, p, _ in _C_PREFIXES] + [(abi.StreamState, "")],
)
def test_enums_equal_cdef_and_aliases(shipped: tuple[Any, Any], enum: type[Any],
                                      prefix: str) -> None:
    """Each enum member equals the shipped cdef's C constant and its module alias."""
    _, lib = shipped
    for member in enum:
        name = _c_name(enum, prefix, member)
        assert getattr(lib, name) == member.value, name
        assert getattr(abi, name) == member.value, name


def test_flag_aliases_equal_cdef(shipped: tuple[Any, Any]) -> None:
    _, lib = shipped
    for name in ("MSG_QUIC_STREAM_NEW", "MSG_QUIC_STREAM_FIN", "MSG_QUIC_STREAM_UNI",
                 "MSG_QUIC_STREAM_DONTWAIT", "MSG_QUIC_STREAM_SNDBLOCK", "MSG_QUIC_DATAGRAM",
                 "MSG_QUIC_NOTIFICATION", "IPPROTO_QUIC", "SOL_QUIC", "QUIC_CRYPTO_MAX",
                 "QUIC_EVENT_MAX", "QUIC_CONG_ALG_MAX", "QUIC_STREAM_TYPE_SERVER_MASK",
                 "QUIC_STREAM_TYPE_UNI_MASK", "QUIC_STREAM_TYPE_MASK",
                 "QUIC_CRYPTO_SECRET_BUFFER_SIZE", "QUIC_CLOSE_PHRASE_BUFFER_SIZE"):
        assert getattr(lib, name) == getattr(abi, name), name
    assert (abi.QUIC_STREAM_TYPE_SERVER_MASK, abi.QUIC_STREAM_TYPE_UNI_MASK,
            abi.QUIC_STREAM_TYPE_MASK) == (1, 2, 3)
    assert (abi.QUIC_CRYPTO_SECRET_BUFFER_SIZE, abi.QUIC_CLOSE_PHRASE_BUFFER_SIZE) == (48, 64)


def test_all_names_resolve() -> None:
    for name in abi.__all__:
        assert hasattr(abi, name), name
    assert "QUIC_SOCKOPT_TRANSPORT_PARAM_EXT" in abi.__all__ and "Config" in abi.__all__


def test_import_needs_no_compiler_or_header() -> None:
    """pyquic.abi imports and packs in a process with no PATH (no cc) and ABI mode forced."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(abi.__file__).resolve().parents[2]
    code = ("import pyquic.abi as a; assert a.FFI_MODE == 'abi'; "
            "print(a.StreamUpdateEvent(1, 2, 3, 4).pack().hex())")
    env = {"PATH": "", "PYTHONPATH": str(root), "PYQUIC_FFI_MODE": "abi",
           "CC": "/nonexistent/cc"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "01" + "01" + "00" * 7 + "02" + "00" * 3 + "03" + "00" * 3 + (
        "04" + "00" * 7)
