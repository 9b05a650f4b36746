"""Shared pieces of the benchmark's side processes: arguments, wire protocol, RSS.

Every implementation side (``pyquic_side.py``, ``aioquic_side.py``,
``qh3_side.py``) is a small program run twice per measurement: once as
``server`` and once as ``client``, in separate processes so they never share
a GIL. They speak the same tiny application protocol on one client-initiated
bidirectional stream, so the figures compare the QUIC stacks, not the apps:

- ``bulk``: the client sends an 8-byte big-endian size and FIN; the server
  answers with that many bytes and FIN. Goodput = size / time from the request
  to the client seeing the FIN.
- ``rr``: the client sends a 64-byte message and waits for the 64-byte echo,
  ``count`` times on the same stream.
- ``hs``: ``count`` sequential connections, each connected, handshaken
  (client sees handshake completion) and closed.
- ``mem``: one warm-up connection, then ``count`` more kept open and idle; the
  resident set size (VmRSS) of the client process and of the server process
  (read from /proc by pid) is sampled before and after.

The server prints ``READY <port>`` on stdout when it listens; the client
prints one JSON object on its last stdout line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import signal
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

ALPN = "bench"
RR_SIZE = 64
SIZE_HEADER = struct.Struct("!Q")
IDLE_TIMEOUT = 120.0  # seconds; long enough that idle connections stay up while measured
METRICS = ("bulk", "hs", "rr", "mem")


@dataclass
class SideArgs:
    """The parsed command line of a side process."""

    role: str  # "server" or "client"
    metric: str
    host: str
    port: int
    cert: str
    key: str
    payload: int  # maximum UDP payload size, bytes
    size: int  # bulk bytes
    count: int  # handshakes, round trips or idle connections
    server_pid: int
    pmtud: bool
    profile: str  # cProfile output path, or ""


def parse_side_args(argv: list[str] | None = None) -> SideArgs:
    """Parse ``server|client`` and the measurement options (see run.py)."""
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("--metric", choices=METRICS, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--payload", type=int, default=1200)
    p.add_argument("--size", type=int, default=100 * 1000 * 1000)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--server-pid", type=int, default=0)
    p.add_argument("--pmtud", action="store_true")
    p.add_argument("--profile", default="")
    a = p.parse_args(argv)
    return SideArgs(a.role, a.metric, a.host, a.port, a.cert, a.key, a.payload, a.size,
                    a.count, a.server_pid, a.pmtud, a.profile)


def raise_fd_limit() -> None:
    """Lift the soft open-files limit to the hard one (1000 connections = many fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of a process in KiB (VmRSS from /proc), 0 if unknown."""
    path = f"/proc/{pid if pid else 'self'}/status"
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU time of a process, all threads, in seconds (0.0 if unknown)."""
    try:
        with open(f"/proc/{pid if pid else 'self'}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))


class Stopwatch:
    """Wall time plus the CPU time the client and the server spent meanwhile.

    CPU time is much less sensitive than wall time to other work on a shared
    machine, so it is reported next to the rates.
    """

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.t0 = time.perf_counter()
        self.c0 = cpu_seconds()
        self.s0 = cpu_seconds(server_pid) if server_pid else 0.0

    def stop(self) -> tuple[float, float]:
        """(wall seconds, client+server CPU seconds) since construction."""
        dt = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.c0
        if self.server_pid:
            cpu += cpu_seconds(self.server_pid) - self.s0
        return dt, cpu


def settle() -> None:
    """Collect garbage so RSS samples are not inflated by pending cycles."""
    gc.collect()
    time.sleep(0.5)
    gc.collect()


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def announce_ready(port: int) -> None:
    """Tell run.py the server listens (stdout line ``READY <port>``)."""
    print(f"READY {port}", flush=True)


def emit_result(result: dict[str, Any]) -> None:
    """Hand the client's figures back to run.py (one JSON line on stdout)."""
    print(json.dumps(result), flush=True)


def mem_result(args: SideArgs, client_before: int, server_before: int) -> dict[str, Any]:
    """The ``mem`` figures: RSS delta per idle connection, client and server, in KiB."""
    settle()
    client_after = rss_kib()
    server_after = rss_kib(args.server_pid) if args.server_pid else 0
    n = max(1, args.count)
    out: dict[str, Any] = {
        "client_kib_per_conn": (client_after - client_before) / n,
        "client_rss_before_kib": client_before, "client_rss_after_kib": client_after,
    }
    if args.server_pid:
        out["server_kib_per_conn"] = (server_after - server_before) / n
        out["server_rss_before_kib"] = server_before
        out["server_rss_after_kib"] = server_after
    return out


def maybe_profile(args: SideArgs, fn: Any) -> Any:
    """Run ``fn()`` under cProfile when --profile is given.

    cProfile sees only the thread that enabled it, and pyquic's user backend
    does much of its work on its I/O thread, so every thread started meanwhile
    gets its own profiler too; all are merged into one pstats file at the end
    (the main thread's exit, also on SIGTERM through :func:`exit_on_sigterm`).
    """
    if not args.profile:
        return fn()
    import cProfile
    import pstats
    import threading

    profs: list[cProfile.Profile] = []
    orig_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        profs.append(prof)
        prof.enable()
        try:
            orig_run(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    main.enable()
    try:
        return fn()
    finally:
        main.disable()
        for prof in profs:  # threads still running: stop collecting, keep what they have
            prof.disable()
        stats = pstats.Stats(main)
        for prof in profs:
            try:
                stats.add(prof)
            except (TypeError, ValueError):  # a profiler with no data yet
                pass
        stats.dump_stats(args.profile)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks (profile dumps) run."""

    def _handler(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)


def env_flag(name: str) -> bool:
    """True if the environment variable is set to a non-empty, non-"0" value."""
    return os.environ.get(name, "") not in ("", "0")
