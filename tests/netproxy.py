"""A seeded, lossy UDP proxy on loopback for robustness and interop tests.

It sits between a client and a server and damages the traffic on purpose:
loss, reordering, duplication, corruption (bit flips) and delay, configured
per direction.  It runs in a background thread, counts what it did, stops by
itself after ``lifetime`` seconds, and stops cleanly on ``stop()`` or at the
end of a ``with`` block.  Only loopback addresses (127.0.0.0/8, ::1) are
accepted, so a test can never spray damaged packets at a real network.

API::

    from tests.netproxy import LinkConfig, NetProxy

    with NetProxy(("127.0.0.1", server_port),
                  c2s=LinkConfig(loss=0.1, reorder=0.05, duplicate=0.01),
                  s2c=LinkConfig(loss=0.1),
                  seed=1, lifetime=120.0) as proxy:
        client.connect(proxy.address)      # talk to the proxy, not the server
        ...
        print(proxy.stats())               # {"c2s": {...}, "s2c": {...}}
        proxy.c2s.loss = 1.0               # settings may change at run time

``NetProxy(upstream, *, listen=None, c2s=None, s2c=None, seed=0,
lifetime=60.0, max_clients=64, mutate=None)``

- ``upstream``: the server's ``(host, port)`` (IPv4 or IPv6 loopback).
- ``listen``: where the proxy binds; default the same family's loopback
  address with an ephemeral port.  ``proxy.address`` is the bound address.
- ``c2s`` / ``s2c``: :class:`LinkConfig` for client->server and
  server->client.  Fields (probabilities in [0, 1], times in seconds):
  ``loss``, ``reorder`` (hold the datagram back ``reorder_delay`` extra so
  later ones overtake it), ``duplicate`` (send it twice), ``corrupt`` (flip
  ``corrupt_bits`` random bits), ``delay`` + uniform ``jitter`` (a base
  one-way delay), and ``blackhole`` (drop everything; use it to kill a
  peer).  They are plain attributes, read for every datagram.
- ``seed``: each direction draws from its own ``random.Random`` seeded from
  it, so the sequence of decisions is reproducible (timing is not).
- ``lifetime``: hard bound on the thread's life in seconds.
- ``max_clients``: distinct client addresses tracked (each gets its own
  upstream socket so the server sees one address per client); datagrams
  from more clients are dropped and counted as ``rejected``.
- ``mutate(data, direction) -> bytes | None``: optional hook applied after
  the built-in damage; return None to drop.  ``direction`` is "c2s"/"s2c".

Methods and attributes: ``start()`` (``__enter__`` calls it), ``stop(timeout=5)``
(``__exit__`` calls it; joins the thread and closes every socket),
``address``, ``running``, ``stats() -> dict[str, dict[str, int]]`` (per
direction: ``received``, ``forwarded`` (datagrams sent, duplicates
included), ``dropped``, ``duplicated``, ``reordered``, ``corrupted``,
``delayed``, ``bytes_in``, ``bytes_out``; plus ``rejected`` at top level),
``reset_stats()``, ``error`` (an exception that ended the thread, else None).
"""

from __future__ import annotations

import heapq
import ipaddress
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["DIRECTIONS", "LinkConfig", "NetProxy"]

DIRECTIONS = ("c2s", "s2c")
_MAX_DATAGRAM = 65535
_TICK = 0.05  # the longest the thread sleeps, so stop() is prompt

Addr = tuple[Any, ...]


@dataclass
class LinkConfig:
    """Damage applied to one direction of the proxied traffic."""

    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.01
    duplicate: float = 0.0
    corrupt: float = 0.0
    corrupt_bits: int = 1
    delay: float = 0.0
    jitter: float = 0.0
    blackhole: bool = False

    def __post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {v!r}")
        for name in ("reorder_delay", "delay", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.corrupt_bits < 1:
            raise ValueError("corrupt_bits must be >= 1")


_COUNTERS = ("received", "forwarded", "dropped", "duplicated", "reordered", "corrupted",
             "delayed", "bytes_in", "bytes_out")


def _check_loopback(host: str) -> None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"netproxy: {host!r} is not a numeric loopback address") from None
    if not ip.is_loopback:
        raise ValueError(f"netproxy: {host!r} is not a loopback address")


