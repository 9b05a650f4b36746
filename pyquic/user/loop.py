"""The user backend's I/O thread and its single lock.

One background thread serves every user-backend socket: it waits on the UDP
sockets of all endpoints and on a wake-up fd with a selector, feeds received
datagrams to the engine, runs the connections' timers (``next_timer`` /
``handle_timer``) and sends what ``datagrams_to_send`` returns. It starts when
the first endpoint or connection registers and stops (closing its selector and
wake-up fd) once none is left for ``linger`` seconds (1 s for :data:`LOOP`,
so sequential connections do not start a thread each), so closing every
socket leaves no thread and no fd behind shortly after.

Lock discipline (simple on purpose, so it cannot deadlock): one re-entrant
lock, :data:`LOOP.lock`, guards ALL user-backend state (every connection,
endpoint, accept queue and readiness fd). Application threads hold it for the
duration of a socket call; whoever polls holds it while it processes one batch
of events, and never while it sleeps in ``select``. ``generation`` still
counts batches (for tests and diagnostics).

Leader/follower (so a blocked receiver needs no wake-up from another thread):
an application thread that blocks in a socket call (recvmsg, accept,
wait_readable, a full send buffer) polls the shared selector itself, as the
*leader* (:meth:`IOLoop.lead`): it receives, runs the engine and the timers,
flushes, and returns as soon as its own socket was signalled. Before it sleeps
in the selector it busy-polls it for up to ``busy_poll`` seconds (adaptive, see
:meth:`IOLoop._leader_select`; :data:`BUSY_POLL_ENV`). Meanwhile the
I/O thread is *parked* (sleeps on a condition, not in select). Only one
thread polls at a time (``_leader``, the runner's ``parked`` flag, both under
the lock). A thread that blocks while another polls is a *follower*: it waits
on its socket's condition and is signalled after the poller's batches as
before; if the I/O thread was the poller, the follower asks it to park
(``park_req`` + the waker) and is then handed the leader role. A leader that
leaves hands over to a follower if there is one. When nobody blocks, socket
calls poll without blocking (:meth:`IOLoop.poll_now`: at most once per
``_POLL_GAP``, always for a control call on an established connection), and
the parked I/O thread takes over polling once nobody polled for ``_IDLE``
(checked every ``_PARK`` seconds, longer with back-off while one leader keeps
polling; such a leader wakes it when it leaves). Programs that never block
(asyncio, readiness fds) never park the I/O thread: it serves them as before.

Timers: each client's next deadline sits in a heap (lazy deletion: an entry is
valid while it matches the client's recorded deadline), so an iteration costs
O(log n) per due or changed timer, not O(connections). A client's deadline is
re-read with :meth:`IOLoop.schedule` whenever it may have changed: after an
application call on it, after its datagrams or timers were processed, and
after every flush. One exception keeps a round trip short: when the leader's
own socket became readable and nothing must be sent at once, the batch leaves
that socket *unsettled* (``_unsettled``) and returns; the reply's flush
re-reads its timers after the datagram left, and otherwise whoever next
computes a sleep (:meth:`IOLoop._timeout`) settles it first (the engine's
deferred ACK processing, a flush if that queued something, the timers).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["BUSY_POLL_ENV", "LOOP", "Client", "IOLoop", "Reader", "Readiness", "Wakeable",
           "busy_poll_from_env"]

_log = logging.getLogger("pyquic.user")

#: a parked I/O thread polls again itself once nobody (leader or a socket
#: call, see :meth:`IOLoop.poll_now`) polled for this long ...
_IDLE = 0.001
#: a socket call polls (without blocking) when nobody did for this long (a
#: control call on an established connection always does, see poll_now);
#: polling at every call would cut the handshake's flights into small batches
_POLL_GAP = 0.001
#: ... which it checks this often (bounds the delay of datagrams and timers
#: while no application thread calls in; each check costs a thread switch)
_PARK = 0.02
#: the longest park sleep while one leader keeps polling (a leader that led
#: longer than _PARK wakes the I/O thread when it leaves)
_PARK_MAX = 0.25

#: environment variable: a leader's busy-poll window in microseconds (0: off)
BUSY_POLL_ENV = "PYQUIC_BUSY_POLL"
_BUSY_POLL_DEFAULT_US = 100
#: busy polls that found nothing in a row make the next 0, 1, 3 ... waits skip
#: it (doubling up to this bound; one that found something resets it)
_BUSY_POLL_BACKOFF_MAX = 256


def busy_poll_from_env() -> float:
    """The busy-poll window in seconds from :data:`BUSY_POLL_ENV`
    (microseconds, default 100; 0 turns it off); ValueError if malformed."""
    raw = os.environ.get(BUSY_POLL_ENV, "").strip()
    if not raw:
        return _BUSY_POLL_DEFAULT_US * 1e-6
    try:
        usec = float(raw)
    except ValueError:
        usec = -1.0
    if not 0 <= usec <= 1e6:
        raise ValueError(f"{BUSY_POLL_ENV}={raw!r}: expected microseconds, 0 to 1000000")
    return usec * 1e-6


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Reader(Protocol):
    """Something with a file descriptor the loop reads when it is readable."""

    def fileno(self) -> int: ...

    def on_readable(self, now: float) -> None:
        """Drain the fd (non-blocking); called with the lock held."""


class Client(Protocol):
    """A connection the loop keeps alive: timers, flushing, readiness."""

    def _io_next_timer(self) -> float | None: ...

    def _io_timer(self, now: float) -> None: ...

    def _io_flush(self, now: float) -> None: ...


class Wakeable(Protocol):
    """Something with waiters the I/O thread signals after a batch."""

    def _io_wake(self) -> None:
        """Signal the waiters that their object changed (lock held)."""


class Readiness:
    """A pollable fd whose readable/writable state the backend sets.

    One end of an AF_UNIX stream socketpair is given to the application: it is
    readable while a byte sent from the other end is queued, and it is made
    unwritable by filling its (minimal) send buffer, writable again by
    draining the other end. Both states are changed only on transitions.
    """

    def __init__(self) -> None:
        self._user, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._user.setblocking(False)
        self._peer.setblocking(False)
        self._user.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        self.readable = False
        self.writable = True

    def fileno(self) -> int:
        return self._user.fileno()

    def set(self, readable: bool, writable: bool) -> None:
        if readable != self.readable:
            self.readable = readable
            if readable:
                self._peer.send(b"r")
            else:
                self._drain(self._user)
        if writable != self.writable:
            self.writable = writable
            if writable:
                self._drain(self._peer)
            else:
                chunk = bytes(4096)
                for _ in range(256):
                    try:
                        self._user.send(chunk)
                    except BlockingIOError:
                        break

    @staticmethod
    def _drain(s: socket.socket) -> None:
        for _ in range(4096):
            try:
                if not s.recv(65536):
                    return
            except (BlockingIOError, InterruptedError):
                return

    def close(self) -> None:
        self._user.close()
        self._peer.close()


class _Waker:
    """A wake-up fd: an eventfd, or a pipe where eventfd is missing."""

    def __init__(self) -> None:
        self._efd: int | None = None
        self._r: int | None = None
        self._w: int | None = None
        if hasattr(os, "eventfd"):
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - Python < 3.10 on Linux or other systems
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._efd if self._efd is not None else self._r  # type: ignore[return-value]

    def wake(self) -> None:
        try:
            if self._efd is not None:
                os.eventfd_write(self._efd, 1)
            elif self._w is not None:  # pragma: no cover
                os.write(self._w, b"\x01")
        except (BlockingIOError, OSError):
            pass

    def drain(self) -> None:
        try:
            if self._efd is not None:
                os.eventfd_read(self._efd)
            elif self._r is not None:  # pragma: no cover
                while os.read(self._r, 4096):
                    pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self._efd, self._r, self._w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._efd = self._r = self._w = None


class _Poller:
    """Readiness of the watched fds, each with its object (a :class:`Reader`,
    or None for the waker): ``selectors`` without the key object it builds
    per event, since every wake-up of a round trip goes through here."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = select.poll() if self._epoll is None else None
        self._map: dict[int, Any] = {}

    def register(self, fd: int, data: Any) -> None:
        """Watch ``fd`` for input (or change its object)."""
        if fd not in self._map:
            if self._epoll is not None:
                self._epoll.register(fd, select.EPOLLIN)
            else:
                assert self._poll is not None
                self._poll.register(fd, select.POLLIN)
        self._map[fd] = data

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (KeyError if not watched)."""
        del self._map[fd]
        if self._epoll is not None:
            with contextlib.suppress(OSError):  # already closed
                self._epoll.unregister(fd)
        else:
            assert self._poll is not None
            self._poll.unregister(fd)

    def select(self, timeout: float | None) -> list[tuple[int, Any]]:
        """(fd, object) of the fds readable within ``timeout`` seconds (None:
        no limit); an interrupted wait returns nothing."""
        try:
            if self._epoll is not None:
                events = self._epoll.poll(-1 if timeout is None else max(timeout, 0.0))
            else:
                assert self._poll is not None
                events = self._poll.poll(None if timeout is None
                                         else max(math.ceil(timeout * 1e3), 0))
        except InterruptedError:
            return []
        m = self._map
        return [(fd, m.get(fd)) for fd, _mask in events]

    def close(self) -> None:
        self._map.clear()
        if self._epoll is not None:
            self._epoll.close()


class _Runner:
    """One incarnation of the I/O thread with its own selector and waker.

    ``parked``: an application thread polls (or may poll) instead of this
    thread, which then only sleeps on ``park_cond`` (see "Leader/follower" in
    the module docstring). The selector and waker are closed by whoever stops
    using them last: this thread or a leader still polling them.
    """

    def __init__(self, loop: IOLoop) -> None:
        self.loop = loop
        self.selector = _Poller()
        self.waker = _Waker()
        self.selector.register(self.waker.fileno(), None)
        self.stopped = False
        self.parked = False
        self.park_req = False  # a thread that wants to lead asked this one to park
        self.park_deadline = 0.0  # when the current park sleep ends (0: not sleeping)
        self.park_cond = threading.Condition(loop.lock)
        self.users = 1  # this thread + leaders polling the selector
        self.thread = threading.Thread(target=self._run, name="pyquic-io", daemon=True)

    def _next_timeout(self) -> float | None:
        """The select timeout: the next timer or the end of the linger (lock held);
        -1.0 once the linger ran out (the runner was stopped)."""
        loop = self.loop
        now = time.monotonic()
        timeout = loop._timeout(now)
        if loop._idle_since is not None:
            left = loop._idle_since + loop.linger - now
            if left <= 0:
                loop._stop_runner()
                return -1.0
            timeout = left if timeout is None else min(timeout, left)
        return timeout

    def release(self) -> None:
        """Drop one user of the selector; the last closes it (lock held)."""
        self.users -= 1
        if self.users <= 0:
            self.selector.close()
            self.waker.close()

    def _park(self, now: float) -> None:
        """Sleep while application threads poll (lock held); return to poll
        once nobody polled for :data:`_IDLE` seconds, or when stopped."""
        loop = self.loop
        wait = _PARK
        epoch = -1
        while self.parked and not self.stopped:
            if loop._leader is None:
                idle = now - loop._last_poll
                if idle >= _IDLE:
                    self.parked = False  # nobody polls: take over
                    return
                t = loop._timeout(now)
                wait = _PARK if t is None else min(_PARK, t)
                wait = max(wait, _IDLE - idle)
                epoch = -1
            elif epoch == loop._lead_epoch:
                wait = min(wait * 2, _PARK_MAX)  # the same leader for long: back off
            else:
                epoch, wait = loop._lead_epoch, _PARK
            self.park_deadline = now + wait
            self.park_cond.wait(wait)
            self.park_deadline = 0.0
            now = time.monotonic()

    def _run(self) -> None:
        loop = self.loop
        lock = loop.lock
        try:
            with lock:
                while not self.stopped:
                    if self.parked:
                        self._park(time.monotonic())
                        continue
                    if self.park_req:
                        self.park_req = False
                        self.parked = True
                        loop._last_poll = time.monotonic()
                        loop._hand_over()  # a follower becomes the leader
                        continue
                    timeout = self._next_timeout()
                    if timeout == -1.0:
                        break
                    loop._polling = True
                    lock.release()
                    try:
                        events = self.selector.select(timeout)
                    except OSError:  # pragma: no cover - fd closed under us
                        events = []
                    finally:
                        lock.acquire()
                        loop._polling = False
                    if self.stopped:
                        break
                    # one locked section per wake-up: process, then wake the
                    # threads the batch concerns (they need the lock, which this
                    # thread gives up in its next select)
                    loop._process(self, events, time.monotonic())
                    loop._wake_pending()
        finally:
            with lock:
                self.release()
                loop.generation += 1
                loop.cond.notify_all()


class IOLoop:
    """The process-wide I/O loop (use the :data:`LOOP` singleton)."""

    def __init__(self, linger: float = 0.0) -> None:
        #: seconds the I/O thread stays after the last socket left
        self.linger = linger
        self._idle_since: float | None = None
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        #: incremented after every batch of I/O; blocked callers wait for a change
        self.generation = 0
        self._runner: _Runner | None = None
        self._dead: list[_Runner] = []
        self._readers: dict[int, Reader] = {}
        self._clients: set[Client] = set()
        self._dirty: set[Client] = set()
        #: leaders' sockets whose timers are re-read before the next sleep
        self._unsettled: set[Client] = set()
        self._wakes: set[Wakeable] = set()
        self._deadline = float("inf")
        self._heap: list[tuple[float, int, Client]] = []
        self._when: dict[Client, float] = {}  # the valid heap entry of each client
        self._seq = itertools.count()
        #: True while some thread sleeps in the selector (lock released)
        self._polling = False
        self._leader: int | None = None  # the application thread polling, if any
        self._leader_obj: object = None  # what the leader waits for
        self._lead_epoch = 0
        self._last_poll = 0.0  # when a leader or poll_now last polled
        self._followers: dict[Any, int] = {}  # waiting objects (with a _cond) -> threads
        #: seconds a leader polls without sleeping before it sleeps in the
        #: selector (0: never); see :meth:`_leader_select`
        self.busy_poll = busy_poll_from_env() if _cpus() > 1 else 0.0
        self._spin_skip = 0  # blocking waits left before the next busy poll
        self._spin_backoff = 0

    # -- registration (call with the lock held) --------------------------------
    def _ensure(self) -> _Runner:
        self._idle_since = None
        if self._runner is None:
            runner = _Runner(self)
            for fd, reader in self._readers.items():
                runner.selector.register(fd, reader)
            self._runner = runner
            runner.thread.start()
        return self._runner

    def add_reader(self, reader: Reader) -> None:
        """Watch ``reader``'s fd for input."""
        with self.lock:
            fd = reader.fileno()
            self._readers[fd] = reader
            runner = self._ensure()
            runner.selector.register(fd, reader)

    def remove_reader(self, reader: Reader) -> None:
        """Stop watching ``reader`` (before closing its fd)."""
        with self.lock:
            fd = reader.fileno()
            if self._readers.get(fd) is reader:
                del self._readers[fd]
                if self._runner is not None:
                    try:
                        self._runner.selector.unregister(fd)
                    except (KeyError, ValueError):
                        pass
            self._maybe_stop()

    def add_client(self, client: Client) -> None:
        """Run ``client``'s timers from now on."""
        with self.lock:
            self._clients.add(client)
            self._ensure()
            self.schedule(client)

    def remove_client(self, client: Client) -> None:
        """Forget ``client``."""
        with self.lock:
            self._clients.discard(client)
            self._dirty.discard(client)
            self._unsettled.discard(client)
            self._when.pop(client, None)  # its heap entry is now stale
            self._maybe_stop()

    def _maybe_stop(self) -> None:
        if self._runner is not None and not self._readers and not self._clients:
            if self.linger <= 0:
                self._stop_runner()
            elif self._idle_since is None:
                self._idle_since = time.monotonic()
                if self._polling:  # re-arm its timeout with the linger (a
                    self._runner.waker.wake()  # parked thread looks within _PARK)

    def _stop_runner(self) -> None:
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        self._idle_since = None
        runner.stopped = True
        runner.waker.wake()
        runner.park_cond.notify_all()
        self._dead.append(runner)

    def join_stopped(self, timeout: float = 2.0, *, idle: bool = False) -> None:
        """Join I/O threads that were told to stop (call WITHOUT the lock);
        with ``idle``, first stop a thread that only lingers without sockets."""
        with self.lock:
            if idle and self._idle_since is not None:
                self._stop_runner()
            dead, self._dead = self._dead, []
        for runner in dead:
            if runner.thread is not threading.current_thread():
                runner.thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while an I/O thread is serving sockets."""
        with self.lock:
            return self._runner is not None

    # -- scheduling ----------------------------------------------------------------
    def schedule(self, client: Client) -> None:
        """Re-read ``client``'s next timer and make the I/O thread wake by then."""
        with self.lock:
            if client not in self._clients:
                return
            self._unsettled.discard(client)
            when = client._io_next_timer()
            if when is None:
                self._when.pop(client, None)
                return
            if self._when.get(client) == when:
                return
            self._when[client] = when
            heapq.heappush(self._heap, (when, next(self._seq), client))
            if len(self._heap) > 2 * len(self._when) + 64:
                self._compact()
            # only a thread sleeping in select needs the wake-up: any other
            # poller computes its timeout afresh (a parked I/O thread with no
            # leader polls again within _PARK)
            if when < self._deadline and self._polling and self._runner is not None:
                self._deadline = when
                self._runner.waker.wake()

    def _compact(self) -> None:
        """Drop stale heap entries (bounds the heap at about twice the clients)."""
        self._heap = [e for e in self._heap if self._when.get(e[2]) == e[0]]
        heapq.heapify(self._heap)

    def _pop_stale(self) -> None:
        heap, valid = self._heap, self._when
        while heap and valid.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)

    def mark(self, client: Client) -> None:
        """Have the I/O thread flush ``client`` at the end of this batch (lock held)."""
        self._dirty.add(client)

    def wake_later(self, target: Wakeable) -> None:
        """Have ``target._io_wake()`` called at the end of this batch (lock held)."""
        self._wakes.add(target)

    def _wake_pending(self) -> bool:
        """Wake the targets of this batch; True when one has a follower (a
        thread of this process that now runs), other than the leader's own."""
        wakes, self._wakes = self._wakes, set()
        followers, mine = self._followers, self._leader_obj
        woke = False
        for target in wakes:
            if target in followers and target is not mine:
                woke = True
            try:
                target._io_wake()
            except Exception:  # noqa: BLE001 - keep the loop alive
                _log.exception("pyquic I/O thread")
        return woke

    def notify(self) -> None:
        """Count a batch and wake waiters of the global condition (lock held);
        sockets wait on their own conditions, see the module docstring."""
        with self.lock:
            self.generation += 1
            self.cond.notify_all()

    # -- leader/follower ---------------------------------------------------------
    def lead(self, obj: object, done: Callable[[], bool], deadline: float | None) -> bool:
        """Poll in the calling thread until ``done()``, ``deadline`` or the I/O
        thread stops (lock held, released while in select). False, at once,
        when this thread may not lead (the I/O thread polls, or another leader
        does): then wait on ``obj``'s condition after :meth:`follow`."""
        runner = self._runner
        if runner is None or not runner.parked or runner.stopped or self._leader is not None:
            return False
        self._leader = threading.get_ident()
        self._leader_obj = obj
        self._lead_epoch += 1
        runner.users += 1
        lock: Any = self.lock
        spin = True
        try:
            for _ in range(1 << 62):
                if done() or runner.stopped or runner is not self._runner:
                    break
                now = time.monotonic()
                timeout = self._timeout(now)
                if done():  # settling (in _timeout) may have signalled the waiter
                    break
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        break
                    timeout = left if timeout is None else min(timeout, left)
                self._polling = True
                saved = lock._release_save()  # the lock may be held recursively
                try:
                    events = self._leader_select(runner.selector, timeout, spin)
                except OSError:  # pragma: no cover - fd closed under us
                    events = []
                finally:
                    lock._acquire_restore(saved)
                    self._polling = False
                if runner.stopped:
                    break
                now = self._last_poll = time.monotonic()
                self._process(runner, events, now)
                # a thread it woke needs the GIL now: busy polling would fight it
                spin = not self._wake_pending()
        finally:
            self._leader = None
            self._leader_obj = None
            runner.release()
            if not runner.stopped:
                self._hand_over()
        return True

    def _leader_select(self, selector: _Poller, timeout: float | None,
                       spin: bool = True) -> list[tuple[int, Any]]:
        """The leader's wait (lock released): poll without sleeping for up to
        ``busy_poll`` seconds, then sleep in the selector.  A request/response
        peer usually answers within tens of microseconds; sleeping then costs
        more than the wait (the idle CPU's wake-up, and the peer's send waking
        a sleeper), and burns as much CPU.  Adaptive, like an adaptive mutex:
        windows that found nothing, in a row, make the next 0, 1, 3, 7 ... 255
        waits sleep at once, and a window that found something resets that,
        so waits longer than the window (an idle connection, a distant peer)
        seldom spin.  Off with one CPU (the peer could not run meanwhile), and
        without ``spin`` (the last batch woke another thread of this process,
        which needs the GIL that polling would keep taking)."""
        window = self.busy_poll
        if window <= 0 or timeout == 0 or not spin:
            return selector.select(timeout)
        if self._spin_skip:
            self._spin_skip -= 1
            return selector.select(timeout)
        clock = time.monotonic
        start = clock()
        short = timeout is not None and timeout <= window  # a timer ends the wait first
        end = start + (timeout if timeout is not None and short else window)
        poll = selector.select
        for _ in range(1 << 20):  # ~1 us each: ends by the clock long before
            events = poll(0)
            if events:
                self._spin_backoff = 0
                return events
            if clock() >= end:
                break
        if short:
            return []  # the timer's deadline: as a sleeping select would return
        # a lone miss (a late answer) skips nothing; misses in a row: 1, 3, 7 ...
        self._spin_backoff = min(self._spin_backoff * 2 or 1, _BUSY_POLL_BACKOFF_MAX)
        self._spin_skip = self._spin_backoff - 1
        if timeout is not None:
            timeout = max(0.0, timeout - (clock() - start))
        return selector.select(timeout)

    def poll_now(self, now: float, force: bool = False) -> None:
        """Poll without blocking if the I/O thread is parked and nobody polled
        for :data:`_POLL_GAP` seconds, or at all with ``force`` (lock held): a
        thread that keeps calling in without blocking keeps its datagrams and
        timers served, and a forced poll lets a call see what arrived before it
        (as the kernel processes packets on arrival)."""
        runner = self._runner
        if runner is None or runner.stopped:
            return
        # forced: even while another thread sleeps in select (it then finds
        # the datagrams gone, harmless: everything runs under the lock)
        if not force and (not runner.parked or self._leader is not None
                          or now - self._last_poll < _POLL_GAP):
            return
        self._last_poll = now
        try:
            events = runner.selector.select(0)
        except OSError:  # pragma: no cover
            return
        if not events and not self._dirty and (not self._heap or self._heap[0][0] > now):
            return  # nothing arrived, nothing due: skip the batch
        self._process(runner, events, now)
        self._wake_pending()
        if self._polling:
            runner.waker.wake()  # we may have drained a wake-up meant for the poller

    def follow(self, obj: Any) -> None:
        """Count a thread about to wait on ``obj._cond`` while it cannot lead;
        asks the polling I/O thread to park so the next wait can lead."""
        self._followers[obj] = self._followers.get(obj, 0) + 1
        runner = self._runner
        if runner is not None and not runner.parked and not runner.park_req:
            runner.park_req = True
            if self._polling:
                runner.waker.wake()

    def has_followers(self, obj: Any) -> bool:
        """Whether a thread waits on ``obj._cond`` (lock held)."""
        return obj in self._followers

    def unfollow(self, obj: Any) -> None:
        """Undo :meth:`follow` once the thread stops waiting."""
        n = self._followers.get(obj, 0) - 1
        if n > 0:
            self._followers[obj] = n
        else:
            self._followers.pop(obj, None)

    def kick(self, obj: object) -> None:
        """``obj`` changed outside the poller: end the leader's select if it
        waits for ``obj`` (lock held)."""
        if self._leader_obj is obj and self._polling and self._runner is not None:
            self._runner.waker.wake()

    def _hand_over(self) -> None:
        """Nobody leads now: let a waiting thread lead, or have the parked I/O
        thread look again if it would sleep long (lock held)."""
        for obj in self._followers:
            obj._cond.notify_all()
            return
        runner = self._runner
        if runner is not None and runner.parked and \
                runner.park_deadline - time.monotonic() > _PARK:
            runner.park_cond.notify_all()

    def _timeout(self, now: float) -> float | None:
        if self._unsettled:
            self._settle(now)
        self._pop_stale()
        best = self._heap[0][0] if self._heap else float("inf")
        self._deadline = best
        if best == float("inf"):
            return None
        return max(0.0, best - now)

    def _settle(self, now: float) -> None:
        """Bring the deferred clients' timers (and what their deferred work
        queued) up to date before a poller computes its sleep (lock held)."""
        pending, self._unsettled = self._unsettled, set()
        for client in pending:
            if client not in self._clients:
                continue
            try:
                settle = getattr(client, "_io_settle", None)
                if settle is not None:
                    settle(now)
                self.schedule(client)
            except Exception:  # noqa: BLE001 - keep the loop alive
                _log.exception("pyquic I/O thread")

    def _process(self, runner: _Runner, events: list[tuple[int, Any]],
                 now: float) -> None:
        for fd, reader in events:
            if reader is None:
                runner.waker.drain()
                continue
            current = self._readers.get(fd)
            if current is None or current is not reader:
                continue  # removed while we slept
            try:
                current.on_readable(now)
            except Exception:  # noqa: BLE001 - keep the loop alive
                _log.exception("pyquic I/O thread")
        heap, valid = self._heap, self._when
        # (nothing is due when the earliest entry, stale or not, is later)
        for _ in range(len(heap) if heap and heap[0][0] <= now else 0):
            self._pop_stale()
            if not heap or heap[0][0] > now:
                break
            _t, _seq, client = heapq.heappop(heap)
            del valid[client]
            self._dirty.add(client)
            try:
                client._io_timer(now)
            except Exception:  # noqa: BLE001 - keep the loop alive
                _log.exception("pyquic I/O thread")
        dirty, self._dirty = self._dirty, set()
        leader_obj = self._leader_obj
        for client in dirty:
            if client not in self._clients:
                continue
            try:
                if client is leader_obj and getattr(client, "_io_defer_flush",
                                                    _never)(now):
                    # the leader returns to its caller, whose answer (a
                    # handshake flight, a reply) takes these ACKs along; the
                    # timers are re-read after that answer left, or before
                    # anyone sleeps (_timeout): off the round trip's path
                    self._unsettled.add(client)
                    self._wakes.add(client)  # type: ignore[arg-type]
                    continue
                client._io_flush(now)
            except Exception:  # noqa: BLE001 - keep the loop alive
                _log.exception("pyquic I/O thread")
            self.schedule(client)
            if hasattr(client, "_io_wake"):
                self._wakes.add(client)  # type: ignore[arg-type]
        self.generation += 1  # (nobody waits on ``cond`` per batch: no notify)


def _never(_now: float) -> bool:
    return False


#: The process-wide loop shared by every user-backend socket.
LOOP = IOLoop(linger=1.0)
