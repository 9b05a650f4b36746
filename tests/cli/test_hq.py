"""``pyquic server`` / ``pyquic client`` (hq-interop) on loopback, files checked by sha256."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pyquic.cli.hq import _download_path, _handshake_timeout, _safe_path
from tests.cli.support import free_udp_port, run_cli
from tests.cli.support import sha256 as sha
from tests.netproxy import LinkConfig, NetProxy


def make_www(tmp_path: Path, sizes: dict[str, int]) -> Path:
    www = tmp_path / "www"
    for name, size in sizes.items():
        (www / name).parent.mkdir(parents=True, exist_ok=True)
        (www / name).write_bytes(os.urandom(size))
    return www


def start_server(server_factory: type, certs: tuple[str, str], www: Path, port: int,
                 testcase: str, **env: str) -> object:
    return server_factory(["server", "--host", "127.0.0.1", "--port", str(port), "--www",
                           str(www), "--cert", certs[0], "--key", certs[1], "--timeout", "60"],
                          "hq server on", TESTCASE=testcase, **env)


@pytest.mark.parametrize("testcase", ["transfer", "keyupdate", "chacha20", "retry", "v2",
                                      "resumption", "zerortt", "multiconnect"])
def test_transfer_sha256(tmp_path: Path, server_factory: type, certs: tuple[str, str],
                         testcase: str) -> None:
    sizes = {"a.bin": 300_000, "b.bin": 120_000, "sub/c.bin": 500_001}
    www = make_www(tmp_path, sizes)
    port = free_udp_port()
    srv = start_server(server_factory, certs, www, port, testcase)
    dl = tmp_path / "dl"
    urls = " ".join(f"https://127.0.0.1:{port}/{n}" for n in sizes)
    r = run_cli("client", "--downloads", str(dl), "--timeout", "60", "-v", timeout=120,
                TESTCASE=testcase, REQUESTS=urls)
    assert r.returncode == 0, r.stderr + srv.text()  # type: ignore[attr-defined]
    for name in sizes:
        assert sha(dl / name) == sha(www / name), name
    if testcase in ("resumption", "zerortt"):
        handshakes = [ln for ln in r.stdout.splitlines() if ln.startswith("handshake with")]
        assert len(handshakes) == 2 and ", resumed" in handshakes[1], r.stdout
    if testcase == "zerortt":
        assert "0-RTT accepted" in r.stdout
    if testcase == "chacha20":
        assert "TLS_CHACHA20_POLY1305_SHA256" in r.stdout
    conns = {"resumption": 2, "zerortt": 2, "multiconnect": 3}.get(testcase, 1)
    assert srv.text().count("connection from") == conns  # type: ignore[attr-defined]


def test_multiplexing_many_files(tmp_path: Path, server_factory: type,
                                 certs: tuple[str, str]) -> None:
    sizes = {f"m/f{i}": 1 + (i * 37) % 2000 for i in range(300)}
    www = make_www(tmp_path, sizes)
    port = free_udp_port()
    start_server(server_factory, certs, www, port, "multiplexing")
    dl = tmp_path / "dl"
    urls = [f"https://127.0.0.1:{port}/{n}" for n in sizes]
    r = run_cli("client", "--downloads", str(dl), *urls, timeout=120, TESTCASE="multiplexing")
    assert r.returncode == 0, r.stderr
    assert all(sha(dl / n) == sha(www / n) for n in sizes)
    assert r.stdout.startswith("300 files, ")


def test_keylog_and_qlog(tmp_path: Path, server_factory: type, certs: tuple[str, str]) -> None:
    www = make_www(tmp_path, {"x": 10_000})
    port = free_udp_port()
    qserver, qclient = tmp_path / "qs", tmp_path / "qc"
    srv = start_server(server_factory, certs, www, port, "handshake", QLOGDIR=str(qserver))
    keylog = tmp_path / "keys.log"
    r = run_cli("client", "--downloads", str(tmp_path / "dl"), f"https://127.0.0.1:{port}/x",
                timeout=60, TESTCASE="handshake", SSLKEYLOGFILE=str(keylog),
                QLOGDIR=str(qclient))
    assert r.returncode == 0, r.stderr
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels
    (qfile,) = list(qclient.glob("*.qlog"))
    doc = json.loads(qfile.read_text())
    assert doc["qlog_version"] == "0.3"
    trace = doc["traces"][0]
    assert trace["vantage_point"]["type"] == "client"
    names = [e["name"] for e in trace["events"]]
    assert names[0] == "transport:connection_started"
    assert "security:handshake_completed" in names and "http:request" in names
    srv.stop()  # type: ignore[attr-defined]
    (sfile,) = list(qserver.glob("*.qlog"))
    assert json.loads(sfile.read_text())["traces"][0]["vantage_point"]["type"] == "server"


@pytest.mark.parametrize(("role", "testcase"), [("client", "http3"), ("server", "http3"),
                                                ("client", "ecn"), ("client", "nonsense")])
def test_unsupported_testcase_exits_127(role: str, testcase: str, tmp_path: Path) -> None:
    r = run_cli(role, "--www", str(tmp_path), timeout=30, TESTCASE=testcase) if role == "server" \
        else run_cli(role, "https://127.0.0.1:1/x", timeout=30, TESTCASE=testcase)
    assert r.returncode == 127
    assert f"unsupported test case '{testcase}'" in r.stderr


def test_missing_file_gives_empty_body(tmp_path: Path, server_factory: type,
                                       certs: tuple[str, str]) -> None:
    www = make_www(tmp_path, {"x": 10})
    port = free_udp_port()
    srv = start_server(server_factory, certs, www, port, "transfer")
    r = run_cli("client", "--downloads", str(tmp_path / "dl"), f"https://127.0.0.1:{port}/nope",
                timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dl" / "nope").read_bytes() == b""
    srv.stop()  # type: ignore[attr-defined]
    assert "/nope: not found" in srv.text()  # type: ignore[attr-defined]


def test_paths_stay_inside_their_roots(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert _safe_path(root, "/a/b.txt") == os.path.join(os.path.realpath(root), "a", "b.txt")
    assert _safe_path(root, "/../etc/passwd") is None
    assert _safe_path(root, "/%2e%2e/etc/passwd") is None
    assert _download_path(root, "/x/y") == os.path.join(os.path.realpath(root), "x", "y")
    from pyquic.cli.common import CliError

    with pytest.raises(CliError):
        _download_path(root, "/../../z")


@pytest.mark.parametrize(("testcase", "timeout", "want"), [
    ("transfer", 300.0, 15.0),  # a missing server is reported soon
    ("handshakeloss", 300.0, 60.0),  # lost flights need more PTO rounds
    ("transfercorruption", 300.0, 60.0),
    ("handshakeloss", 5.0, 5.0),  # never beyond --timeout
])
def test_handshake_time_limit(testcase: str, timeout: float, want: float) -> None:
    import argparse

    assert _handshake_timeout(argparse.Namespace(testcase=testcase, timeout=timeout)) == want


@pytest.mark.parametrize(("testcase", "loss", "nfiles", "size"), [
    ("handshakeloss", 0.30, 8, 1024),  # interop runner: 30% loss, one connection per file
    ("transferloss", 0.02, 3, 400_000),  # interop runner: 2% loss
])
def test_transfer_through_lossy_proxy(tmp_path: Path, server_factory: type,
                                      certs: tuple[str, str], testcase: str, loss: float,
                                      nfiles: int, size: int) -> None:
    sizes = {f"f{i}": size + i for i in range(nfiles)}
    www = make_www(tmp_path, sizes)
    port = free_udp_port()
    start_server(server_factory, certs, www, port, testcase)
    with NetProxy(("127.0.0.1", port), c2s=LinkConfig(loss=loss), s2c=LinkConfig(loss=loss),
                  seed=7, lifetime=200) as proxy:
        urls = [f"https://127.0.0.1:{proxy.address[1]}/{n}" for n in sizes]
        r = run_cli("client", "--downloads", str(tmp_path / "dl"), "--timeout", "60", *urls,
                    timeout=180, TESTCASE=testcase)
        stats = proxy.stats()
    assert r.returncode == 0, r.stderr
    assert all(sha(tmp_path / "dl" / n) == sha(www / n) for n in sizes)
    assert stats["c2s"]["dropped"] + stats["s2c"]["dropped"] > 0


def test_interop_dispatches_on_role(tmp_path: Path) -> None:
    r = run_cli("interop", timeout=30, ROLE="client", TESTCASE="http3")
    assert r.returncode == 127 and "pyquic client: unsupported test case 'http3'" in r.stderr
    r = run_cli("interop", "--www", str(tmp_path / "none"), timeout=30, ROLE="server",
                TESTCASE="transfer")
    assert r.returncode == 1
    assert r.stderr.strip().startswith("pyquic server: error: ")
    r = run_cli("interop", timeout=30, ROLE="proxy")
    assert r.returncode == 1 and "ROLE must be 'client' or 'server'" in r.stderr
