"""One-line errors and exit status for the mistakes a user makes."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.cli.support import free_udp_port, run_cli


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bad_certificate_path(tmp_path: Path) -> None:
    r = run_cli("server", "--cert", str(tmp_path / "missing.pem"), "--key",
                str(tmp_path / "missing.key"), "--www", str(tmp_path), timeout=30)
    assert r.returncode == 1
    assert one_line(r.stderr) == (f"pyquic server: error: bad certificate file "
                                  f"{tmp_path / 'missing.pem'}: No such file or directory")


def test_garbage_key_file(tmp_path: Path) -> None:
    from pyquic.tls.x509 import generate_self_signed

    cert, _key = generate_self_signed()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_text("not a key\n")
    r = run_cli("perf", "server", "--cert", str(tmp_path / "c.pem"), "--key",
                str(tmp_path / "k.pem"), timeout=30)
    assert r.returncode == 1
    assert one_line(r.stderr).startswith(
        f"pyquic perf server: error: bad private key file {tmp_path / 'k.pem'}: ")


def test_port_in_use() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        r = run_cli("perf", "server", "--addr", "127.0.0.1", "--port", str(port), timeout=30)
    finally:
        s.close()
    assert r.returncode == 1
    assert one_line(r.stderr) == (f"pyquic perf server: error: cannot listen on "
                                  f"127.0.0.1:{port}: port {port} is already in use")


def test_unreachable_peer_times_out(tmp_path: Path) -> None:
    port = free_udp_port()
    r = run_cli("client", "--downloads", str(tmp_path), "--timeout", "2",
                f"https://127.0.0.1:{port}/x", timeout=30)
    assert r.returncode == 1
    assert one_line(r.stderr) == (f"pyquic client: error: no answer from 127.0.0.1:{port} "
                                  f"within 2 s (is a QUIC server listening there?)")


def test_refused_handshake_bad_name(server_factory: type) -> None:
    port = free_udp_port()
    srv = server_factory(["perf", "server", "--addr", "127.0.0.1", "--port", str(port),
                          "--once"], "listening on")
    from pyquic.tls.x509 import generate_self_signed

    # The client trusts a different self-signed certificate: the server's is unknown.
    other, _ = generate_self_signed("elsewhere")
    ca = Path(srv.log).with_suffix(".ca.pem")  # type: ignore[attr-defined]
    ca.write_bytes(other)
    r = run_cli("perf", "client", "--port", str(port), "--ca", str(ca), "--host", "localhost",
                "--timeout", "10", timeout=60)
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert line.startswith(f"pyquic perf client: error: handshake with 127.0.0.1:{port} "
                           f"failed: ")
    assert srv.wait(30) == 1  # type: ignore[attr-defined]
    assert "handshake refused by" in srv.text()  # type: ignore[attr-defined]


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = run_cli("server", "--debug", "--cert", str(tmp_path / "missing.pem"), "--www",
                str(tmp_path), timeout=30)
    assert r.returncode == 1
    assert "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("pyquic server: error: bad certificate")


def test_unknown_backend() -> None:
    r = run_cli("demo", "--timeout", "5", PYQUIC_BACKEND="bogus", timeout=30)
    assert r.returncode == 1
    assert "unknown pyquic backend 'bogus'" in one_line(r.stderr)
