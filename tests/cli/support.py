"""Shared helpers for the CLI and example tests: subprocesses, ports, certificates.

Everything here is bounded in time: a background process is waited on with
a deadline and killed at the end; ``run_cli`` has a timeout.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Variables the interop runner sets; a test's subprocess starts without them.
_RUNNER_ENV = ("TESTCASE", "REQUESTS", "SSLKEYLOGFILE", "QLOGDIR")


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this checkout first on the path, runner vars unset."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for k in _RUNNER_ENV:
        env.pop(k, None)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pyquic ARGS`` to completion (killed after ``timeout`` seconds)."""
    return subprocess.run([sys.executable, "-m", "pyquic", *args], check=False, cwd=REPO,
                          env=cli_env(**env), capture_output=True, text=True, timeout=timeout)


def sha256(data: bytes | Path) -> str:
    """Hex SHA-256 of bytes or of a file's contents."""
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def write_self_signed(directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1"),
                      key_name: str = "key.pem") -> tuple[str, str]:
    """A fresh self-signed certificate for ``names``: ``(cert.pem, key)`` paths."""
    from pyquic.tls.x509 import generate_self_signed

    cert, key = generate_self_signed(names[0], names=names)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert)
    (directory / key_name).write_bytes(key)
    return str(directory / "cert.pem"), str(directory / key_name)


def write_large_chain(directory: Path, depth: int = 4,
                      names: int = 120) -> tuple[str, str, str, int]:
    """A root CA, ``depth - 1`` intermediates and a leaf for localhost with ``names`` extra
    DNS names, so the chain sent in the handshake is large (RFC 9000 §8.1 tests).

    Returns ``(chain.pem, leaf key, root.pem, DER bytes of the chain sent)``; the
    chain file holds the leaf first, then the intermediates (not the root).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def make(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey,
             signer: ec.EllipticCurvePrivateKey, ca: bool,
             sans: list[x509.GeneralName]) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            signer.public_key()), critical=False)
        return b.sign(signer, hashes.SHA256())

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(depth)]
    subjects = ["pyquic test root"] + [f"pyquic test intermediate {i}" for i in
                                       range(1, depth - 1)] + ["localhost"]
    certs: list[x509.Certificate] = []
    for i in range(depth):
        leaf = i == depth - 1
        sans: list[x509.GeneralName] = []
        if leaf:
            import ipaddress

            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            sans += [x509.DNSName(f"padding-name-{n:04d}.large-chain.pyquic.test")
                     for n in range(names)]
        certs.append(make(subjects[i], subjects[max(i - 1, 0)], keys[i], keys[max(i - 1, 0)],
                          ca=not leaf, sans=sans))
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    sent = list(reversed(certs[1:]))  # leaf first (RFC 8446 §4.4.2)
    (directory / "chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in sent))
    (directory / "root.pem").write_bytes(certs[0].public_bytes(pem))
    (directory / "leaf.key").write_bytes(keys[-1].private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    der = sum(len(c.public_bytes(serialization.Encoding.DER)) for c in sent)
    return (str(directory / "chain.pem"), str(directory / "leaf.key"),
            str(directory / "root.pem"), der)


class Background:
    """A subprocess in the background, its output (stdout and stderr) in a log file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path = REPO) -> None:
        self.log = log
        self._f = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env if env is not None else cli_env(),
                                     stdout=self._f, stderr=subprocess.STDOUT, text=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait (bounded) until the output matches the regex ``pattern``; the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text(), re.MULTILINE)
            if m:
                return m
            if self.proc.poll() is not None:
                m = re.search(pattern, self.text(), re.MULTILINE)  # its last words
                if m:
                    return m
                raise AssertionError(f"exited ({self.proc.returncode}) before {pattern!r}:\n"
                                     f"{self.text()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> str:
        """Terminate (then kill) the process; everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._f.close()
        return self.text()


class Server(Background):
    """A ``python -m pyquic ARGS`` server, started once ``ready`` shows in its output."""

    def __init__(self, tmp: Path, args: list[str], ready: str, **env: str) -> None:
        super().__init__([sys.executable, "-m", "pyquic", *args],
                         tmp / f"server-{time.monotonic_ns()}.log", cli_env(**env))
        try:
            self.wait_for(re.escape(ready), timeout=30)
        except AssertionError:
            self.stop()
            raise


__all__ = ["REPO", "Background", "Server", "cli_env", "free_udp_port", "run_cli", "sha256",
           "write_large_chain", "write_self_signed"]
