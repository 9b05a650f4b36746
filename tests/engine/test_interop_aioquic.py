"""The engine against aioquic, in memory: Retry, NEW_TOKEN, version 2, key
update, migration and datagrams (aioquic is used as an independent peer)."""

from __future__ import annotations

import random
import ssl
from typing import Any

import pytest

from pyquic import abi
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.endpoint import stateless_response
from pyquic.engine.packet import VERSION_1, VERSION_2, parse_header

from .netsim import TlsHandshake, _server_cert

aioquic = pytest.importorskip("aioquic")
from aioquic.quic import events as aev
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection as AioConnection

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)
DELAY = 0.005


class Pair:
    """One engine connection and one aioquic connection on a lossless link."""

    def __init__(self, ours: QuicConnection, hs: TlsHandshake | None, aio: Any,
                 ours_is_client: bool, listener: QuicConnection | None = None) -> None:
        self.ours = ours
        self.hs = hs
        # an aioquic server is made on the first datagram (it needs the DCID)
        self._aio_factory = aio if ours_is_client else None
        self.aio: Any = None if ours_is_client else aio
        self.ours_is_client = ours_is_client
        self.listener = listener
        self.now = 1000.0
        self.aio_addr = SERVER if ours_is_client else CLIENT
        self.our_addr = CLIENT if ours_is_client else SERVER
        self.queue: list[tuple[float, bool, bytes, Any]] = []  # (at, to_ours, data, src)
        self.aio_events: list[Any] = []
        self.stateless: list[str] = []
        self.accepted = ours_is_client

    def _flush(self) -> None:
        if self.accepted:
            for d, _addr in self.ours.datagrams_to_send(self.now):
                self.queue.append((self.now + DELAY, False, d, self.our_addr))
        if self.aio is None:
            return
        for d, _addr in self.aio.datagrams_to_send(self.now):
            self.queue.append((self.now + DELAY, True, d, self.aio_addr))

    def _deliver(self, to_ours: bool, data: bytes, src: Any) -> None:
        if not to_ours:
            if self.aio is None:
                assert self._aio_factory is not None
                self.aio = self._aio_factory(parse_header(data, 0).dcid)
            self.aio.receive_datagram(data, src, self.now)
            return
        if not self.accepted:
            assert self.listener is not None
            dec = stateless_response(data, src, self.our_addr, self.now, self.listener)
            if dec.response is not None:
                self.stateless.append(dec.reason)
                self.queue.append((self.now + DELAY, False, dec.response, self.our_addr))
            if not dec.accept:
                return
            self.ours.inherit(self.listener)
            self.hs = TlsHandshake(self.ours, self.now)
            self.ours.accept(data, src, self.our_addr, self.now)
            self.accepted = True
            return
        self.ours.receive_datagram(data, src, self.our_addr, self.now)

    def step_app(self) -> None:
        if self.hs is not None:
            self.hs.pump()
        for _ in range(1000 if self.aio is not None else 0):
            ev = self.aio.next_event()
            if ev is None:
                break
            self.aio_events.append(ev)

    def run(self, until: Any, max_time: float = 20.0, max_steps: int = 100_000) -> bool:
        deadline = self.now + max_time
        for _ in range(max_steps):
            self.step_app()
            self._flush()
            if until(self):
                return True
            aio_t = self.aio.get_timer() if self.aio is not None else None
            times = [t for t in (self.ours.next_timer(), aio_t) if t is not None]
            if self.queue:
                times.append(min(q[0] for q in self.queue))
            if not times:
                return until(self)
            t = min(times)
            if t > deadline:
                return False
            self.now = max(self.now, t)
            due = sorted((q for q in self.queue if q[0] <= self.now), key=lambda q: q[0])
            self.queue = [q for q in self.queue if q[0] > self.now]
            for _at, to_ours, data, src in due:
                self._deliver(to_ours, data, src)
            nt = self.ours.next_timer()
            if nt is not None and nt <= self.now:
                self.ours.handle_timer(self.now)
            at = self.aio.get_timer() if self.aio is not None else None
            if at is not None and at <= self.now:
                self.aio.handle_timer(self.now)
        return False

    def aio_stream(self, sid: int) -> tuple[bytes, bool]:
        data = b"".join(e.data for e in self.aio_events
                        if isinstance(e, aev.StreamDataReceived) and e.stream_id == sid)
        fin = any(isinstance(e, aev.StreamDataReceived) and e.stream_id == sid and e.end_stream
                  for e in self.aio_events)
        return data, fin

    def aio_connected(self) -> bool:
        return any(isinstance(e, aev.HandshakeCompleted) for e in self.aio_events)


def _rand(seed: int):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def _aio_server(versions: list[int] | None = None, dgram: int | None = None) -> Any:
    cert, key = _server_cert()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["sim"],
                            max_datagram_frame_size=dgram)
    cfg.certificate = cert
    cfg.private_key = key
    if versions:
        cfg.supported_versions = versions
    return lambda odcid: AioConnection(configuration=cfg,
                                       original_destination_connection_id=odcid)


def _aio_client(token: bytes = b"", version: int = VERSION_1,
                tokens: list[bytes] | None = None) -> AioConnection:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["sim"], server_name="localhost",
                            verify_mode=ssl.CERT_NONE)
    cfg.original_version = version
    cfg.token = token
    handler = tokens.append if tokens is not None else None
    return AioConnection(configuration=cfg, token_handler=handler)


def _our_client(version: int = 0) -> tuple[QuicConnection, TlsHandshake]:
    c = QuicConnection(True, random=_rand(3))
    if version:
        c.set_config(abi.Config(version=version))
    return c, TlsHandshake(c)


