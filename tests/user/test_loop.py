"""Tests of the I/O thread lifecycle and the readiness fd (pyquic.user.loop)."""

from __future__ import annotations

import os
import select
import selectors
import socket
import threading
import time

import pytest

from pyquic.user import loop as loop_mod
from pyquic.user.loop import LOOP, IOLoop, Readiness


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _poll(fd: int) -> tuple[bool, bool]:
    r, w, _ = select.select([fd], [fd], [], 0)
    return bool(r), bool(w)


def test_readiness_transitions() -> None:
    before = _fd_count()
    ready = Readiness()
    try:
        fd = ready.fileno()
        assert _poll(fd) == (False, True)
        ready.set(True, True)
        assert _poll(fd) == (True, True)
        ready.set(True, False)
        assert _poll(fd) == (True, False)
        ready.set(False, False)
        assert _poll(fd) == (False, False)
        ready.set(False, True)
        assert _poll(fd) == (False, True)
        # idempotent: setting the same state twice changes nothing
        ready.set(True, True)
        ready.set(True, True)
        assert _poll(fd) == (True, True)
        ready.set(False, True)
        assert _poll(fd) == (False, True)
    finally:
        ready.close()
    assert _fd_count() == before


def test_readiness_with_selectors_and_poll() -> None:
    ready = Readiness()
    sel = selectors.DefaultSelector()
    try:
        sel.register(ready.fileno(), selectors.EVENT_READ | selectors.EVENT_WRITE)
        events = sel.select(0)
        assert [mask for _, mask in events] == [selectors.EVENT_WRITE]
        ready.set(True, False)
        events = sel.select(0)
        assert [mask for _, mask in events] == [selectors.EVENT_READ]
        p = select.poll()
        p.register(ready.fileno(), select.POLLIN | select.POLLOUT)
        ((_, mask),) = p.poll(0)
        assert mask & select.POLLIN and not mask & select.POLLOUT
    finally:
        sel.close()
        ready.close()


class _Client:
    def __init__(self, when: float) -> None:
        self.when: float | None = when
        self.fired = threading.Event()
        self.flushes = 0

    def _io_next_timer(self) -> float | None:
        return self.when

    def _io_timer(self, now: float) -> None:
        self.when = None
        self.fired.set()

    def _io_flush(self, now: float) -> None:
        self.flushes += 1


class _Reader:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.got: list[bytes] = []
        self.event = threading.Event()

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self, now: float) -> None:
        for _ in range(100):
            try:
                self.got.append(self.sock.recv(2048))
            except BlockingIOError:
                break
        self.event.set()


def test_thread_starts_on_demand_and_stops() -> None:
    loop = IOLoop()
    threads = threading.active_count()
    fds = _fd_count()
    assert not loop.running
    client = _Client(time.monotonic() + 0.05)
    loop.add_client(client)
    assert loop.running
    assert threading.active_count() == threads + 1
    assert client.fired.wait(2.0)
    with loop.lock:
        assert client.flushes >= 1
    loop.remove_client(client)
    loop.join_stopped()
    assert not loop.running
    assert threading.active_count() == threads
    assert _fd_count() == fds


def test_reader_and_reschedule() -> None:
    loop = IOLoop()
    fds = _fd_count()
    reader = _Reader()
    loop.add_reader(reader)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"ping", reader.sock.getsockname())
        assert reader.event.wait(2.0)
        with loop.lock:
            assert reader.got == [b"ping"]
        # A timer set later, earlier than the loop's current deadline, wakes it.
        client = _Client(float("inf"))
        loop.add_client(client)
        with loop.lock:
            client.when = time.monotonic() + 0.02
            loop.schedule(client)
        assert client.fired.wait(2.0)
        gen = loop.generation
        with loop.lock:
            loop.notify()
            assert loop.generation == gen + 1
        loop.remove_client(client)
    finally:
        loop.remove_reader(reader)
        loop.join_stopped()
        sender.close()
        reader.sock.close()
    assert not loop.running
    assert _fd_count() == fds


def test_shared_loop_idle_after_tests() -> None:
    # The process-wide loop must not keep a thread without sockets (past its linger).
    LOOP.join_stopped(idle=True)
    assert not LOOP.running or LOOP._readers or LOOP._clients


class _CountingClient(_Client):
    def __init__(self, when: float) -> None:
        super().__init__(when)
        self.asked = 0

    def _io_next_timer(self) -> float | None:
        self.asked += 1
        return self.when


class _Ticker(_Client):
    """Re-arms itself ``n`` times, a few ms apart."""

    def __init__(self, n: int) -> None:
        super().__init__(time.monotonic() + 0.002)
        self.left = n

    def _io_timer(self, now: float) -> None:
        self.left -= 1
        if self.left > 0:
            self.when = now + 0.002
        else:
            self.when = None
            self.fired.set()


