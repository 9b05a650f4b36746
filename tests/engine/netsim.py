"""A deterministic simulated network driving two QuicConnections.

Virtual clock, one-way delay, a link rate (so the congestion window matters),
and a seeded ``random.Random`` for loss, reordering and duplication.  The
loop is bounded in steps and in virtual time.  Until the TLS engine is wired
in, :class:`FakeHandshake` drives the kernel's handshake contract with
made-up messages and secrets (send_handshake / recv with a level /
set_crypto_secret / transport parameter blobs), the way libquic drives a
kernel socket.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pyquic import abi
from pyquic.abi import CryptoLevel
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.endpoint import stateless_response

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
AES128 = 51

# fake TLS message types
_CH, _SH, _EE, _CFIN = 1, 2, 8, 20


def _msg(mtype: int, body: bytes) -> bytes:
    return bytes((mtype,)) + len(body).to_bytes(3, "big") + body


def _secret(label: bytes, seed: bytes) -> bytes:
    return hashlib.sha256(label + seed).digest()


class FakeHandshake:
    """Drives one side's handshake over the connection's handshake contract.

    Client: ClientHello(tp) at INITIAL.  Server: ServerHello at INITIAL, then
    EncryptedExtensions(tp) + a padded "certificate" at HANDSHAKE.  Client:
    Finished at HANDSHAKE.  Secrets: HANDSHAKE after the hellos, APP send when
    the sender's flight is out, APP receive last (as libquic installs them).
    """

    def __init__(self, conn: QuicConnection, seed: bytes = b"seed", cert_len: int = 2500) -> None:
        self.conn = conn
        self.seed = seed
        self.cert_len = cert_len
        self.buf = {int(CryptoLevel.INITIAL): b"", int(CryptoLevel.HANDSHAKE): b""}
        self.started = False
        self.done = False

    def _install(self, level: int, send: bool, label: bytes) -> None:
        s = abi.CryptoSecret(send=int(send), level=level, type=AES128,
                             secret=_secret(label, self.seed))
        self.conn.set_crypto_secret(s)

    def _keys(self, level: int, client_label: bytes, server_label: bytes) -> None:
        mine, theirs = (client_label, server_label) if self.conn.is_client else (
            server_label, client_label)
        self._install(level, True, mine)
        self._install(level, False, theirs)

    def start(self) -> None:
        """Client: send the ClientHello (call right after connect)."""
        if self.conn.is_client and not self.started:
            self.started = True
            tp = self.conn.get_transport_param_ext()
            self.conn.send_handshake(CryptoLevel.INITIAL, _msg(_CH, tp))

    def pump(self) -> None:
        """Consume handshake messages waiting in the receive queue."""
        conn = self.conn
        for _ in range(64):
            item = conn.recv(65536, peek=True)
            if item is None or item.level is None:
                return
            conn.recv(65536)
            self.buf[item.level] = self.buf.get(item.level, b"") + item.data
            self._parse(item.level)

    def _parse(self, level: int) -> None:
        buf = self.buf[level]
        while len(buf) >= 4:
            n = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + n:
                break
            mtype, body = buf[0], buf[4:4 + n]
            buf = buf[4 + n:]
            self._on_message(mtype, body)
        self.buf[level] = buf

    def _on_message(self, mtype: int, body: bytes) -> None:
        conn = self.conn
        if mtype == _CH and not conn.is_client:
            conn.set_transport_param_ext(body)
            tp = conn.get_transport_param_ext()
            conn.send_handshake(CryptoLevel.INITIAL, _msg(_SH, b"server hello"))
            self._keys(CryptoLevel.HANDSHAKE, b"c hs", b"s hs")
            cert = bytes(range(256)) * (self.cert_len // 256 + 1)
            conn.send_handshake(CryptoLevel.HANDSHAKE,
                                _msg(_EE, tp) + _msg(11, cert[:self.cert_len]))
            self._install(CryptoLevel.APP, True, b"s ap")
        elif mtype == _SH and conn.is_client:
            self._keys(CryptoLevel.HANDSHAKE, b"c hs", b"s hs")
        elif mtype == _EE and conn.is_client:
            conn.set_transport_param_ext(body)
        elif mtype == 11 and conn.is_client:
            conn.send_handshake(CryptoLevel.HANDSHAKE, _msg(_CFIN, b"client finished"))
            self._install(CryptoLevel.APP, True, b"c ap")
            self._install(CryptoLevel.APP, False, b"s ap")
            self.done = True
        elif mtype == _CFIN and not conn.is_client:
            self._install(CryptoLevel.APP, False, b"c ap")
            self.done = True


@dataclass(order=True)
class _InFlight:
    at: float
    seq: int
    to_server: bool = field(compare=False)
    data: bytes = field(compare=False)
    src: object = field(compare=False, default=None)
    dst: object = field(compare=False, default=None)


class NetSim:
    """Two endpoints joined by a lossy, reordering, duplicating link."""

    def __init__(self, seed: int = 1, loss: float = 0.0, reorder: float = 0.0,
                 dup: float = 0.0, delay: float = 0.010, rate: float = 100e6,
                 client: QuicConnection | None = None,
                 server_setup: Callable[[QuicConnection], None] | None = None,
                 real_tls: bool = False) -> None:
        self.rng = random.Random(seed)
        self.loss, self.reorder, self.dup = loss, reorder, dup
        self.delay, self.rate = delay, rate
        self.now = 1000.0
        self._seq = 0
        self._queue: list[_InFlight] = []
        self._link_free = {True: 0.0, False: 0.0}
        rnd = random.Random(seed + 7919)
        self.rand_bytes: Callable[[int], bytes] = lambda n: rnd.randbytes(n)
        self.client = client or QuicConnection(True, random=self.rand_bytes)
        self.server_setup = server_setup
        self.server: QuicConnection | None = None
        # real_tls: drive the handshakes with pyquic.tls instead of FakeHandshake
        self.real_tls = real_tls
        self.client_hs: FakeHandshake | TlsHandshake = (
            TlsHandshake(self.client, self.now) if real_tls else FakeHandshake(self.client))
        self.server_hs: FakeHandshake | TlsHandshake | None = None
        self.sent = {True: 0, False: 0}
        self.dropped = 0
        self.on_step: Callable[[NetSim], None] | None = None
        self.client_addr = CLIENT_ADDR  # change it to simulate a NAT rebinding
        # optional listener: datagrams matching no connection go through the
        # stateless endpoint logic (Retry, Version Negotiation, reset) first
        self.listener: QuicConnection | None = None
        self.stateless: list[str] = []  # Decision.reason of each answered datagram
        self.mtu = 0  # if set, larger datagrams are dropped (path MTU)
        self.too_big = 0
        # per-datagram addressing (datagrams_to_send_from); ``nat`` maps a
        # client local address to the address the server sees
        self.use_from = False
        self.nat: dict[object, object] = {}
        self.server_addrs: set[object] = {SERVER_ADDR}
        self.misrouted = 0
        # send at once after each delivered datagram, before the TLS drivers
        # run (a socket layer that ACKs from its receive path)
        self.flush_on_receive = False

    # ------------------------------------------------------------ link
    def _transmit(self, to_server: bool, data: bytes, src: object = None,
                  dst: object = None) -> None:
        self.sent[to_server] += 1
        if self.mtu and len(data) > self.mtu:
            self.too_big += 1
            return
        rng = self.rng
        if rng.random() < self.loss:
            self.dropped += 1
            return
        start = max(self.now, self._link_free[to_server])
        done = start + len(data) * 8 / self.rate
        self._link_free[to_server] = done
        at = done + self.delay
        if rng.random() < self.reorder:
            at += rng.uniform(0.0, 2 * self.delay)
        copies = 2 if rng.random() < self.dup else 1
        for i in range(copies):
            self._seq += 1
            heapq.heappush(self._queue, _InFlight(at + i * 0.0005, self._seq, to_server, data,
                                                  src, dst))

    def _flush(self) -> None:
        if self.use_from:
            for d, remote, local in self.client.datagrams_to_send_from(self.now):
                self._transmit(True, d, self.nat.get(local, local), remote)
            if self.server is not None:
                for d, remote, local in self.server.datagrams_to_send_from(self.now):
                    self._transmit(False, d, local, remote)
            return
        for d, addr in self.client.datagrams_to_send(self.now):
            self._transmit(True, d, self.client_addr, addr)
        if self.server is not None:
            for d, addr in self.server.datagrams_to_send(self.now):
                self._transmit(False, d, SERVER_ADDR, addr)

    def _deliver(self, item: _InFlight) -> None:
        src = item.src if item.src is not None else self.client_addr
        dst = item.dst if item.dst is not None else SERVER_ADDR
        if item.to_server and dst not in self.server_addrs:
            self.misrouted += 1
            return
        if item.to_server:
            if self.server is None:
                if self.listener is not None:
                    d = stateless_response(item.data, src, dst, self.now,
                                           self.listener, random=self.rand_bytes)
                    if d.response is not None:
                        self.stateless.append(d.reason)
                        self._transmit(False, d.response, dst, src)
                    if not d.accept:
                        return
                srv = QuicConnection(False, random=self.rand_bytes)
                if self.listener is not None:
                    srv.inherit(self.listener)
                if self.server_setup is not None:
                    self.server_setup(srv)
                self.server = srv
                self.server_hs = (TlsHandshake(srv, self.now) if self.real_tls
                                  else FakeHandshake(srv))
                srv.accept(item.data, src, dst, self.now)
            else:
                self.server.receive_datagram(item.data, src, dst, self.now)
        else:
            if self.use_from:
                back = {v: k for k, v in self.nat.items()}
                local = back.get(dst, dst)
            else:
                local = self.client_addr
            self.client.receive_datagram(item.data, src, local, self.now)

    # ------------------------------------------------------------ driving
    def connect(self) -> None:
        self.client.connect(SERVER_ADDR, CLIENT_ADDR, self.now)
        self.client_hs.start()

    def _app(self) -> None:
        self.client_hs.pump()
        if self.server_hs is not None:
            self.server_hs.pump()
        if self.on_step is not None:
            self.on_step(self)

    def run(self, until: Callable[[NetSim], bool], max_steps: int = 200_000,
            max_time: float = 600.0) -> bool:
        """Advance until ``until(self)`` holds; False if the bounds ran out."""
        deadline = self.now + max_time
        for _ in range(max_steps):
            self._app()
            self._flush()
            if until(self):
                return True
            conns = [c for c in (self.client, self.server) if c is not None]
            times = [t for t in (c.next_timer() for c in conns) if t is not None]
            if self._queue:
                times.append(self._queue[0].at)
            if not times:
                return until(self)
            t = min(times)
            if t > deadline:
                return False
            self.now = max(self.now, t)
            while self._queue and self._queue[0].at <= self.now:
                self._deliver(heapq.heappop(self._queue))
                if self.flush_on_receive:
                    self._flush()
            for c in conns:
                nt = c.next_timer()
                if nt is not None and nt <= self.now:
                    c.handle_timer(self.now)
        return False

    def handshake(self, max_time: float = 60.0) -> bool:
        self.connect()
        return self.run(lambda s: s.server is not None
                        and s.client.state == ConnState.ESTABLISHED
                        and s.server.state == ConnState.ESTABLISHED, max_time=max_time)


class StreamSender:
    """Writes ``payloads`` (stream index -> bytes) on new streams, with FIN."""

    def __init__(self, conn: QuicConnection, payloads: list[bytes], chunk: int = 65536,
                 uni: bool = False) -> None:
        self.conn = conn
        self.payloads = payloads
        self.chunk = chunk
        self.uni = uni
        self.ids: list[int] = []
        self.offsets: list[int] = []
        self.done = False

    def step(self) -> None:
        conn = self.conn
        if conn.state != ConnState.ESTABLISHED or self.done:
            return
        while len(self.ids) < len(self.payloads):
            flags = 0x800 if self.uni else 0
            try:
                sid = conn.stream_open(-1, flags)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    break
                raise
            self.ids.append(sid)
            self.offsets.append(0)
        progress = True
        budget = 10_000
        while progress and budget > 0:
            progress = False
            for i, sid in enumerate(self.ids):
                data = self.payloads[i]
                off = self.offsets[i]
                if off > len(data):
                    continue
                budget -= 1
                piece = data[off:off + self.chunk]
                fin = off + len(piece) >= len(data)
                try:
                    n = conn.send_stream(sid, piece, 0x200 if fin else 0, True)
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.ENOSPC):
                        continue
                    raise
                if fin and n == len(piece):
                    self.offsets[i] = len(data) + 1
                else:
                    self.offsets[i] = off + n
                progress = progress or n > 0 or fin
        self.done = len(self.ids) == len(self.payloads) and all(
            o > len(d) for o, d in zip(self.offsets, self.payloads))


class StreamReceiver:
    """Reads everything from a connection's receive queue, per stream."""

    def __init__(self) -> None:
        self.data: dict[int, list[bytes]] = {}
        self.fin: set[int] = set()
        self.events: list[bytes] = []
        self.datagrams: list[bytes] = []

    def step(self, conn: QuicConnection | None) -> None:
        if conn is None:
            return
        for _ in range(100_000):
            item = conn.recv(1 << 20)
            if item is None:
                return
            if item.level is not None:
                continue
            if item.msg_flags & 0x8000:
                self.events.append(item.data)
            elif item.msg_flags & 0x1000:
                self.datagrams.append(item.data)
            elif item.stream_id is not None:
                self.data.setdefault(item.stream_id, []).append(item.data)
                if item.stream_flags & 0x200:
                    self.fin.add(item.stream_id)

    def stream(self, sid: int) -> bytes:
        return b"".join(self.data.get(sid, []))