def _start_client_pair(version: int = 0, aio_versions: list[int] | None = None) -> Pair:
    c, hs = _our_client(version)
    aio = _aio_server(aio_versions)
    pair = Pair(c, hs, aio, True)
    c.connect(SERVER, CLIENT, pair.now)
    hs.start()
    assert pair.run(lambda p: p.ours.state == ConnState.ESTABLISHED and p.aio_connected())
    return pair


@pytest.mark.parametrize("version", [VERSION_1, VERSION_2])
def test_client_to_aioquic_transfer(version: int) -> None:
    pair = _start_client_pair(version)
    assert pair.ours.version == version
    payload = random.Random(1).randbytes(100_000)
    sid = pair.ours.stream_open(-1, 0)
    off = 0

    def pump(p: Pair) -> bool:
        nonlocal off
        while off < len(payload):
            try:
                n = p.ours.send_stream(sid, payload[off:off + 16384],
                                       0x200 if off + 16384 >= len(payload) else 0, False)
            except OSError:
                break
            off += n
        return p.aio_stream(sid)[1]

    assert pair.run(pump)
    assert pair.aio_stream(sid) == (payload, True)


def test_client_key_update_with_aioquic() -> None:
    pair = _start_client_pair()
    assert pair.run(lambda p: p.ours.handshake_confirmed)
    pair.ours.key_update()
    sid = pair.ours.stream_open(-1, 0)
    pair.ours.send_stream(sid, b"after key update", 0x200, False)
    assert pair.run(lambda p: p.aio_stream(sid)[1])
    assert pair.aio_stream(sid)[0] == b"after key update"
    assert pair.ours.key_phase == 1
    # aioquic answered in the new phase (RFC 9001 §6.2) ...
    pair.aio.send_ping(1)
    assert pair.run(lambda p: not p.ours._key_pending)
    # ... and its own update is followed
    pair.aio.request_key_update()
    sid2 = pair.aio.get_next_available_stream_id()
    pair.aio.send_stream_data(sid2, b"aio after its update", end_stream=True)
    got: list[bytes] = []

    def read(p: Pair) -> bool:
        for _ in range(100):
            item = p.ours.recv(65536)
            if item is None:
                break
            if item.stream_id == sid2:
                got.append(item.data)
        return b"".join(got) == b"aio after its update"

    assert pair.run(read)
    assert pair.ours.key_phase == 0


def test_client_datagrams_with_aioquic() -> None:
    c, hs = _our_client()
    c.set_transport_param(abi.TransportParam(max_datagram_frame_size=1400))
    pair = Pair(c, hs, _aio_server(dgram=1400), True)
    c.connect(SERVER, CLIENT, pair.now)
    hs.start()
    assert pair.run(lambda p: p.ours.state == ConnState.ESTABLISHED and p.aio_connected())
    c.send_datagram(b"unreliable hello")
    assert pair.run(lambda p: any(isinstance(e, aev.DatagramFrameReceived)
                                  for e in p.aio_events))
    got = [e.data for e in pair.aio_events if isinstance(e, aev.DatagramFrameReceived)]
    assert got == [b"unreliable hello"]


# ------------------------------------------------------- aioquic as the client
def _listener(validate: bool) -> QuicConnection:
    lst = QuicConnection(False, random=_rand(9))
    lst.listen()
    lst.set_config(abi.Config(validate_peer_address=int(validate)))
    return lst


def _server_pair(aio: AioConnection, listener: QuicConnection) -> Pair:
    srv = QuicConnection(False, random=_rand(5))
    pair = Pair(srv, None, aio, False, listener)
    aio.connect(SERVER, pair.now)
    assert pair.run(lambda p: p.accepted and p.ours.state == ConnState.ESTABLISHED
                    and p.aio_connected())
    return pair


def test_aioquic_client_follows_our_retry() -> None:
    pair = _server_pair(_aio_client(), _listener(True))
    assert pair.stateless == ["retry"]
    assert pair.ours.retry_scid is not None and pair.ours.token_validated
    sid = pair.aio.get_next_available_stream_id()
    pair.aio.send_stream_data(sid, b"x" * 5000, end_stream=True)
    got: list[bytes] = []

    def read(p: Pair) -> bool:
        for _ in range(100):
            item = p.ours.recv(65536)
            if item is None:
                break
            if item.stream_id == sid:
                got.append(item.data)
        return len(b"".join(got)) == 5000

    assert pair.run(read)


def test_aioquic_client_uses_our_new_token() -> None:
    lst = _listener(True)
    tokens: list[bytes] = []
    pair = _server_pair(_aio_client(tokens=tokens), lst)
    assert pair.run(lambda p: bool(tokens))
    pair2 = _server_pair(_aio_client(token=tokens[-1]), lst)
    assert pair2.stateless == []  # no Retry: the token validated the address
    assert pair2.ours.token_validated and pair2.ours.retry_scid is None


def test_aioquic_client_v2_against_our_server() -> None:
    pair = _server_pair(_aio_client(version=VERSION_2), _listener(False))
    assert pair.ours.version == VERSION_2


def test_aioquic_client_migration_is_validated() -> None:
    pair = _server_pair(_aio_client(), _listener(False))
    assert pair.run(lambda p: p.ours.handshake_confirmed and len(p.ours.dest) > 1)
    pair.aio_addr = ("127.0.0.1", 40777)  # the client moved
    pair.aio.change_connection_id()
    sid = pair.aio.get_next_available_stream_id()
    pair.aio.send_stream_data(sid, b"from the new address", end_stream=True)
    assert pair.run(lambda p: p.ours.remote_addr == ("127.0.0.1", 40777)
                    and p.ours.paths.validated)
