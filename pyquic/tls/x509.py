"""Certificates for the TLS engine: loading, signing, and chain verification.

Path validation is delegated to ``cryptography.x509.verification`` (WebPKI
rules); nothing here builds chains by hand. Failures are reported as
:class:`~pyquic.tls.messages.TlsAlert` with an alert matching the cause
(``certificate_expired``, ``bad_certificate`` for a host-name mismatch,
``unknown_ca`` for an untrusted chain) and a message saying which it was.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import warnings
from collections.abc import Sequence
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyquic.tls.messages import AlertDescription, SignatureScheme, TlsAlert

PrivateKey = Union[  # noqa: UP007 - runtime alias on 3.10
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[  # noqa: UP007
    ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey]

S = SignatureScheme

#: Schemes this stack signs and verifies, in our preference order (RFC 8446 §4.2.3).
SUPPORTED_SIGNATURE_SCHEMES: list[int] = [
    S.ECDSA_SECP256R1_SHA256,
    S.ECDSA_SECP384R1_SHA384,
    S.RSA_PSS_RSAE_SHA256,
    S.RSA_PSS_RSAE_SHA384,
    S.RSA_PSS_RSAE_SHA512,
    S.ED25519,
]

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    S.ECDSA_SECP256R1_SHA256: hashes.SHA256,
    S.ECDSA_SECP384R1_SHA384: hashes.SHA384,
    S.RSA_PSS_RSAE_SHA256: hashes.SHA256,
    S.RSA_PSS_RSAE_SHA384: hashes.SHA384,
    S.RSA_PSS_RSAE_SHA512: hashes.SHA512,
}


# ---------------------------------------------------------------- loading


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """All certificates of a PEM file, leaf first."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: no PEM certificate found") from exc
    return certs


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """A PEM (PKCS#8, SEC1 or PKCS#1) private key; ECDSA, RSA or Ed25519."""
    with open(path, "rb") as f:
        data = f.read()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise TypeError(f"{os.fspath(path)}: unsupported private key type {type(key).__name__}")
    return key


def load_trust_store(cafile: str | os.PathLike[str] | None = None) -> xv.Store:
    """A verification store from ``cafile``, or from the system's default CA paths."""
    certs: list[x509.Certificate] = []
    if cafile is not None:
        certs = load_certificates(cafile)
    else:
        with warnings.catch_warnings():
            # system bundles may hold legacy certificates cryptography warns about
            warnings.simplefilter("ignore")
            certs = _system_certificates()
    if not certs:
        raise ValueError("no trusted CA certificates found")
    return xv.Store(certs)


def _system_certificates() -> list[x509.Certificate]:
    """Certificates of the default CA file (or, failing that, the CA directory)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return load_certificates(candidate)
    certs: list[x509.Certificate] = []
    for d in (paths.capath, paths.openssl_capath):
        if d and os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                if os.path.isfile(p):
                    try:
                        certs.extend(load_certificates(p))
                    except ValueError:
                        continue
            break
    return certs


_DER_CACHE: dict[x509.Certificate, bytes] = {}
_DER_CACHE_MAX = 64


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER encoding of ``cert``, cached: a server sends the same chain in
    every handshake (certificates are immutable and hash by content)."""
    der = _DER_CACHE.get(cert)
    if der is None:
        der = cert.public_bytes(serialization.Encoding.DER)
        if len(_DER_CACHE) >= _DER_CACHE_MAX:
            _DER_CACHE.clear()
        _DER_CACHE[cert] = der
    return der


_PARSED_CACHE: dict[bytes, x509.Certificate] = {}
_PARSED_CACHE_MAX = 64


def parse_certificate(der: bytes) -> x509.Certificate:
    """``x509.load_der_x509_certificate(der)``, cached by the DER bytes: a
    client meets the same server chain in every handshake, and the parsed
    object keeps its public key once built. Certificates are public and
    immutable; the cache holds at most :data:`_PARSED_CACHE_MAX` of them.
    Raises ValueError for bad DER, as the loader does."""
    der = bytes(der)  # (the same object for bytes)
    cert = _PARSED_CACHE.get(der)
    if cert is None:
        cert = x509.load_der_x509_certificate(der)
        if len(_PARSED_CACHE) >= _PARSED_CACHE_MAX:
            _PARSED_CACHE.clear()
        _PARSED_CACHE[der] = cert
    return cert


# ---------------------------------------------------------------- signatures


def signature_schemes_for_key(key: PrivateKey) -> list[int]:
    """The schemes a private key can produce (TLS 1.3 forbids PKCS#1 v1.5 here)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return [S.ECDSA_SECP256R1_SHA256]
        if isinstance(key.curve, ec.SECP384R1):
            return [S.ECDSA_SECP384R1_SHA384]
        return []
    if isinstance(key, rsa.RSAPrivateKey):
        return [S.RSA_PSS_RSAE_SHA256, S.RSA_PSS_RSAE_SHA384, S.RSA_PSS_RSAE_SHA512]
    return [S.ED25519]


def sign(key: PrivateKey, scheme: int, data: bytes) -> bytes:
    """Sign ``data`` with ``scheme``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    algo = _HASHES[scheme]()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algo))
    pss = padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
    return key.sign(data, pss, algo)


