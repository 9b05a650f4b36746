"""End-to-end transfers between two QuicConnections over the simulated network."""

from __future__ import annotations

import random

import pytest

from pyquic.engine.connection import ConnState

from .netsim import NetSim, StreamReceiver, StreamSender

CASES = [(0.0, 0.0, 0.0), (0.05, 0.05, 0.02), (0.20, 0.10, 0.05)]


def _transfer(seed: int, loss: float, reorder: float, dup: float,
              payloads: list[bytes]) -> tuple[NetSim, StreamSender, StreamReceiver]:
    sim = NetSim(seed=seed, loss=loss, reorder=reorder, dup=dup)
    assert sim.handshake()
    snd = StreamSender(sim.client, payloads)
    rcv = StreamReceiver()

    def step(s: NetSim) -> None:
        snd.step()
        rcv.step(s.server)

    sim.on_step = step
    ok = sim.run(lambda s: snd.done and len(rcv.fin) == len(payloads), max_time=1200.0)
    assert ok, f"transfer did not finish (virtual {sim.now - 1000:.1f}s)"
    return sim, snd, rcv


def test_handshake_establishes_both_sides() -> None:
    sim = NetSim(seed=11)
    assert sim.handshake()
    assert sim.server is not None
    assert sim.client.state == ConnState.ESTABLISHED
    assert sim.server.state == ConnState.ESTABLISHED
    assert sim.client.handshake_confirmed or sim.run(
        lambda s: s.client.handshake_confirmed, max_time=5)


@pytest.mark.parametrize("loss,reorder,dup", CASES)
def test_handshake_under_loss(loss: float, reorder: float, dup: float) -> None:
    for seed in range(5):
        sim = NetSim(seed=seed, loss=loss, reorder=reorder, dup=dup)
        assert sim.handshake(max_time=120.0), f"seed {seed}"


@pytest.mark.parametrize("loss,reorder,dup", CASES)
def test_10mb_one_stream(loss: float, reorder: float, dup: float) -> None:
    data = random.Random(1).randbytes(10 * 1024 * 1024)
    sim, snd, rcv = _transfer(3, loss, reorder, dup, [data])
    assert rcv.stream(snd.ids[0]) == data
    if loss:
        assert sim.dropped > 0


@pytest.mark.parametrize("loss,reorder,dup", CASES)
def test_100_concurrent_streams(loss: float, reorder: float, dup: float) -> None:
    rnd = random.Random(2)
    payloads = [rnd.randbytes(rnd.randrange(1, 30000)) for _ in range(100)]
    _sim, snd, rcv = _transfer(4, loss, reorder, dup, payloads)
    assert len(snd.ids) == 100
    for sid, data in zip(snd.ids, payloads):
        assert rcv.stream(sid) == data, f"stream {sid}"


def test_deterministic_for_a_seed() -> None:
    rnd = random.Random(9)
    payloads = [rnd.randbytes(50000) for _ in range(3)]
    runs = []
    for _ in range(2):
        sim, _snd, _rcv = _transfer(21, 0.1, 0.1, 0.05, payloads)
        runs.append((sim.now, dict(sim.sent), sim.dropped))
    assert runs[0] == runs[1]
