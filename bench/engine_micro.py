"""In-memory micro-benchmark of the pure-Python engine (no sockets).

Two :class:`~pyquic.engine.connection.QuicConnection` objects complete the
real TLS 1.3 handshake (``tests/engine/netsim.py`` with ``real_tls=True``),
then the server sends ``--size`` bytes on one stream to the client; every
datagram is handed straight to the other side, in batches, the way the user
backend's I/O thread does (receive a batch, then flush once).  The clock is
the process clock, so pacing and timers behave as on a fast loopback.

Prints MB/s and packets/s of CPU time (both connections together), which is
what the bulk figure of ``bench/run.py`` is bound by.  ``--profile FILE``
writes a cProfile of the transfer.

    python bench/engine_micro.py [--size 20M] [--payload 1200] [--runs 3] [--loss 0.02]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyquic import abi
from pyquic.engine.connection import ConnState, QuicConnection
from tests.engine.netsim import CLIENT_ADDR, SERVER_ADDR, NetSim

_NEW, _FIN = 0x400, 0x200


def _size(text: str) -> int:
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}
    if text[-1:].upper() in mult:
        return int(float(text[:-1]) * mult[text[-1:].upper()])
    return int(text)


def _setup(payload: int) -> tuple[QuicConnection, QuicConnection]:
    tp = abi.TransportParam(max_udp_payload_size=payload)

    def server_setup(c: QuicConnection) -> None:
        c.set_transport_param(tp)

    sim = NetSim(seed=3, real_tls=True, server_setup=server_setup, delay=0.0005, rate=10e9)
    sim.client.set_transport_param(tp)
    if not sim.handshake():
        raise SystemExit("handshake failed")
    # let HANDSHAKE_DONE, NEW_CONNECTION_ID and session tickets settle
    sim.run(lambda s: False, max_time=0.05)
    assert sim.server is not None
    return sim.client, sim.server


def transfer(size: int, payload: int, chunk: int = 65536,
             prof: cProfile.Profile | None = None, loss: float = 0.0) -> dict[str, float]:
    """Send ``size`` bytes server -> client; returns the figures.  ``loss``
    drops that share of the server's datagrams (seeded), as a full receive
    buffer does on loopback: the packets after a gap arrive out of order."""
    cli, srv = _setup(payload)
    rng = random.Random(11)
    data = os.urandom(chunk)
    base = max(cli._now, srv._now) - time.monotonic()

    def clock() -> float:
        return base + time.monotonic()

    sent = 0
    got = 0
    fin = False
    packets = 0
    first = True
    t_cpu = time.process_time()
    t_wall = time.perf_counter()
    if prof is not None:
        prof.enable()
    deadline = time.perf_counter() + 600
    while not fin:
        if time.perf_counter() > deadline:
            raise SystemExit("transfer timed out")
        # the sending application fills the send buffer
        while sent < size:
            piece = data if size - sent >= chunk else data[:size - sent]
            flags = (_NEW if first else 0) | (_FIN if sent + len(piece) == size else 0)
            try:
                n = srv.send_stream(1, piece, flags, True)
            except OSError:
                break
            first = False
            sent += n
            if n < len(piece):
                break
        now = clock()
        out = srv.datagrams_to_send(now)
        packets += len(out)
        for d, _a in out:
            if loss and rng.random() < loss:
                continue
            cli.receive_datagram(d, SERVER_ADDR, CLIENT_ADDR, now)
        # the receiving application reads everything
        for _ in range(100_000):
            item = cli.recv(65536)
            if item is None:
                break
            if item.stream_id == 1:
                got += len(item.data)
                if item.stream_flags & _FIN:
                    fin = True
        now = clock()
        back = cli.datagrams_to_send(now)
        packets += len(back)
        for d, _a in back:
            srv.receive_datagram(d, CLIENT_ADDR, SERVER_ADDR, now)
        for c in (srv, cli):
            t = c.next_timer()
            if t is not None and t <= now:
                c.handle_timer(now)
        if not out and not back:
            # nothing moved: wait for the next timer (pacing, ACK delay)
            t = min((x for x in (srv.next_timer(), cli.next_timer()) if x is not None),
                    default=None)
            wait = t - clock() if t is not None else 0.0
            if wait > 0:
                time.sleep(min(wait, 0.01))
        if srv.state != ConnState.ESTABLISHED or cli.state != ConnState.ESTABLISHED:
            raise SystemExit(f"connection closed: {srv.get_close_info()} "
                             f"{cli.get_close_info()}")
    if prof is not None:
        prof.disable()
    cpu = time.process_time() - t_cpu
    wall = time.perf_counter() - t_wall
    assert got == size, (got, size)
    return {"cpu_s": cpu, "wall_s": wall, "MB_per_cpu_s": size / 1e6 / cpu,
            "packets": packets, "packets_per_cpu_s": packets / cpu,
            "Mbit_per_wall_s": size * 8 / 1e6 / wall}


def round_trips(count: int, payload: int) -> dict[str, float]:
    """``count`` 64-byte request/response exchanges on one stream, the client
    and the server each flushing after every receive batch and every send
    (as the user backend's I/O thread does); returns CPU us per round trip."""
    cli, srv = _setup(payload)
    base = max(cli._now, srv._now) - time.monotonic()
    msg = b"x" * 64
    flushes = 0

    def pump(a: QuicConnection, b: QuicConnection, a_addr: object, b_addr: object) -> None:
        nonlocal flushes
        flushes += 1
        now = base + time.monotonic()
        for d, _x in a.datagrams_to_send(now):
            b.receive_datagram(d, a_addr, b_addr, now)
        for c in (a, b):
            t = c.next_timer()
            if t is not None and t <= now:
                c.handle_timer(now)

    t_cpu = time.process_time()
    for i in range(count):
        cli.send_stream(0, msg, _NEW if i == 0 else 0, True)
        got = 0
        for _ in range(1000):
            pump(cli, srv, CLIENT_ADDR, SERVER_ADDR)
            item = srv.recv(65536)
            if item is not None and item.stream_id == 0:
                srv.send_stream(0, item.data, 0, True)
            pump(srv, cli, SERVER_ADDR, CLIENT_ADDR)
            item = cli.recv(65536)
            if item is not None and item.stream_id == 0:
                got += len(item.data)
                if got >= len(msg):
                    break
        else:
            raise SystemExit("round trip stalled")
    cpu = time.process_time() - t_cpu
    return {"us_per_rt": cpu / count * 1e6, "flushes_per_rt": flushes / count}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="20M")
    ap.add_argument("--payload", type=int, default=1200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", metavar="FILE")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="drop this share of the server's datagrams (out-of-order data)")
    ap.add_argument("--rr", type=int, default=0, metavar="N",
                    help="instead: N 64-byte round trips, CPU us per round trip")
    args = ap.parse_args()
    if args.rr:
        for _ in range(args.runs):
            r = round_trips(args.rr, args.payload)
            print(f"  {r['us_per_rt']:.1f} us CPU per round trip"
                  f" ({r['flushes_per_rt']:.1f} flushes each)")
        return
    size = _size(args.size)
    if args.profile:
        prof = cProfile.Profile()
        r = transfer(size, args.payload, prof=prof, loss=args.loss)
        prof.dump_stats(args.profile)
        print(r)
        return
    results = [transfer(size, args.payload, loss=args.loss) for _ in range(args.runs)]
    results.sort(key=lambda r: r["MB_per_cpu_s"])
    for r in results:
        print(f"  {r['MB_per_cpu_s']:7.1f} MB/s CPU  {r['packets_per_cpu_s']:8.0f} packets/s CPU"
              f"  {r['Mbit_per_wall_s']:7.1f} Mbit/s wall  ({r['packets']} packets,"
              f" {r['cpu_s']:.2f} s CPU)")
    med = results[len(results) // 2]
    print(f"median: {med['MB_per_cpu_s']:.1f} MB/s CPU, "
          f"{med['packets_per_cpu_s']:.0f} packets/s CPU")


if __name__ == "__main__":
    main()
