"""The lossy UDP proxy itself: forwarding, each kind of damage, counters, stop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.netproxy import LinkConfig, NetProxy, link

TIMEOUT = 5.0


class Echo:
    """A loopback UDP echo server in a thread (bounded life)."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()[:2]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def client_for(proxy: NetProxy) -> socket.socket:
    c = socket.socket(socket.AF_INET6 if ":" in proxy.address[0] else socket.AF_INET,
                      socket.SOCK_DGRAM)
    c.settimeout(0.3)
    c.connect(proxy.address)
    return c


def exchange(c: socket.socket, payloads: list[bytes], wait: float = 0.5,
             expect: int | None = None) -> list[bytes]:
    """Send ``payloads``; collect replies until ``expect`` (default 2 per
    payload, the most duplication can give) or ``wait`` seconds."""
    for p in payloads:
        c.send(p)
    want = 2 * len(payloads) if expect is None else expect
    got: list[bytes] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and len(got) < want:
        try:
            got.append(c.recv(65535))
        except TimeoutError:
            break
    return got


def test_clean_forwarding_both_directions(echo: Echo) -> None:
    with NetProxy(echo.address, seed=1) as proxy:
        c = client_for(proxy)
        msgs = [bytes([i]) * (i + 1) for i in range(50)]
        got = exchange(c, msgs)
        c.close()
        st = proxy.stats()
    assert sorted(got) == sorted(msgs)
    assert st["c2s"]["received"] == st["c2s"]["forwarded"] == 50
    assert st["s2c"]["forwarded"] == 50
    assert st["c2s"]["bytes_in"] == sum(map(len, msgs))


def test_ipv6_loopback() -> None:
    try:
        e = Echo(socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        with NetProxy(e.address, seed=1) as proxy:
            assert proxy.address[0] == "::1"
            c = client_for(proxy)
            assert exchange(c, [b"six"]) == [b"six"]
            c.close()
    finally:
        e.close()


def test_loss_is_seeded_and_counted(echo: Echo) -> None:
    drops = []
    for _ in range(2):
        with NetProxy(echo.address, seed=7, c2s=LinkConfig(loss=0.3)) as proxy:
            c = client_for(proxy)
            exchange(c, [b"x%d" % i for i in range(200)], wait=0.5)
            c.close()
            drops.append(proxy.stats()["c2s"]["dropped"])
    assert drops[0] == drops[1]  # same seed, same decisions
    assert 30 < drops[0] < 90


def test_duplicate_and_corrupt(echo: Echo) -> None:
    with NetProxy(echo.address, seed=3, c2s=link(duplicate=1.0),
                  s2c=link(corrupt=1.0, corrupt_bits=1)) as proxy:
        c = client_for(proxy)
        got = exchange(c, [b"\x00" * 16])
        c.close()
        st = proxy.stats()
    assert st["c2s"]["duplicated"] == 1 and st["c2s"]["forwarded"] == 2
    assert echo.received == [b"\x00" * 16] * 2
    assert len(got) == 2
    for g in got:  # exactly one bit flipped on the way back
        assert sum(b.bit_count() for b in g) == 1


def test_reorder_lets_later_datagrams_overtake(echo: Echo) -> None:
    cfg = LinkConfig(reorder=0.0, reorder_delay=0.2)
    with NetProxy(echo.address, seed=1, c2s=cfg) as proxy:
        c = client_for(proxy)
        cfg.reorder = 1.0
        c.send(b"first")
        time.sleep(0.02)
        cfg.reorder = 0.0
        c.send(b"second")
        got = exchange(c, [], wait=0.6, expect=2)
        c.close()
        assert proxy.stats()["c2s"]["reordered"] == 1
    assert got == [b"second", b"first"]


def test_delay_and_blackhole(echo: Echo) -> None:
    with NetProxy(echo.address, seed=1, c2s=LinkConfig(delay=0.15)) as proxy:
        c = client_for(proxy)
        t0 = time.monotonic()
        c.settimeout(TIMEOUT)
        c.send(b"slow")
        assert c.recv(100) == b"slow"
        assert time.monotonic() - t0 >= 0.14
        proxy.s2c.blackhole = True
        c.settimeout(0.3)
        got = exchange(c, [b"gone"], wait=0.3)
        c.close()
        assert got == []
        assert proxy.stats()["s2c"]["dropped"] == 1


def test_mutate_hook_and_max_clients(echo: Echo) -> None:
    def upper(data: bytes, direction: str) -> bytes | None:
        return None if data == b"drop" else (data.upper() if direction == "s2c" else data)

    with NetProxy(echo.address, seed=1, mutate=upper, max_clients=1) as proxy:
        c1, c2 = client_for(proxy), client_for(proxy)
        assert exchange(c1, [b"abc", b"drop"]) == [b"ABC"]
        assert exchange(c2, [b"other"], wait=0.3) == []
        c1.close()
        c2.close()
        assert proxy.stats()["rejected"] == 1


def test_rejects_non_loopback_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="loopback"):
        NetProxy(("192.0.2.1", 443))
    with pytest.raises(ValueError, match="loopback"):
        NetProxy(("127.0.0.1", 443), listen=("0.0.0.0", 0))
    with pytest.raises(ValueError, match="loss"):
        LinkConfig(loss=1.5)
    with pytest.raises(TypeError):
        link(lossy=0.1)


def test_lifetime_bounds_the_thread_and_stop_closes(echo: Echo) -> None:
    before = threading.active_count()
    proxy = NetProxy(echo.address, lifetime=0.2).start()
    assert proxy.running
    deadline = time.monotonic() + TIMEOUT
    while proxy.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not proxy.running
    proxy.stop()
    assert proxy._listen.fileno() == -1
    assert threading.active_count() <= before
    assert proxy.error is None
