"""Helpers for the CLI tests: run ``python -m pyquic`` as a subprocess, bounded in time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("TESTCASE", "REQUESTS", "SSLKEYLOGFILE", "QLOGDIR"):
        env.pop(k, None)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pyquic ARGS`` to completion (killed after ``timeout`` seconds)."""
    return subprocess.run([sys.executable, "-m", "pyquic", *args], check=False, cwd=REPO,
                          env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


class Server:
    """A ``python -m pyquic`` server in the background, its output in a file."""

    def __init__(self, tmp: Path, args: list[str], ready: str, **env: str) -> None:
        self.out = tmp / f"server-{time.monotonic_ns()}.log"
        self._f = open(self.out, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "pyquic", *args], cwd=REPO,
                                     env=cli_env(**env), stdout=self._f,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ready in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"server did not start: {self.text()}")

    def text(self) -> str:
        return self.out.read_text()

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._f.close()
        return self.text()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type]:
    started: list[Server] = []

    class _Factory(Server):
        def __init__(self, args: list[str], ready: str, **env: str) -> None:
            super().__init__(tmp_path, args, ready, **env)
            started.append(self)

    yield _Factory
    for s in started:
        s.stop()
