"""DPLPMTUD through the user backend's sockets on loopback (RFC 8899, RFC 9000 §14.3)."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from pyquic import abi
from pyquic.tls import driver
from pyquic.tls.x509 import generate_self_signed
from pyquic.user.socket import QuicSocket
from tests.netproxy import NetProxy

TIMEOUT = 30
PROBE_US = 5_000_000  # the kernel's smallest plpmtud_probe_interval


def _transfer(tmp_path: Any, probe_interval: int) -> tuple[int, bool]:
    """Send 2 MB server -> client through a recording proxy; (largest datagram, intact)."""
    cert, key = generate_self_signed("localhost")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    blob = os.urandom(2_000_000)
    cfg = abi.Config(plpmtud_probe_interval=probe_interval).pack()
    ls = QuicSocket()
    ls.bind(("127.0.0.1", 0))
    ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.ALPN, b"pmtu")
    ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG, cfg)
    ls.listen()
    largest = [0]

    def record(data: bytes, direction: str) -> bytes:
        largest[0] = max(largest[0], len(data))
        return data

    def serve() -> None:
        s, _ = ls.accept()
        driver.server_handshake(s, tmp_path / "c.pem", tmp_path / "k.pem", timeout=TIMEOUT)
        s.settimeout(TIMEOUT)
        sid = s.open_stream()
        view = memoryview(blob)
        for i in range(0, len(blob), 65536):
            s.send_stream(sid, bytes(view[i:i + 65536]), fin=i + 65536 >= len(blob))
        s.recv_message()  # the client's "done" keeps the connection open until read
        s.close()  # else it stays registered and later leak checks see it

    with NetProxy(ls.getsockname(), mutate=record, lifetime=TIMEOUT * 2) as proxy:
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        c = QuicSocket()
        c.settimeout(TIMEOUT)
        c.setsockopt(abi.SOL_QUIC, abi.SockOpt.CONFIG, cfg)
        c.connect(proxy.address)
        driver.client_handshake(c, "localhost", "pmtu", cafile=tmp_path / "c.pem",
                                timeout=TIMEOUT)
        got = bytearray()
        for _ in range(100_000):  # bounded: one message per turn
            msg = c.recv_message(1 << 20)
            got += msg.data
            if msg.fin:
                break
        sid = c.open_stream()
        c.send_stream(sid, b"done", fin=True)
        t.join(TIMEOUT)
        c.close()
    ls.close()
    return largest[0], hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()


def test_pmtu_discovery_exceeds_1500_on_loopback(tmp_path: Any) -> None:
    largest, intact = _transfer(tmp_path, PROBE_US)
    assert intact
    assert largest > 1500


def test_without_discovery_datagrams_stay_at_the_base_size(tmp_path: Any) -> None:
    largest, intact = _transfer(tmp_path, 0)
    assert intact
    assert largest <= 1500