class NetProxy:
    """A UDP proxy thread that damages traffic per :class:`LinkConfig`."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen: tuple[str, int] | None = None,
        c2s: LinkConfig | None = None,
        s2c: LinkConfig | None = None,
        seed: int = 0,
        lifetime: float = 60.0,
        max_clients: int = 64,
        mutate: Callable[[bytes, str], bytes | None] | None = None,
    ) -> None:
        _check_loopback(upstream[0])
        self._family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        if listen is None:
            listen = ("::1" if self._family == socket.AF_INET6 else "127.0.0.1", 0)
        _check_loopback(listen[0])
        if lifetime <= 0:
            raise ValueError("lifetime must be > 0")
        self.upstream: Addr = tuple(upstream)
        self.c2s = c2s if c2s is not None else LinkConfig()
        self.s2c = s2c if s2c is not None else LinkConfig()
        self.lifetime = lifetime
        self.max_clients = max_clients
        self.mutate = mutate
        self.error: BaseException | None = None
        self._rng = {"c2s": random.Random(f"{seed}/c2s"), "s2c": random.Random(f"{seed}/s2c")}
        self._lock = threading.Lock()
        self._stats: dict[str, dict[str, int]] = {}
        self._rejected = 0
        self.reset_stats()
        self._listen = socket.socket(self._family, socket.SOCK_DGRAM)
        self._listen.bind(listen)
        self._listen.setblocking(False)
        self.address: Addr = self._listen.getsockname()[:2]
        self._clients: dict[Addr, socket.socket] = {}
        self._upstream_of: dict[socket.socket, Addr] = {}
        self._queue: list[tuple[float, int, str, socket.socket, Addr, bytes]] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listen, selectors.EVENT_READ)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> NetProxy:
        """Start the proxy thread (once)."""
        if self._thread is not None:
            raise RuntimeError("netproxy already started")
        self._thread = threading.Thread(target=self._run, name="netproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, wait for it (bounded) and close every socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("netproxy thread did not stop")
        self._close_all()

    def __enter__(self) -> NetProxy:  # noqa: PYI034 - not meant to be subclassed
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- counters ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        with self._lock:
            out: dict[str, Any] = {d: dict(c) for d, c in self._stats.items()}
            out["rejected"] = self._rejected
        return out

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = {d: dict.fromkeys(_COUNTERS, 0) for d in DIRECTIONS}
            self._rejected = 0

    def _count(self, direction: str, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[direction][name] += n

    # -- the thread ----------------------------------------------------------

    def _close_all(self) -> None:
        try:
            self._sel.close()
        except (OSError, RuntimeError):
            pass
        for s in [self._listen, *self._clients.values()]:
            s.close()
        self._clients.clear()
        self._upstream_of.clear()

    def _run(self) -> None:
        deadline = time.monotonic() + self.lifetime
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                self._flush(now)
                timeout = _TICK
                if self._queue:
                    timeout = max(0.0, min(timeout, self._queue[0][0] - now))
                for key, _ in self._sel.select(timeout):
                    self._drain(key.fileobj)  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - reported through .error
            self.error = e

    def _drain(self, sock: socket.socket) -> None:
        # Bounded: at most 256 datagrams per readiness event.
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # e.g. ECONNREFUSED from an ICMP error on a connected socket
                return
            if sock is self._listen:
                up = self._clients.get(addr[:2])
                if up is None:
                    if len(self._clients) >= self.max_clients:
                        with self._lock:
                            self._rejected += 1
                        continue
                    up = socket.socket(self._family, socket.SOCK_DGRAM)
                    up.bind((self.address[0], 0))
                    up.setblocking(False)
                    self._clients[addr[:2]] = up
                    self._upstream_of[up] = addr[:2]
                    self._sel.register(up, selectors.EVENT_READ)
                self._handle("c2s", data, up, self.upstream)
            else:
                client = self._upstream_of.get(sock)
                if client is not None:
                    self._handle("s2c", data, self._listen, client)

    def _handle(self, direction: str, data: bytes, out: socket.socket, to: Addr) -> None:
        cfg = self.c2s if direction == "c2s" else self.s2c
        rng = self._rng[direction]
        self._count(direction, "received")
        self._count(direction, "bytes_in", len(data))
        # Draw every decision each time, so one setting does not shift the others.
        r_loss, r_reorder, r_dup, r_corrupt = (rng.random() for _ in range(4))
        jitter = rng.uniform(0.0, cfg.jitter) if cfg.jitter else 0.0
        if cfg.blackhole or r_loss < cfg.loss:
            self._count(direction, "dropped")
            return
        if r_corrupt < cfg.corrupt and data:
            buf = bytearray(data)
            for _ in range(cfg.corrupt_bits):
                bit = rng.randrange(len(buf) * 8)
                buf[bit >> 3] ^= 1 << (bit & 7)
            data = bytes(buf)
            self._count(direction, "corrupted")
        if self.mutate is not None:
            mutated = self.mutate(data, direction)
            if mutated is None:
                self._count(direction, "dropped")
                return
            data = mutated
        delay = cfg.delay + jitter
        if r_reorder < cfg.reorder:
            delay += cfg.reorder_delay
            self._count(direction, "reordered")
        copies = 2 if r_dup < cfg.duplicate else 1
        if copies == 2:
            self._count(direction, "duplicated")
        now = time.monotonic()
        for i in range(copies):
            if delay > 0 or i:
                if delay > 0:
                    self._count(direction, "delayed")
                self._seq += 1
                heapq.heappush(self._queue, (now + delay, self._seq, direction, out, to, data))
            else:
                self._send(direction, out, to, data)

    def _flush(self, now: float) -> None:
        q = self._queue
        while q and q[0][0] <= now:
            _, _, direction, out, to, data = heapq.heappop(q)
            self._send(direction, out, to, data)

    def _send(self, direction: str, out: socket.socket, to: Addr, data: bytes) -> None:
        try:
            out.sendto(data, to)
        except OSError:
            self._count(direction, "dropped")
            return
        self._count(direction, "forwarded")
        self._count(direction, "bytes_out", len(data))


def link(**kw: Any) -> LinkConfig:
    """Shorthand: ``link(loss=0.1)``; rejects unknown names."""
    names = {f.name for f in fields(LinkConfig)}
    bad = set(kw) - names
    if bad:
        raise TypeError(f"unknown LinkConfig fields: {sorted(bad)}")
    return LinkConfig(**kw)