_CERT: tuple[object, object] | None = None


def _server_cert() -> tuple[object, object]:
    global _CERT
    if _CERT is None:
        from pyquic.tls.x509 import generate_certificate

        _CERT = generate_certificate("localhost", names=("localhost",))
    return _CERT


class TlsHandshake:
    """Drives one side's handshake with the real TLS engine (pyquic.tls),
    in the same order as pyquic.tls.driver: our transport parameters are
    read when the TLS engine first needs them (a server installs the
    client's before), the peer's go in before the keys of its flight, then
    the secrets, then the messages.  Same interface as :class:`FakeHandshake`."""

    def __init__(self, conn: QuicConnection, now: float = 1000.0, alpn: str = "sim",
                 **config: object) -> None:
        from pyquic.tls.context import TlsConfig, TlsContext

        self.conn = conn
        if conn.is_client:
            cfg = TlsConfig(is_client=True, alpn_protocols=[alpn], server_name="localhost",
                            verify_peer=False, **config)  # type: ignore[arg-type]
        else:
            cert, key = _server_cert()
            cfg = TlsConfig(is_client=False, alpn_protocols=[alpn],
                            certificate_chain=[cert],  # type: ignore[list-item]
                            private_key=key, **config)  # type: ignore[arg-type]
        self._cfg = cfg
        self._ctx_cls = TlsContext
        self._now = now
        self.ctx: TlsContext | None = None
        self.peer_tp_set = False
        self.started = False
        self.done = False
        self.app_messages: list[bytes] = []

    def _local_tp(self, peer: bytes | None) -> bytes:
        # pyquic.tls.driver's order (libquic's): the peer's parameters go in
        # before ours are read, so a server can upgrade the version first
        if peer is not None and not self.peer_tp_set:
            self.conn.set_transport_param_ext(peer)
            self.peer_tp_set = True
        return self.conn.get_transport_param_ext()

    def _ensure(self) -> None:
        if self.ctx is None:
            self.ctx = self._ctx_cls(self._cfg, self._local_tp, now=self._now)

    def start(self) -> None:
        if self.conn.is_client and not self.started:
            self.started = True
            self._ensure()
            assert self.ctx is not None
            self.ctx.start()
            self._flush()

    def _flush(self) -> None:
        ctx, conn = self.ctx, self.conn
        assert ctx is not None
        if not self.peer_tp_set and ctx.peer_transport_parameters is not None:
            conn.set_transport_param_ext(ctx.peer_transport_parameters)
            self.peer_tp_set = True
        for s in ctx.secrets_to_install():
            conn.set_crypto_secret(abi.CryptoSecret(int(s.send), s.level, s.cipher, s.secret))
        for level, data in ctx.data_to_send():
            if level == CryptoLevel.APP:
                self.app_messages.append(data)  # NewSessionTicket
                if conn.state == ConnState.ESTABLISHED:
                    conn.send_handshake(level, data)
            else:
                conn.send_handshake(level, data)
        if ctx.handshake_complete:
            self.done = True

    def pump(self) -> None:
        conn = self.conn
        for _ in range(64):
            item = conn.recv(65536, peek=True)
            if item is None or item.level is None:
                return
            conn.recv(65536)
            if conn.state not in (ConnState.ESTABLISHING, ConnState.ESTABLISHED):
                return
            self._ensure()
            assert self.ctx is not None
            self.ctx.receive(item.level, item.data)
            self._flush()
