"""Two QuicConnections joined in memory, with pyquic's TLS driving the handshake.

Used by the hostile-peer tests (tests/robust) and by the connection fuzz
targets.  No sockets and no clock: ``Pair.now`` is advanced by the caller, so
every run is deterministic for a given seed.

API::

    pair = Pair(seed=1)                 # client + (lazily) server
    pair.handshake()                    # -> True once both are ESTABLISHED
    pair.client.conn, pair.server.conn  # the QuicConnections (pair.has_server)
    moved = pair.flight(src, dst, mutate=None)  # move one batch of datagrams
    pair.run(rounds, mutate=None)       # alternate flights and timers
    pair.advance(dt)                    # move the clock, run due timers

The handshake contract is the kernel's (KERNEL-API.md): TLS messages travel
through ``send_handshake``/``recv``, secrets through ``set_crypto_secret``
and the peer's transport parameters through ``set_transport_param_ext``.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pyquic import abi
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.tls.context import TlsConfig, TlsContext
from pyquic.tls.messages import TlsAlert

__all__ = ["ALPN", "CLIENT_ADDR", "SERVER_ADDR", "Pair", "Peer", "server_identity"]

ALPN = "robust"
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)
NOW0 = 1000.0

Mutator = Callable[[bytes], "bytes | None"]


@lru_cache(maxsize=1)
def server_identity() -> tuple[Any, Any]:
    """A self-signed certificate and key for 'localhost', made once per process."""
    from pyquic.tls.x509 import generate_certificate

    return generate_certificate("localhost", names=("localhost", "127.0.0.1"))


class Peer:
    """One endpoint: a QuicConnection and the TLS context that drives it."""

    def __init__(self, conn: QuicConnection, config: TlsConfig, addr: tuple[str, int]) -> None:
        self.conn = conn
        self.config = config
        self.addr = addr
        self.tls: TlsContext | None = None
        self.tp_set = False
        self.alert: TlsAlert | None = None
        self.items: list[Any] = []  # non-handshake RecvItems (stream data, events...)

    def start_tls(self, now: float) -> None:
        self.tls = TlsContext(self.config, self.conn.get_transport_param_ext(), now=now)
        if self.config.is_client:
            self.tls.start()
        self.flush()

    def flush(self) -> None:
        """Hand TLS output (peer parameters, secrets, messages) to the connection."""
        tls = self.tls
        if tls is None or self.conn.is_closed:
            return
        if not self.tp_set and tls.peer_transport_parameters is not None:
            self.tp_set = True
            self.conn.set_transport_param_ext(tls.peer_transport_parameters)
        for s in tls.secrets_to_install():
            self.conn.set_crypto_secret(abi.CryptoSecret(int(s.send), s.level, s.cipher,
                                                         s.secret))
        for level, data in tls.data_to_send():
            self.conn.send_handshake(level, data)

    def pump(self, now: float) -> None:
        """Feed received handshake messages to TLS; keep everything else."""
        for _ in range(10_000):
            item = self.conn.recv(1 << 20)
            if item is None:
                return
            if item.level is not None and self.tls is not None and self.alert is None:
                try:
                    self.tls.now = now
                    self.tls.receive(int(item.level), bytes(item.data))
                    self.flush()
                except TlsAlert as a:
                    self.alert = a
                except OSError:
                    return
            else:
                self.items.append(item)


class Pair:
    """A client and a server QuicConnection talking through lists in memory."""

    def __init__(self, seed: int = 1, *, client_tp: dict[str, int] | None = None,
                 server_tp: dict[str, int] | None = None, start: bool = True) -> None:
        self.now = NOW0
        self.rng = _random.Random(seed)
        cert, key = server_identity()
        c = QuicConnection(True, random=self.rng.randbytes)
        self._server_tp = server_tp
        if client_tp:
            self._set_tp(c, client_tp)
        self.client = Peer(c, TlsConfig(is_client=True, alpn_protocols=[ALPN],
                                        server_name="localhost", verify_peer=False),
                           CLIENT_ADDR)
        self._server_config = TlsConfig(is_client=False, alpn_protocols=[ALPN],
                                        certificate_chain=[cert], private_key=key)
        self._server: Peer | None = None
        if start:
            c.connect(SERVER_ADDR, CLIENT_ADDR, self.now)
            self.client.start_tls(self.now)

    @property
    def server(self) -> Peer:
        """The server peer (it exists once the client's first datagram arrived)."""
        if self._server is None:
            raise RuntimeError("no server yet: no datagram reached it")
        return self._server

    @server.setter
    def server(self, peer: Peer) -> None:
        self._server = peer

    @property
    def has_server(self) -> bool:
        return self._server is not None

    @staticmethod
    def _set_tp(conn: QuicConnection, values: dict[str, int]) -> None:
        p = conn.get_transport_param(False)
        for k, v in values.items():
            setattr(p, k, v)
        conn.set_transport_param(p)

    def new_server(self) -> Peer:
        s = QuicConnection(False, random=self.rng.randbytes)
        if self._server_tp:
            self._set_tp(s, self._server_tp)
        return Peer(s, self._server_config, SERVER_ADDR)

    # ------------------------------------------------------------ moving
    def flight(self, src: Peer, dst: Peer | None, mutate: Mutator | None = None) -> int:
        """Move what ``src`` sends now to ``dst``; returns datagrams delivered."""
        out = src.conn.datagrams_to_send(self.now)
        n = 0
        for data, _addr in out:
            if mutate is not None:
                m = mutate(data)
                if m is None:
                    continue
                data = m
            if dst is None:  # the server does not exist yet: this is its first datagram
                dst = self._server = self.new_server()
                dst.conn.accept(data, src.addr, dst.addr, self.now)
                dst.start_tls(self.now)
            else:
                dst.conn.receive_datagram(data, src.addr, dst.addr, self.now)
            dst.pump(self.now)
            n += 1
        return n

    def advance(self, dt: float) -> None:
        """Move the clock by ``dt`` and run the timers that came due."""
        self.now += dt
        for p in (self.client, self._server):
            if p is not None:
                t = p.conn.next_timer()
                if t is not None and t <= self.now:
                    p.conn.handle_timer(self.now)

    def run(self, rounds: int = 20, mutate: Mutator | None = None, dt: float = 0.005) -> int:
        """Alternate flights both ways for at most ``rounds``; stop when idle."""
        total = 0
        for _ in range(rounds):
            moved = self.flight(self.client, self._server, mutate)
            if self._server is not None:
                moved += self.flight(self._server, self.client, mutate)
            total += moved
            self.advance(dt)
            if not moved and self.established():
                break
        return total

    def established(self) -> bool:
        return (self._server is not None
                and self.client.conn.state == ConnState.ESTABLISHED
                and self._server.conn.state == ConnState.ESTABLISHED)

    def handshake(self, rounds: int = 40) -> bool:
        """Run until both sides are ESTABLISHED and the server's HANDSHAKE_DONE is in."""
        for _ in range(rounds):
            self.run(1)
            if self.established() and self.client.conn.handshake_confirmed:
                self.run(3)
                return True
        return False
