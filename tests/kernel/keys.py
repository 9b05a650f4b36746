"""Test credentials written at test time: a CA, a server certificate for
``server.test`` signed by it, and libquic-style PSK files."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PSK_IDENTITY = "test1"
PSK_KEY_HEX = "b8d3a37be2c9a08eaf25cf6abe602ecc94417f8ba6211a58b8d0a3fb0d2e3a90"
SERVER_NAME = "server.test"


@dataclass
class Keys:
    ca: Path
    cert: Path
    key: Path
    client_psk: Path
    server_psk: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_keys(directory: Path) -> Keys:
    """Write fresh credentials into ``directory`` and return their paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("pyquic test CA")).issuer_name(
            _name("pyquic test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(SERVER_NAME)).issuer_name(
            ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    k = Keys(directory / "ca-cert.pem", directory / "server-cert.pem",
             directory / "server-key.pem", directory / "client-psk.txt",
             directory / "server-psk.txt")
    k.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    k.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    k.client_psk.write_text(f"{PSK_IDENTITY}:{PSK_KEY_HEX}\n")
    k.server_psk.write_text(f"{PSK_IDENTITY}:{PSK_KEY_HEX}\n")
    return k
