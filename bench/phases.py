"""Where each side's time goes in pyquic's request/response round trip.

Runs ``bench/pyquic_side.py``'s round-trip measurement (one stream, 64-byte
request, 64-byte echo) with two timestamps per event: when the I/O loop's
``epoll`` wait returns with the peer's datagram, and around the ``sendto`` of
this side's next datagram.  Each side's round trip then splits into four
consecutive phases:

* **critical path**: from the wake-up with the peer's datagram to the
  ``sendto`` of the answer (receive system call, packet processing, the
  application's read and write, building and sealing the answer);
* **sendto**: the system call; on loopback it also runs the peer's receive
  path in the kernel and wakes the peer;
* **after the send**: work that overlaps with the peer (the deferred ACK
  processing, timers) until this side waits again;
* **asleep**: in ``epoll`` until the peer's answer arrives.

The client's four phases add up to the round trip.  The peer's critical path
and ``sendto`` run while this side is after its send or waiting, so *after
the send* plus *asleep* minus them is what the round trip's two wake-ups cost
(from one side's ``sendto`` returning to the other's wait returning: the
wake-up latency of a process sleeping on another CPU; next to nothing while
the waiting side busy-polls, see ``PYQUIC_BUSY_POLL``).  Compare with
``bench/floor.py``, which measures the same system calls and crypto without
QUIC.

    python bench/phases.py --round-trips 20000

The wrappers add about 0.3 us per timestamp.  Internals are patched for the
measurement only (``pyquic.user.loop._Poller.select``,
``pyquic.user.endpoint.Endpoint.sendto``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_PHASES = ("critical", "sendto", "after_send", "asleep")


class _Clock:
    """Per-event timestamps folded into phase sums (one side, one thread)."""

    def __init__(self) -> None:
        self.woke: int | None = None  # epoll returned with a datagram
        self.sent: int | None = None  # the last sendto returned
        self.wait: int | None = None  # the first epoll wait after that send
        self.sums = dict.fromkeys(_PHASES, 0)
        self.count = 0

    def on_wait(self, enter: int, leave: int, datagram: bool) -> None:
        if self.sent is not None and self.wait is None:
            self.wait = enter
        if datagram:
            self.woke = leave

    def on_send(self, enter: int, leave: int) -> None:
        woke, sent, wait = self.woke, self.sent, self.wait
        if woke is not None and sent is not None and wait is not None and sent <= wait <= woke:
            s = self.sums
            s["critical"] += enter - woke
            s["sendto"] += leave - enter
            s["after_send"] += wait - sent
            s["asleep"] += woke - wait
            self.count += 1
        self.sent, self.wait, self.woke = leave, None, None

    def report(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {k: v / n / 1e3 for k, v in self.sums.items()}
        out["count"] = self.count
        return out


def _instrumented_side(argv: list[str], report: str) -> None:
    """Run one side of bench/pyquic_side.py with the phase timestamps."""
    sys.path[:0] = [str(_HERE), str(_HERE.parent)]  # the bench modules, this checkout
    import pyquic_side  # type: ignore[import-not-found]

    from pyquic.user import endpoint, loop

    clock = _Clock()
    ns = time.perf_counter_ns
    select = loop._Poller.select
    sendto = endpoint.Endpoint.sendto

    def timed_select(self: Any, timeout: float | None) -> list[tuple[int, Any]]:
        t0 = ns()
        events = select(self, timeout)
        clock.on_wait(t0, ns(), any(obj is not None for _fd, obj in events))
        return events

    def timed_sendto(self: Any, data: bytes, remote: Any) -> None:
        t0 = ns()
        sendto(self, data, remote)
        clock.on_send(t0, ns())

    loop._Poller.select = timed_select  # type: ignore[method-assign]
    endpoint.Endpoint.sendto = timed_sendto  # type: ignore[method-assign]
    try:
        pyquic_side.main(argv)
    finally:
        Path(report).write_text(json.dumps(clock.report()))


def _run(count: int) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """Both sides; returns (client result, client phases, server phases)."""
    sys.path.insert(0, str(_HERE))
    from run import make_certificate  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cert, key = make_certificate(d)
        common = ["--metric", "rr", "--cert", cert, "--key", key, "--count", str(count)]
        me = [sys.executable, str(Path(__file__).resolve())]
        server_log = (d / "server.log").open("w")
        server = subprocess.Popen(
            [*me, "--side", str(d / "server.json"), "server", *common],
            stdout=subprocess.PIPE, stderr=server_log, text=True)
        try:
            assert server.stdout is not None
            port = None
            for _ in range(100):  # READY <port> comes first
                line = server.stdout.readline()
                if not line:
                    break
                if line.startswith("READY"):
                    port = line.split()[1]
                    break
            if port is None:
                raise SystemExit("the server side did not start:\n"
                                 + (d / "server.log").read_text())
            out = subprocess.run(
                [*me, "--side", str(d / "client.json"), "client", *common, "--port", port],
                capture_output=True, text=True, timeout=600, check=True)
            server.terminate()  # the side serves until SIGTERM, then reports
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            server_log.close()
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return (result, json.loads((d / "client.json").read_text()),
                json.loads((d / "server.json").read_text()))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--side":
        _instrumented_side(sys.argv[3:], sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    args = ap.parse_args()
    print(f"pyquic round trips, {args.round_trips} exchanges ...", file=sys.stderr, flush=True)
    result, client, server = _run(args.round_trips)
    print(f"{result['rr_per_s']:,.0f} round trips/s "
          f"({1e6 / result['rr_per_s']:.1f} us each), mean us per round trip:")
    print(f"{'phase':<16}{'client':>9}{'server':>9}")
    for k in _PHASES:
        print(f"{k:<16}{client[k]:>9.1f}{server[k]:>9.1f}")
    print(f"{'sum':<16}{sum(client[k] for k in _PHASES):>9.1f}"
          f"{sum(server[k] for k in _PHASES):>9.1f}")
    for me, peer, name in ((client, server, "client"), (server, client, "server")):
        wake = me["after_send"] + me["asleep"] - peer["critical"] - peer["sendto"]
        print(f"{name} after_send + asleep - peer's critical path and sendto "
              f"(both wake-ups): {wake:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