def test_idle_clients_cost_nothing_per_iteration() -> None:
    """1,000 idle connections: the timer heap does not ask them at every wake-up."""
    loop = IOLoop()
    idle = [_CountingClient(time.monotonic() + 3600) for _ in range(1000)]
    ticker = _Ticker(30)
    try:
        for c in idle:
            loop.add_client(c)
        loop.add_client(ticker)
        assert ticker.fired.wait(30.0)
        with loop.lock:
            assert max(c.asked for c in idle) <= 2
            assert not any(c.fired.is_set() for c in idle)
    finally:
        for c in [*idle, ticker]:
            loop.remove_client(c)
        loop.join_stopped()
    assert not loop.running


def test_timer_moved_earlier_and_later() -> None:
    loop = IOLoop()
    a = _Client(time.monotonic() + 3600)
    b = _Client(time.monotonic() + 3600)
    try:
        loop.add_client(a)
        loop.add_client(b)
        with loop.lock:
            b.when = time.monotonic() + 0.01  # earlier: wakes the thread
            loop.schedule(b)
            a.when = time.monotonic() + 0.02
            loop.schedule(a)
            a.when = time.monotonic() + 3600  # later again: the old entry goes stale
            loop.schedule(a)
        assert b.fired.wait(30.0)
        time.sleep(0.1)
        assert not a.fired.is_set()
        with loop.lock:
            assert len(loop._heap) <= 4
    finally:
        loop.remove_client(a)
        loop.remove_client(b)
        loop.join_stopped()


def test_endpoint_gso_and_gro_round_trip() -> None:
    """send_many coalesces equal-size datagrams (GSO, last one shorter); the
    receiving endpoint splits what GRO coalesced: every datagram arrives intact."""
    from pyquic.user.endpoint import Endpoint

    a = Endpoint(socket.AF_INET, ("127.0.0.1", 0))
    b = Endpoint(socket.AF_INET, ("127.0.0.1", 0))
    got: list[bytes] = []
    b.dispatch = lambda data, remote, now: got.append(bytes(data))  # type: ignore[method-assign]
    try:
        dgrams = [bytes([i]) * 1200 for i in range(10)] + [b"\xee" * 500, b"\xff" * 1300]
        a.send_many(dgrams, b.local)
        end = time.monotonic() + 5
        while len(got) < len(dgrams) and time.monotonic() < end:
            select.select([b.sock], [], [], 0.2)
            b.on_readable(time.monotonic())
        assert sorted(got) == sorted(dgrams)
    finally:
        a.close()
        b.close()


def test_endpoint_gro_batch_runs_per_connection() -> None:
    """A GRO receive is split into runs of short-header packets per
    connection, delivered in order in one call each (``_io_datagrams``);
    other datagrams go through dispatch at their place in the order."""
    from pyquic.user.endpoint import Endpoint

    calls: list[tuple[str, list[bytes]]] = []

    class Batch:
        def _io_datagrams(self, ds: list[bytes], remote: object, local: object,
                          now: float) -> None:
            calls.append(("batch", list(ds)))

    class Single:
        def _io_datagram(self, d: bytes, remote: object, local: object, now: float) -> None:
            calls.append(("single", [d]))

    ep = Endpoint(socket.AF_INET, ("127.0.0.1", 0))
    try:
        cid_a, cid_b = b"A" * 8, b"B" * 8
        ep.cids = {cid_a: Batch(), cid_b: Single()}  # type: ignore[dict-item]
        ep.cid_lens = [8]
        ep.dispatch = lambda d, remote, now: calls.append(  # type: ignore[method-assign]
            ("dispatch", [bytes(d)]))

        def short(cid: bytes, i: int) -> bytes:
            return (b"\x40" + cid + bytes([i])).ljust(100, b"\0")

        seq = [short(cid_a, 0), short(cid_a, 1), short(cid_b, 2), short(cid_b, 3),
               b"\xc0".ljust(100, b"\1"), short(cid_a, 4), short(b"C" * 8, 5), short(cid_a, 6)]
        ep._gro_batch(b"".join(seq), 100, ("127.0.0.1", 1), 0.0)
        assert calls == [("batch", seq[0:2]), ("single", [seq[2]]), ("single", [seq[3]]),
                         ("dispatch", [seq[4]]), ("batch", [seq[5]]), ("dispatch", [seq[6]]),
                         ("batch", [seq[7]])]
    finally:
        ep.close()


class _FakeSelector:
    """A selector whose busy polls (timeout 0) find events from the
    ``ready_after``-th poll on (never when None); a sleep always finds one."""

    def __init__(self, ready_after: int | None = None) -> None:
        self.ready_after = ready_after
        self.polls = 0
        self.sleeps: list[float | None] = []

    def select(self, timeout: float | None) -> list[tuple[int, object]]:
        if timeout == 0:
            self.polls += 1
            if self.ready_after is not None and self.polls >= self.ready_after:
                return [(7, None)]
            return []
        self.sleeps.append(timeout)
        return [(7, None)]


