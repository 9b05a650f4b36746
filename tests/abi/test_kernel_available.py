"""pyquic.kernel.available (kept under tests/abi: owned by the foundation)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pyquic.kernel import available
from pyquic.kernel.available import kernel_available


def _probe() -> bool:
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 261)
    except OSError:
        return False
    s.close()
    return True


def test_matches_a_direct_probe() -> None:
    kernel_available.cache_clear()
    assert kernel_available() is _probe()


def test_cached_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    closed: list[bool] = []

    class FakeSock:
        def __init__(self, *args: Any) -> None:
            calls.append(args)

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(available.socket, "socket", FakeSock)
    kernel_available.cache_clear()
    try:
        assert kernel_available() is True
        assert kernel_available() is True
        assert calls == [(socket.AF_INET, socket.SOCK_DGRAM, 261)]
        assert closed == [True]
    finally:
        kernel_available.cache_clear()


def test_false_when_socket_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise OSError(93, "Protocol not supported")

    monkeypatch.setattr(available.socket, "socket", refuse)
    kernel_available.cache_clear()
    try:
        assert kernel_available() is False
    finally:
        kernel_available.cache_clear()
