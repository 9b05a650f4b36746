"""Certificates generated at test time (never committed) and handshake helpers."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyquic.tls import x509 as tx


@dataclass
class Pki:
    """PEM files of a test PKI."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    expired_cert: Path
    expired_key: Path
    other_ca: Path
    ca_obj: tuple

    def issue(self, name: str, key=None, names=("localhost", "127.0.0.1"), **kw) -> tuple[Path, Path]:
        cert, k = tx.generate_certificate(name, names=names, issuer=self.ca_obj, key=key, **kw)
        cp, kp = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cp.write_bytes(tx.cert_to_pem(cert))
        kp.write_bytes(tx.key_to_pem(k))
        return cp, kp


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = tx.generate_certificate("pyquic test CA", is_ca=True)
    other = tx.generate_certificate("other CA", is_ca=True)
    (d / "ca.pem").write_bytes(tx.cert_to_pem(ca[0]))
    (d / "other.pem").write_bytes(tx.cert_to_pem(other[0]))
    p = Pki(d, d / "ca.pem", d / "x", d / "x", d / "x", d / "x", d / "x", d / "x",
            d / "other.pem", ca)
    p.server_cert, p.server_key = p.issue("server")
    p.client_cert, p.client_key = p.issue("client", names=("client.example",))
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    p.expired_cert, p.expired_key = p.issue(
        "expired", not_before=past, not_after=past + datetime.timedelta(days=1)
    )
    return p


KEY_MAKERS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.fixture(scope="session")
def keyed_certs(pki: Pki) -> dict[str, tuple[Path, Path]]:
    """Server certificates with each supported key type."""
    return {n: pki.issue(f"server-{n}", key=mk()) for n, mk in KEY_MAKERS.items()}


@pytest.fixture
def listener():
    """A user-backend QUIC listener on 127.0.0.1 with ALPN "h3"."""
    from pyquic import abi
    from pyquic.user.socket import QuicSocket

    ls = QuicSocket()
    ls.bind(("127.0.0.1", 0))
    ls.setsockopt(abi.SOL_QUIC, abi.SockOpt.ALPN, b"h3")
    ls.listen()
    yield ls
    ls.close()
