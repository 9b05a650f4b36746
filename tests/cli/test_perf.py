"""``pyquic perf`` client and server on loopback, small sizes, plus its size parser."""

from __future__ import annotations

import argparse
import re

import pytest

from pyquic.cli.common import CliError
from pyquic.cli.perf import _send_all, parse_size
from tests.cli.support import free_udp_port, run_cli


@pytest.mark.parametrize(("text", "value"), [
    ("1024", 1024), ("64K", 65536), ("10M", 10 << 20), ("1G", 1 << 30), ("1.5MiB", 3 << 19),
    ("2kb", 2048),
])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "ten", "10X", "-5"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


def test_perf_throughput(server_factory: type) -> None:
    port = free_udp_port()
    srv = server_factory(["perf", "server", "--addr", "127.0.0.1", "--port", str(port),
                          "--once", "--timeout", "60"], "listening on")
    r = run_cli("perf", "client", "--port", str(port), "--total", "3M", "--msg-len", "16K",
                "--timeout", "60", timeout=90)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^throughput: sent 3 MiB in [\d.]+ s = ([\d.]+) Mbit/s$", r.stdout,
                  re.MULTILINE)
    assert m and float(m.group(1)) > 0, r.stdout
    assert srv.wait(30) == 0
    assert re.search(r"stream 0: received 3 MiB in [\d.]+ s = [\d.]+ Mbit/s", srv.text())


def test_perf_request_response(server_factory: type) -> None:
    port = free_udp_port()
    srv = server_factory(["perf", "server", "--addr", "127.0.0.1", "--port", str(port),
                          "--once", "--timeout", "60"], "listening on")
    r = run_cli("perf", "client", "--port", str(port), "--requests", "40", "--req-len", "100",
                "--rsp-len", "2K", "--timeout", "60", timeout=90)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^requests: 40 x 100 B/2 KiB in [\d.]+ s = \d+ req/s, latency avg",
                     r.stdout, re.MULTILINE), r.stdout
    assert srv.wait(30) == 0
    assert "stream 0: answered 40 requests" in srv.text()


def test_perf_progress_line_on_stderr(server_factory: type) -> None:
    port = free_udp_port()
    server_factory(["perf", "server", "--addr", "127.0.0.1", "--port", str(port), "--once",
                    "--quiet"], "listening on")
    # Enough data to take over a second on the slowest backend is not bounded; instead
    # check the final line and that stderr only ever holds progress lines.
    r = run_cli("perf", "client", "--port", str(port), "--total", "2M", timeout=90)
    assert r.returncode == 0, r.stderr
    for line in r.stderr.splitlines():
        assert re.match(r"perf client: [\d.]+ \w+ in [\d.]+ s, [\d.]+ Mbit/s", line), line


def test_perf_client_no_server() -> None:
    port = free_udp_port()
    r = run_cli("perf", "client", "--port", str(port), "--timeout", "2", timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"pyquic perf client: error: no answer from 127.0.0.1:{port} "
                                f"within 2 s (is a QUIC server listening there?)")


def test_perf_psk(tmp_path: object, server_factory: type) -> None:
    import os
    from pathlib import Path

    psk = Path(str(tmp_path)) / "psk.txt"
    psk.write_text(f"perf-client:{os.urandom(32).hex()}\n")
    port = free_udp_port()
    srv = server_factory(["perf", "server", "--addr", "127.0.0.1", "--port", str(port),
                          "--psk", str(psk), "--once"], "listening on")
    r = run_cli("perf", "client", "--port", str(port), "--psk", str(psk), "--total", "1M",
                timeout=90)
    assert r.returncode == 0, r.stderr
    assert "throughput: sent 1 MiB" in r.stdout
    assert srv.wait(30) == 0


def test_perf_kernel_backend_unavailable_is_one_line() -> None:
    from pyquic.kernel.available import kernel_available

    if kernel_available():
        pytest.skip("the kernel module is loaded here")
    r = run_cli("perf", "client", "--backend", "kernel", "--port", "9", timeout=30)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "pyquic perf client: error: cannot create a QUIC socket on the kernel backend: ")


class _PartialSock:
    """send_stream takes at most ``step`` bytes per call (a full send buffer)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.got = bytearray()
        self.calls = 0

    def send_stream(self, sid: int, data: memoryview) -> int:
        self.calls += 1
        n = min(self.step, len(data))
        self.got += data[:n]
        return n


@pytest.mark.parametrize("step", [1, 7, 4096, 10_000])
def test_send_all_completes_partial_sends(step: int) -> None:
    data = bytes(range(256)) * 20
    sock = _PartialSock(step)
    _send_all(sock, 4, data)
    assert bytes(sock.got) == data
    assert sock.calls == -(-len(data) // step)


def test_send_all_reports_a_stream_that_takes_nothing() -> None:
    sock = _PartialSock(0)
    with pytest.raises(CliError, match="sent 0 of 5 bytes"):
        _send_all(sock, 4, b"hello")
