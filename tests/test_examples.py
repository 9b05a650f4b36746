"""Every example in examples/ runs on loopback: a server process and its client.

Each server is started with ``--port 0`` and a test certificate; the port is
read from its ``listening on HOST:PORT`` line. Clients must exit 0 and print
the expected output; every process is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
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
    from pyquic.tls.x509 import generate_self_signed

    cert, key = generate_self_signed("localhost", names=("localhost", "127.0.0.1"))
    d = tmp_path_factory.mktemp("example-certs")
    (d / "cert.pem").write_bytes(cert)
    (d / "key.pem").write_bytes(key)
    return str(d / "cert.pem"), str(d / "key.pem")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYQUIC_BACKEND", None)
    return env


class ServerProcess:
    """An example's server subprocess; ``port`` comes from its first lines."""

    def __init__(self, script: str, backend: str, certs: tuple[str, str], *extra: str) -> None:
        cmd = [sys.executable, str(EXAMPLES / script), "server", "--port", "0",
               "--backend", backend, "--cert", certs[0], "--key", certs[1], *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=_env(), cwd=str(ROOT), bufsize=0)
        self.lines: list[str] = []
        self._pending = b""
        self.port = self._wait_for_port()

    def _readline(self, deadline: float) -> str | None:
        """One line of output, or None at EOF or the deadline (unbuffered: os.read)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            for _ in range(100_000):
                if b"\n" in self._pending:
                    line, _, self._pending = self._pending.partition(b"\n")
                    text = line.decode(errors="replace") + "\n"
                    self.lines.append(text)
                    return text
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._pending += chunk
        return None

    def _wait_for_port(self) -> int:
        deadline = time.monotonic() + TIMEOUT
        for _ in range(1000):
            line = self._readline(deadline)
            if not line:
                break
            m = re.search(r"listening on .*:(\d+)\s*$", line)
            if m:
                return int(m.group(1))
        self.stop()
        raise AssertionError(f"server did not start: {''.join(self.lines)}")

    def output(self, wait: float = 1.0) -> str:
        """Everything the server printed, reading for up to ``wait`` more seconds."""
        deadline = time.monotonic() + wait
        for _ in range(1000):
            if time.monotonic() >= deadline or not self._readline(deadline):
                break
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_server(backend: str, certs: tuple[str, str]
                 ) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(script: str, *extra: str) -> ServerProcess:
        s = ServerProcess(script, backend, certs, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run_client(script: str, backend: str, certs: tuple[str, str], port: int,
               *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(EXAMPLES / script), "client", "--port", str(port),
           "--backend", backend, "--cafile", certs[0], *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=TIMEOUT, env=_env(),
                          cwd=str(ROOT))
    assert proc.returncode == 0, f"{script} client failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_asyncio_echo(start_server, backend: str, certs: tuple[str, str]) -> None:
    server = start_server("asyncio_echo.py")
    out = run_client("asyncio_echo.py", backend, certs, server.port, "one", "two words", "3")
    assert out.stdout.splitlines() == ["one", "two words", "3"]
    assert "connection from 127.0.0.1" in server.output()


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
    log = server.output()
    assert "resumed=False" in log and "resumed=True" in log


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
    log = server.output()
    assert "upper: connection (negotiated ALPN 'upper')" in log


@pytest.mark.parametrize("script", ["asyncio_echo.py", "file_transfer.py", "datagrams.py",
                                    "resumption.py", "alpn_router.py"])
def test_example_has_main_and_help(script: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--help"], check=False,
                          capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    assert proc.returncode == 0
    assert "server" in proc.stdout and "client" in proc.stdout
    assert "def main(argv" in (EXAMPLES / script).read_text()
