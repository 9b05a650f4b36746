"""Hostile traffic at the user backend's UDP endpoint: Initial floods and junk.

A flooder on loopback sends real client Initials (from in-memory client
connections, so they carry a ClientHello with the listener's ALPN) under many
connection IDs.  The listener's state must stay bounded by its backlog, the
surplus must be refused (RFC 9000 §5.2.2), and a genuine client must still
get through once the application accepts.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from fuzz.harness import Pair

pytest.importorskip("pyquic.user.socket")

from pyquic import abi
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC
from pyquic.engine import packet as pk

ALPN = b"robust"
BACKLOG = 4


def qsocket() -> Any:
    from pyquic.socket_api import socket as make

    return make(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC, backend="user")


def real_initials(n: int) -> list[bytes]:
    """``n`` genuine first client datagrams, each with its own DCID."""
    out = []
    for seed in range(1000, 1000 + n):
        p = Pair(seed=seed)
        out.append(p.client.conn.datagrams_to_send(p.now)[0][0])
    return out


@pytest.fixture
def listener() -> Any:
    lst = qsocket()
    lst.bind(("127.0.0.1", 0))
    lst.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, ALPN)
    lst.listen(BACKLOG)
    yield lst
    lst.close()


def test_initial_flood_is_bounded_and_refused(listener: Any) -> None:
    flood = real_initials(200)
    assert len({pk.parse_header(d, 0, 8).dcid for d in flood}) == 200
    port = listener.getsockname()[1]
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    attacker.settimeout(0.2)
    try:
        refused: set[bytes] = set()

        def drain(wait: float) -> None:
            attacker.settimeout(wait)
            for _ in range(2000):
                try:
                    reply, _ = attacker.recvfrom(65535)
                except TimeoutError:
                    return
                h = pk.parse_header(reply, 0, 8)
                if h.packet_type == pk.PacketType.INITIAL:
                    refused.add(h.dcid)  # the refusal goes to the flooder's SCID

        for i, d in enumerate(flood):
            attacker.sendto(d, ("127.0.0.1", port))
            attacker.sendto(d, ("127.0.0.1", port))  # duplicates must not add state
            if i % 10 == 9:  # paced, so loopback buffers do not drop the flood itself
                drain(0.005)
        drain(0.3)
        refusals = len(refused)
        ep = listener._endpoint
        assert ep is not None
        # state: at most backlog (+1, the kernel's sk_acceptq_is_full is '>') requests
        assert len(ep.pending) <= BACKLOG + 1, len(ep.pending)
        assert all(len(r.datagrams) <= 64 for r in ep.pending.values())
        assert refusals >= 150, refusals  # RFC 9000 §5.2.2: CONNECTION_CLOSE for the rest
    finally:
        attacker.close()


def test_junk_datagrams_do_not_disturb_a_connection(listener: Any, tmp_path: Any) -> None:
    """Random datagrams of every shape at the server's port, during a live
    connection: the connection keeps working and the data arrives intact."""
    import hashlib
    import os
    import random

    from pyquic.tls import x509 as tx
    from pyquic.tls.driver import client_handshake, server_handshake

    cert, key = tx.generate_certificate("localhost", names=("localhost",))
    (tmp_path / "c.pem").write_bytes(tx.cert_to_pem(cert))
    (tmp_path / "k.pem").write_bytes(tx.key_to_pem(key))
    listener.settimeout(10)
    out: dict[str, Any] = {}

    def serve() -> None:
        try:
            s, _ = listener.accept()
            server_handshake(s, str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                             alpns="robust", timeout=10)
            s.settimeout(10)
            h = hashlib.sha256()
            for _ in range(10_000):
                data, anc, _f, _ = s.recvmsg(65536, abi.STREAM_INFO_CMSG_SPACE)
                si, _ = abi.parse_ancdata(anc)
                h.update(data)
                if (si and si.stream_flags & 0x200) or not data:
                    break
            out["h"] = h.hexdigest()
            s.close()
        except BaseException as e:  # noqa: BLE001
            out["err"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = listener.getsockname()[1]
    c = qsocket()
    try:
        c.connect(("127.0.0.1", port))
        client_handshake(c, "localhost", "robust", verify=False, timeout=10)
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rng = random.Random(9)
        payload = os.urandom(300_000)
        for i in range(0, len(payload), 30_000):
            for _ in range(50):
                n = rng.choice((1, 7, 21, 64, 1200, 1400))
                d = bytearray(rng.randbytes(n))
                if rng.random() < 0.5:
                    d[0] = (d[0] & 0x3F) | 0x40  # looks like a short header
                junk.sendto(bytes(d), ("127.0.0.1", port))
            chunk = payload[i:i + 30_000]
            flags = (0x400 if i == 0 else 0) | (0x200 if i + 30_000 >= len(payload) else 0)
            sent = 0
            while sent < len(chunk):
                sent += c.sendmsg([chunk[sent:]], [abi.stream_info_cmsg(0, flags)])
        junk.close()
        t.join(20)
        assert not t.is_alive()
        if "err" in out:
            raise out["err"]
        assert out["h"] == hashlib.sha256(payload).hexdigest()
    finally:
        c.close()
