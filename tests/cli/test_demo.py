"""``pyquic demo`` end to end, as a subprocess."""

from __future__ import annotations

import re

from tests.cli.support import run_cli


def test_demo_runs_and_narrates() -> None:
    r = run_cli("demo", "--timeout", "40", timeout=90)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    assert re.search(r"^backend: (user \(pure Python\)|kernel \(IPPROTO_QUIC module\))$", out,
                     re.MULTILINE)
    assert re.search(r"^handshake: TLS_\w+, alpn demo, \d+ ms$", out, re.MULTILINE)
    for sid, size in ((0, "1 KiB"), (4, "16 KiB"), (8, "64 KiB")):
        assert f"stream {sid}: {size} echoed\n" in out
    assert "stream 3: 1 KiB received on the server's unidirectional stream" in out
    assert 'server answered "pong ping"' in out
    assert re.search(r"key update: server saw key phase 1; stream 12: 4 KiB echoed", out)
    assert 'close: server saw CONNECTION_CLOSE with app error 0x2a "demo finished"' in out
    assert re.search(r"^done in \d+ ms$", out, re.MULTILINE)
    assert r.stderr == ""


def test_demo_user_backend_forced() -> None:
    r = run_cli("demo", "--backend", "user", "--timeout", "40", timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("backend: user (pure Python)\n")


def test_demo_ipv6_loopback() -> None:
    r = run_cli("demo", "--backend", "user", "--host", "::1", "--timeout", "40", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "close: server saw CONNECTION_CLOSE" in r.stdout