def _loop(window: float) -> IOLoop:
    loop = IOLoop()
    loop.busy_poll = window
    return loop


def test_busy_poll_returns_what_arrives_within_the_window() -> None:
    loop, sel = _loop(1.0), _FakeSelector(ready_after=3)
    assert loop._leader_select(sel, 5.0) == [(7, None)]  # type: ignore[arg-type]
    assert sel.polls == 3 and sel.sleeps == []  # never slept


def test_busy_poll_misses_back_off_and_a_hit_resets() -> None:
    loop, sel = _loop(0.0005), _FakeSelector()
    spun = []
    for _ in range(8):
        before = sel.polls
        assert loop._leader_select(sel, 10.0) == [(7, None)]  # type: ignore[arg-type]
        spun.append(sel.polls > before)
        rest = sel.sleeps[-1]
        assert rest is not None and 5.0 < rest <= 10.0
        assert (rest < 10.0) == spun[-1]  # the sleep takes what the window left
    # misses in a row: a lone miss costs nothing, then 1, 3 ... waits sleep at once
    assert spun == [True, True, False, True, False, False, False, True]
    sel.ready_after = sel.polls + 1  # the answer now comes during the window
    loop._spin_skip = 0
    sleeps = len(sel.sleeps)
    loop._leader_select(sel, 10.0)  # type: ignore[arg-type]
    loop._leader_select(sel, 10.0)  # type: ignore[arg-type]  (spins again at once)
    assert len(sel.sleeps) == sleeps and loop._spin_skip == 0


def test_busy_poll_ends_at_an_earlier_timer() -> None:
    loop, sel = _loop(10.0), _FakeSelector()
    start = time.monotonic()
    assert loop._leader_select(sel, 0.002) == []  # type: ignore[arg-type]
    assert 0.002 <= time.monotonic() - start < 1.0
    assert sel.sleeps == [] and sel.polls > 0
    assert loop._spin_skip == 0  # a timer's wait is no miss


def test_busy_poll_off() -> None:
    loop, sel = _loop(0.0), _FakeSelector(ready_after=1)
    assert loop._leader_select(sel, 3.0) == [(7, None)]  # type: ignore[arg-type]
    assert loop._leader_select(sel, None) == [(7, None)]  # type: ignore[arg-type]
    assert sel.polls == 0 and sel.sleeps == [3.0, None]
    loop.busy_poll = 1.0  # on, but the leader just woke another thread
    assert loop._leader_select(sel, 2.0, spin=False) == [(7, None)]  # type: ignore[arg-type]
    assert sel.polls == 0 and sel.sleeps[-1] == 2.0


class _Wakeable:
    def __init__(self) -> None:
        self.woken = 0

    def _io_wake(self) -> None:
        self.woken += 1


def test_wake_pending_tells_whether_another_thread_was_woken() -> None:
    loop = IOLoop()
    mine, other, idle = _Wakeable(), _Wakeable(), _Wakeable()
    loop._leader_obj = mine
    loop._followers = {mine: 1}
    loop.wake_later(mine)
    loop.wake_later(idle)  # signalled, but no thread waits on it
    assert loop._wake_pending() is False
    loop._followers[other] = 1
    loop.wake_later(other)
    loop.wake_later(mine)
    assert loop._wake_pending() is True
    assert (mine.woken, other.woken, idle.woken) == (2, 1, 1)
    assert loop._wake_pending() is False  # nothing left to wake


def test_busy_poll_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop_mod.BUSY_POLL_ENV, raising=False)
    assert loop_mod.busy_poll_from_env() == pytest.approx(100e-6)
    for raw, want in (("0", 0.0), (" 120 ", 120e-6), ("2.5", 2.5e-6)):
        monkeypatch.setenv(loop_mod.BUSY_POLL_ENV, raw)
        assert loop_mod.busy_poll_from_env() == pytest.approx(want)
    for bad in ("fast", "-1", "1e9", "nan"):
        monkeypatch.setenv(loop_mod.BUSY_POLL_ENV, bad)
        with pytest.raises(ValueError, match="PYQUIC_BUSY_POLL"):
            loop_mod.busy_poll_from_env()


def test_no_busy_poll_on_one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop_mod.BUSY_POLL_ENV, "50")
    monkeypatch.setattr(loop_mod, "_cpus", lambda: 1)
    assert IOLoop().busy_poll == 0.0
    monkeypatch.setattr(loop_mod, "_cpus", lambda: 2)
    assert IOLoop().busy_poll == pytest.approx(50e-6)
