"""Handshake modes between pyquic's client and server over the user backend's UDP sockets.

The in-memory tests (test_context.py) cover every suite, group and key type at
the TLS level; these run the same choices through real QuicSockets on 127.0.0.1,
then move application data to prove the installed keys agree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyquic import abi
from pyquic.tls import driver

user_socket = pytest.importorskip("pyquic.user.socket")

TIMEOUT = 10


def _pair(ls: Any, server: Callable[[Any], Any], client: Callable[[Any], Any],
          config: abi.Config | None = None) -> tuple[Any, Any]:
    """Handshake one connection to ``ls``; echo one stream; return both results."""
    out: dict[str, Any] = {}

    def serve() -> None:
        try:
            s, _ = ls.accept()
            out["server"] = server(s)
            msg = s.recv_message()
            s.send_stream(msg.stream_id, msg.data[::-1], fin=True)
            out["sock"] = s
        except Exception as exc:  # noqa: BLE001 - reported below
            out["server"] = exc

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = user_socket.QuicSocket()
    c.settimeout(TIMEOUT)
    if config is not None:
        c.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG, config.pack())
    c.connect(ls.getsockname())
    try:
        cr = client(c)
        sid = c.open_stream()
        c.send_stream(sid, b"pyquic", fin=True)
        reply = c.recv_message()
        t.join(TIMEOUT)
        assert not t.is_alive()
        assert not isinstance(out["server"], Exception), out["server"]
        assert reply.stream_id == sid and reply.data == b"ciuqyp"
        return cr, out["server"]
    finally:
        c.close()
        if "sock" in out:
            out["sock"].close()


@pytest.mark.parametrize("cipher", [abi.TlsCipher.AES_GCM_128, abi.TlsCipher.AES_GCM_256,
                                    abi.TlsCipher.CHACHA20_POLY1305])
def test_each_cipher_suite(pki: Any, listener: Any, cipher: abi.TlsCipher) -> None:
    cr, sr = _pair(
        listener,
        lambda s: driver.server_handshake(s, pki.server_cert, pki.server_key, timeout=TIMEOUT),
        lambda c: driver.client_handshake(c, "localhost", "h3", cafile=pki.ca, timeout=TIMEOUT),
        abi.Config(payload_cipher_type=cipher))
    assert cr.cipher == sr.cipher == cipher


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_each_server_key_type(pki: Any, listener: Any,
                              keyed_certs: dict[str, tuple[Path, Path]], kind: str) -> None:
    cert, key = keyed_certs[kind]
    cr, _ = _pair(listener, lambda s: driver.server_handshake(s, cert, key, timeout=TIMEOUT),
                  lambda c: driver.client_handshake(c, "localhost", "h3", cafile=pki.ca,
                                                    timeout=TIMEOUT))
    assert cr.peer_certificate is not None


def test_psk_mode(tmp_path: Path, listener: Any) -> None:
    psk = tmp_path / "psk.txt"
    psk.write_text("alice:" + "5a" * 32 + "\n")
    cr, sr = _pair(listener, lambda s: driver.server_handshake(s, psk_file=psk, timeout=TIMEOUT),
                   lambda c: driver.client_handshake(c, None, "h3", psk_file=psk,
                                                     timeout=TIMEOUT))
    assert cr.psk and sr.psk and cr.peer_certificate is None


def test_client_certificate(pki: Any, listener: Any) -> None:
    cr, sr = _pair(
        listener,
        lambda s: driver.server_handshake(s, pki.server_cert, pki.server_key, cafile=pki.ca,
                                          require_client_cert=True, timeout=TIMEOUT),
        lambda c: driver.client_handshake(c, "localhost", "h3", cafile=pki.ca,
                                          certfile=pki.client_cert, keyfile=pki.client_key,
                                          timeout=TIMEOUT))
    assert sr.peer_certificate is not None and cr.peer_certificate is not None
