"""Every example in examples/ runs on loopback: a server process and its client.

Each server is started with ``--port 0`` and a test certificate; the port is
read from its ``listening on HOST:PORT`` line. Clients must exit 0 and print
the expected output; every process is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli.support import REPO, Background, cli_env, free_udp_port, write_self_signed

EXAMPLES = REPO / "examples"
TIMEOUT = 60.0


@pytest.fixture(params=["user", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel":
        from pyquic.kernel.available import kernel_available

        if not kernel_available():
            pytest.skip("the IPPROTO_QUIC kernel module is not loaded")
    return str(request.param)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return write_self_signed(tmp_path_factory.mktemp("example-certs"))


class ServerProcess(Background):
    """An example's server; ``port`` comes from its ``listening on HOST:PORT`` line."""

    def __init__(self, log: Path, script: str, backend: str, certs: tuple[str, str],
                 *extra: str) -> None:
        super().__init__([sys.executable, str(EXAMPLES / script), "server", "--port", "0",
                          "--backend", backend, "--cert", certs[0], "--key", certs[1], *extra],
                         log, cli_env())
        try:
            self.port = int(self.wait_for(r"listening on .*:(\d+)\s*$", TIMEOUT).group(1))
        except AssertionError:
            self.stop()
            raise


@pytest.fixture
def start_server(backend: str, certs: tuple[str, str], tmp_path: Path
                 ) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(script: str, *extra: str) -> ServerProcess:
        log = tmp_path / f"{script}-{time.monotonic_ns()}.log"
        s = ServerProcess(log, script, backend, certs, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run_client(script: str, backend: str, certs: tuple[str, str], port: int,
               *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(EXAMPLES / script), "client", "--port", str(port),
           "--backend", backend, "--cafile", certs[0], *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT,
                          env=cli_env(), cwd=str(REPO))
    assert proc.returncode == 0, f"{script} client failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_asyncio_echo(start_server, backend: str, certs: tuple[str, str]) -> None:
    server = start_server("asyncio_echo.py")
    out = run_client("asyncio_echo.py", backend, certs, server.port, "one", "two words", "3")
    assert out.stdout.splitlines() == ["one", "two words", "3"]
    server.wait_for("connection from 127.0.0.1", TIMEOUT)


def test_file_transfer(start_server, backend: str, certs: tuple[str, str],
                       tmp_path: Path) -> None:
    upload = tmp_path / "payload.bin"
    upload.write_bytes(os.urandom(300_000))
    outdir = tmp_path / "received"
    server = start_server("file_transfer.py", "--output-dir", str(outdir))
    out = run_client("file_transfer.py", backend, certs, server.port, "--random", "2000000",
                     str(upload))
    assert "payload.bin: verified" in out.stdout
    assert "random-2000000.bin: verified" in out.stdout
    assert "100%" in out.stderr  # progress reached the end
    assert (outdir / "payload.bin").read_bytes() == upload.read_bytes()
    assert (outdir / "random-2000000.bin").stat().st_size == 2_000_000


def test_datagrams(start_server, backend: str, certs: tuple[str, str]) -> None:
    server = start_server("datagrams.py")
    out = run_client("datagrams.py", backend, certs, server.port, "--count", "8",
                     "--interval", "0.01", "--size", "1000")
    m = re.search(r"(\d+)/8 datagrams came back", out.stdout)
    assert m and int(m.group(1)) >= 6, out.stdout  # loopback: loss is rare
    assert re.search(r"ping \d+: [\d.]+ ms", out.stdout)


def test_resumption(start_server, backend: str, certs: tuple[str, str],
                    tmp_path: Path) -> None:
    server = start_server("resumption.py")
    session = tmp_path / "session.bin"
    first = run_client("resumption.py", backend, certs, server.port, "--session-file",
                       str(session), "--message", "early words")
    assert "1st connection: FULL HANDSHAKE" in first.stdout
    assert "2nd connection: resumed=True" in first.stdout
    assert "2nd connection: EARLY WORDS" in first.stdout
    assert session.stat().st_size > 0
    again = run_client("resumption.py", backend, certs, server.port, "--session-file",
                       str(session))
    assert "1st connection" not in again.stdout  # straight from the stored session
    assert "2nd connection: resumed=True" in again.stdout
    server.wait_for("resumed=False", TIMEOUT)
    server.wait_for("resumed=True", TIMEOUT)


def test_alpn_router(start_server, backend: str, certs: tuple[str, str]) -> None:
    server = start_server("alpn_router.py")
    replies = {}
    for alpn in ("echo", "upper", "nope,reverse"):
        out = run_client("alpn_router.py", backend, certs, server.port, "--alpn", alpn,
                         "Hello", "QUIC")
        replies[alpn] = out.stdout.strip()
    assert replies == {
        "echo": "ALPN echo: [echo] Hello QUIC",
        "upper": "ALPN upper: [upper] HELLO QUIC",
        "nope,reverse": "ALPN reverse: [reverse] CIUQ olleH",
    }
    server.wait_for(re.escape("upper: connection (negotiated ALPN 'upper')"), TIMEOUT)


@pytest.mark.parametrize("script", ["asyncio_echo.py", "file_transfer.py", "datagrams.py",
                                    "resumption.py", "alpn_router.py"])
def test_example_has_main_and_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], check=False,
                          capture_output=True, text=True, timeout=TIMEOUT, env=cli_env())
    assert proc.returncode == 0
    assert "server" in proc.stdout and "client" in proc.stdout
    assert "def main(argv" in (EXAMPLES / script).read_text()


def test_echo_socket_api_examples(tmp_path: Path) -> None:
    """echo_server.py and echo_client.py (the blocking socket API) talk to each other."""
    port = free_udp_port()
    srv = Background([sys.executable, str(EXAMPLES / "echo_server.py"), "--port", str(port)],
                     tmp_path / "echo-server.log", cli_env(), cwd=tmp_path)
    try:
        cert = srv.wait_for(r"^certificate: (\S+)$", TIMEOUT).group(1)
        srv.wait_for("echo server on", TIMEOUT)
        r = subprocess.run([sys.executable, str(EXAMPLES / "echo_client.py"), "--port",
                            str(port), "--ca", cert, "one", "two two"], check=False,
                           cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert "stream 0: 'one' (ok)" in r.stdout
        assert "stream 4: 'two two' (ok)" in r.stdout
        srv.wait_for("stream 4: echoed 7 bytes", TIMEOUT)
    finally:
        srv.stop()
