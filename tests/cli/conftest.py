"""Fixtures for the CLI tests (the helpers themselves are in tests/cli/support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.support import Server, write_self_signed


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    """``server_factory(args, ready, **env)`` starts a ``pyquic`` server, stopped at teardown."""
    started: list[Server] = []

    class _Factory(Server):
        def __init__(self, args: list[str], ready: str, **env: str) -> None:
            super().__init__(tmp_path, args, ready, **env)
            started.append(self)

    yield _Factory
    for s in started:
        s.stop()


@pytest.fixture
def certs(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost/127.0.0.1: ``(cert.pem, priv.key)`` paths."""
    return write_self_signed(tmp_path / "certs", ("localhost", "127.0.0.1", "server"),
                             key_name="priv.key")