def verify_signature(public_key: object, scheme: int, data: bytes, signature: bytes) -> None:
    """Check a CertificateVerify signature; decrypt_error on failure (RFC 8446 §4.4.3)."""
    try:
        if scheme == S.ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return
        algo_cls = _HASHES.get(scheme)
        if algo_cls is None:
            raise TlsAlert(AlertDescription.illegal_parameter, f"signature scheme {scheme:#06x}")
        algo = algo_cls()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            want: dict[int, str] = {
                S.ECDSA_SECP256R1_SHA256: "secp256r1",
                S.ECDSA_SECP384R1_SHA384: "secp384r1",
            }
            if want.get(scheme) != public_key.curve.name:
                raise TlsAlert(AlertDescription.illegal_parameter, "scheme does not match key")
            public_key.verify(signature, data, ec.ECDSA(algo))
            return
        if isinstance(public_key, rsa.RSAPublicKey) and scheme in (
            S.RSA_PSS_RSAE_SHA256, S.RSA_PSS_RSAE_SHA384, S.RSA_PSS_RSAE_SHA512
        ):
            pss = padding.PSS(mgf=padding.MGF1(algo), salt_length=algo.digest_size)
            public_key.verify(signature, data, pss, algo)
            return
    except InvalidSignature as exc:
        raise TlsAlert(AlertDescription.decrypt_error, "bad CertificateVerify signature") from exc
    raise TlsAlert(AlertDescription.illegal_parameter, "signature scheme does not match key")


def signed_content(is_server: bool, transcript_hash: bytes) -> bytes:
    """The CertificateVerify input (RFC 8446 §4.4.3)."""
    ctx = b"TLS 1.3, server CertificateVerify" if is_server else b"TLS 1.3, client CertificateVerify"
    return b" " * 64 + ctx + b"\x00" + transcript_hash


# ---------------------------------------------------------------- verification


def _subject_for(hostname: str) -> xv.DNSName | xv.IPAddress:
    try:
        return xv.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return xv.DNSName(hostname)


def _no_name_builder(store: xv.Store, now: datetime.datetime) -> xv.PolicyBuilder:
    return (
        xv.PolicyBuilder()
        .store(store)
        .time(now)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
    )


def _diagnose(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], store: xv.Store,
    now: datetime.datetime, exc: Exception, hostname: str | None,
) -> TlsAlert:
    for cert in chain:
        if cert.not_valid_after_utc < now:
            return TlsAlert(
                AlertDescription.certificate_expired,
                f"certificate {cert.subject.rfc4514_string()} expired on "
                f"{cert.not_valid_after_utc.isoformat()}",
            )
        if cert.not_valid_before_utc > now:
            return TlsAlert(
                AlertDescription.certificate_expired,
                f"certificate {cert.subject.rfc4514_string()} is not valid before "
                f"{cert.not_valid_before_utc.isoformat()}",
            )
    if hostname is not None:
        # Does the chain verify once the name is ignored? Then the name was the fault.
        try:
            _no_name_builder(store, now).build_client_verifier().verify(leaf, list(chain[1:]))
        except xv.VerificationError:
            pass
        else:
            return TlsAlert(
                AlertDescription.bad_certificate,
                f"certificate does not match host name {hostname!r}: {exc}",
            )
    return TlsAlert(AlertDescription.unknown_ca, f"certificate is not trusted: {exc}")


def verify_chain(
    chain: Sequence[x509.Certificate],
    store: xv.Store,
    *,
    now: datetime.datetime,
    hostname: str | None = None,
    server: bool = True,
) -> None:
    """Validate a peer's chain (leaf first) against ``store`` at time ``now``.

    ``server=True`` checks a server certificate, against ``hostname`` when given
    (a name or an IP literal). ``server=False`` checks a client certificate.
    Raises TlsAlert naming the cause.
    """
    if not chain:
        raise TlsAlert(AlertDescription.certificate_required, "peer sent no certificate")
    leaf, inter = chain[0], list(chain[1:])
    try:
        if server and hostname:
            xv.PolicyBuilder().store(store).time(now).build_server_verifier(
                _subject_for(hostname)
            ).verify(leaf, inter)
        elif server:
            # No name to check: validate the path only (RFC 6125 checks are skipped).
            _no_name_builder(store, now).build_client_verifier().verify(leaf, inter)
        else:
            xv.PolicyBuilder().store(store).time(now).build_client_verifier().verify(leaf, inter)
    except xv.VerificationError as exc:
        raise _diagnose(leaf, chain, store, now, exc, hostname if server else None) from exc


# ---------------------------------------------------------------- generation


def generate_certificate(
    common_name: str,
    *,
    names: Sequence[str] = (),
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    is_ca: bool = False,
    key: PrivateKey | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """Make a certificate (ECDSA P-256 key unless ``key`` is given) for tests and demos.

    Self-signed when ``issuer`` is None. ``names`` become subjectAltName entries
    (IP literals as iPAddress). Carries the extensions WebPKI validation needs.
    """
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = not_before or now - datetime.timedelta(hours=1)
    not_after = not_after or now + datetime.timedelta(days=365)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:
        issuer_name, signing_key = subject, key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    else:
        issuer_name, signing_key = issuer[0].subject, issuer[1]
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key())
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    b = b.add_extension(
        x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=is_ca,
            crl_sign=is_ca, encipher_only=False, decipher_only=False,
        ),
        critical=True,
    )
    if not is_ca:
        sans: list[x509.GeneralName] = []
        for n in names or (common_name,):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    algo = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(signing_key, algo), key


def generate_self_signed(
    hostname: str = "localhost", names: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 certificate and key as PEM ``(cert, key)``."""
    cert, key = generate_certificate(hostname, names=names or (hostname,))
    return cert_to_pem(cert), key_to_pem(key)


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
