"""The machine's floor for a Python request/response over UDP, without QUIC.

Two processes exchange 64-byte messages on loopback as ``bench/run.py``'s
round-trip figure does, each message sealed and opened with AES-128-GCM and
an AES-ECB header-protection mask (the cryptography calls a QUIC stack makes
per packet), each side sleeping in ``epoll`` until the other's datagram
arrives.  No QUIC state, no frames, no timers: what is left is the system
calls, the wake-ups and the crypto.  A Python QUIC stack's round trips per
second stay below this figure; the gap is its own per-packet work.

It runs twice: with the two processes pinned to two different CPUs (as the
benchmark's unpinned processes usually run), then both on one CPU.  The
difference is the cost of waking a process that sleeps on another CPU.  A
third run on two CPUs has each side poll ``epoll`` without sleeping for up to
``--busy-poll`` microseconds (default 100) before it sleeps, as pyquic's user
backend does (``PYQUIC_BUSY_POLL``).  The time inside ``sendto`` is shown as
well: on loopback the system call also runs the receive path and the wake-up
of the peer (on one CPU, the peer's whole turn when it preempts the sender);
``bench/phases.py`` shows the same for pyquic.

    python bench/floor.py --round-trips 20000
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY = bytes(range(16))
_IV = int.from_bytes(bytes(range(12)), "big")
_DCID = bytes(8)


class _Sealer:
    """Short-header-like packets: 1 flag byte, 8-byte DCID, 2-byte PN, AEAD."""

    def __init__(self) -> None:
        self.aead = AESGCM(_KEY)
        self.hp = Cipher(algorithms.AES(_KEY), modes.ECB()).encryptor()
        self.pn = 0

    def seal(self, payload: bytes) -> bytes:
        self.pn += 1
        pn = self.pn.to_bytes(2, "big")
        header = b"\x41" + _DCID + pn
        ct = self.aead.encrypt((_IV ^ self.pn).to_bytes(12, "big"), payload, header)
        mask = self.hp.update(ct[2:18])
        return b"".join((bytes((0x41 ^ (mask[0] & 0x1F),)), _DCID,
                         bytes((pn[0] ^ mask[1], pn[1] ^ mask[2])), ct))

    def open(self, data: bytes) -> bytes:
        mask = self.hp.update(data[13:29])
        first = data[0] ^ (mask[0] & 0x1F)
        pn = bytes((data[9] ^ mask[1], data[10] ^ mask[2]))
        header = bytes((first,)) + data[1:9] + pn
        nonce = (_IV ^ int.from_bytes(pn, "big")).to_bytes(12, "big")
        return self.aead.decrypt(nonce, data[11:], header)


def wait_datagram(ep: select.epoll, busy: float) -> None:
    """Wait until ``ep`` reports a datagram: poll without sleeping for up to
    ``busy`` seconds first (as the user backend's ``PYQUIC_BUSY_POLL`` does),
    then sleep in ``epoll``; SystemExit after 5 s of silence."""
    end = time.monotonic() + busy
    ready = ep.poll(0) if busy else []
    while not ready and time.monotonic() < end:
        ready = ep.poll(0)
    if not ready and not ep.poll(5.0):
        raise SystemExit("peer silent for 5 s")


def _side(sock: socket.socket, peer: tuple[str, int] | None, count: int,
          first: bool, busy: float) -> tuple[float, float, float]:
    """``count`` exchanges, each wait polling for up to ``busy`` seconds before
    it sleeps; returns (wall seconds, CPU seconds of this process, seconds in
    the first side's ``sendto`` calls)."""
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    sealer = _Sealer()
    msg = bytes(64)
    ns = time.perf_counter_ns
    in_send = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(count):
        if first:
            assert peer is not None
            packet = sealer.seal(msg)
            t = ns()
            sock.sendto(packet, peer)
            in_send += ns() - t
        wait_datagram(ep, busy)
        data, addr = sock.recvfrom(2048)
        sealer.open(data)
        if not first:
            sock.sendto(sealer.seal(msg), addr)
    return time.perf_counter() - t0, time.process_time() - c0, in_send / 1e9


def _run(count: int, cpus: tuple[int, int] | None,
         busy: float = 0.0) -> tuple[float, float, float]:
    """One ping-pong of ``count`` exchanges, the client and the echoing side
    pinned to ``cpus`` (or not pinned), busy-polling ``busy`` seconds; returns (round trips/s, client CPU us
    per round trip, client us in ``sendto`` per round trip)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    addr = server.getsockname()
    pid = os.fork()
    if pid == 0:  # the echoing side
        try:
            if cpus is not None:
                os.sched_setaffinity(0, {cpus[1]})
            _side(server, None, count, False, busy)
        finally:
            os._exit(0)
    server.close()
    before = os.sched_getaffinity(0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[0]})
        wall, cpu, in_send = _side(client, addr, count, True, busy)
    finally:
        os.sched_setaffinity(0, before)
        client.close()
        os.waitpid(pid, 0)
    return count / wall, cpu / count * 1e6, in_send / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    ap.add_argument("--busy-poll", type=float, default=100.0, metavar="US",
                    help="the third run's busy-poll window in microseconds")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    runs: list[tuple[str, tuple[int, int] | None, float]] = []
    if len(cpus) >= 2:
        runs.append((f"two CPUs ({cpus[0]}, {cpus[1]})", (cpus[0], cpus[1]), 0.0))
    runs.append((f"one CPU ({cpus[0]})", (cpus[0], cpus[0]), 0.0))
    if len(cpus) >= 2 and args.busy_poll > 0:
        runs.append((f"two CPUs, busy-polling {args.busy_poll:g} us", (cpus[0], cpus[1]),
                     args.busy_poll * 1e-6))
    for label, pair, busy in runs:
        rate, cpu, in_send = _run(args.round_trips, pair, busy)
        print(f"UDP + AES-GCM ping-pong floor, {label}: {rate:,.0f} round trips/s, "
              f"client CPU {cpu:.1f} us per round trip, {in_send:.1f} us (wall) "
              "inside sendto", file=sys.stdout)


if __name__ == "__main__":
    main()
