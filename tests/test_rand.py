"""pyquic._rand: buffered os.urandom."""

from __future__ import annotations

import os

import pytest

from pyquic import _rand


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count (and size) the os.urandom calls the pool makes."""
    calls: list[int] = []
    real = os.urandom

    def fake(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(_rand.os, "urandom", fake)
    _rand._reset()
    return calls


def test_small_requests_share_one_os_call(counted: list[int]) -> None:
    vals = [_rand.urandom(8) for _ in range(_rand._POOL // 8)]
    assert counted == [_rand._POOL]
    assert all(len(v) == 8 for v in vals)
    # every byte is handed out once: the values are disjoint slices of one draw
    assert len(set(vals)) == len(vals)
    _rand.urandom(8)  # the buffer is used up: a refill
    assert counted == [_rand._POOL, _rand._POOL]


def test_sizes(counted: list[int]) -> None:
    assert _rand.urandom(0) == b""
    assert len(_rand.urandom(_rand._SMALL)) == _rand._SMALL
    big = _rand.urandom(_rand._SMALL + 1)
    assert len(big) == _rand._SMALL + 1
    assert counted == [_rand._POOL, _rand._SMALL + 1]  # large: directly from the OS
    with pytest.raises(ValueError):
        _rand.urandom(-1)


def test_refill_when_request_does_not_fit(counted: list[int]) -> None:
    _rand.urandom(_rand._POOL - 4)  # above _SMALL: straight from the OS
    for _ in range(_rand._POOL // 32):
        _rand.urandom(32)
    assert counted[0] == _rand._POOL - 4
    tail = _rand.urandom(32)  # the pool is exhausted: a new draw
    assert len(tail) == 32 and counted[-1] == _rand._POOL and len(counted) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_does_not_reuse_parent_bytes() -> None:
    _rand._reset()
    _rand.urandom(8)  # the parent has a buffer now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.write(w, _rand.urandom(16))
        finally:
            os._exit(0)
    os.close(w)
    child = os.read(r, 16)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != _rand.urandom(16)  # the parent's next bytes differ
