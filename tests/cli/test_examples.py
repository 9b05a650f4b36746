"""examples/echo_server.py and examples/echo_client.py talk to each other."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import REPO, cli_env, free_udp_port


def test_echo_examples(tmp_path: Path) -> None:
    port = free_udp_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        srv = subprocess.Popen([sys.executable, str(REPO / "examples" / "echo_server.py"),
                                "--port", str(port)], cwd=tmp_path, env=cli_env(),
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while "echo server on" not in log.read_text() and time.monotonic() < deadline:
                assert srv.poll() is None, log.read_text()
                time.sleep(0.05)
            r = subprocess.run([sys.executable, str(REPO / "examples" / "echo_client.py"),
                                "--port", str(port), "--ca", str(tmp_path / "echo-cert.pem"),
                                "one", "two two"], check=False, cwd=tmp_path, env=cli_env(),
                               capture_output=True, text=True, timeout=60)
        finally:
            srv.terminate()
            srv.wait(10)
    assert r.returncode == 0, r.stderr
    assert "stream 0: 'one' (ok)" in r.stdout
    assert "stream 4: 'two two' (ok)" in r.stdout
    assert "stream 4: echoed 7 bytes" in log.read_text()
