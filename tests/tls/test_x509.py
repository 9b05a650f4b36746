"""Certificate loading, generation, signatures and chain-verification errors."""

from __future__ import annotations

import datetime

import pytest
from cryptography.x509 import verification as xv

from pyquic.tls import x509 as tx
from pyquic.tls.messages import AlertDescription as AD
from pyquic.tls.messages import SignatureScheme as S
from pyquic.tls.messages import TlsAlert

from .conftest import KEY_MAKERS

NOW = datetime.datetime.now(datetime.timezone.utc)


def test_self_signed_pem_loads_and_verifies(tmp_path):
    cert_pem, key_pem = tx.generate_self_signed("localhost", names=["localhost", "127.0.0.1"])
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    certs = tx.load_certificates(tmp_path / "c.pem")
    key = tx.load_private_key(tmp_path / "k.pem")
    assert tx.signature_schemes_for_key(key) == [S.ECDSA_SECP256R1_SHA256]
    store = tx.load_trust_store(tmp_path / "c.pem")
    tx.verify_chain(certs, store, now=NOW, hostname="localhost")
    tx.verify_chain(certs, store, now=NOW, hostname="127.0.0.1")


def test_load_errors(tmp_path):
    (tmp_path / "bad.pem").write_text("nothing here")
    with pytest.raises(ValueError):
        tx.load_certificates(tmp_path / "bad.pem")


@pytest.mark.parametrize("keytype", list(KEY_MAKERS))
def test_sign_verify_each_key(keytype):
    key = KEY_MAKERS[keytype]()
    data = tx.signed_content(True, b"h" * 32)
    for scheme in tx.signature_schemes_for_key(key):
        sig = tx.sign(key, scheme, data)
        tx.verify_signature(key.public_key(), scheme, data, sig)
        with pytest.raises(TlsAlert) as ei:
            tx.verify_signature(key.public_key(), scheme, data + b"x", sig)
        assert ei.value.description == AD.decrypt_error


def test_scheme_key_mismatch_is_illegal_parameter():
    key = KEY_MAKERS["p256"]()
    sig = tx.sign(key, S.ECDSA_SECP256R1_SHA256, b"d")
    with pytest.raises(TlsAlert) as ei:
        tx.verify_signature(key.public_key(), S.ECDSA_SECP384R1_SHA384, b"d", sig)
    assert ei.value.description == AD.illegal_parameter


def test_chain_errors_name_the_cause():
    ca = tx.generate_certificate("ca", is_ca=True)
    leaf = tx.generate_certificate("srv", names=["srv.example"], issuer=ca)
    store = xv.Store([ca[0]])
    tx.verify_chain([leaf[0]], store, now=NOW, hostname="srv.example")
    with pytest.raises(TlsAlert) as ei:
        tx.verify_chain([leaf[0]], store, now=NOW, hostname="evil.example")
    assert ei.value.description == AD.bad_certificate and "evil.example" in str(ei.value)
    with pytest.raises(TlsAlert) as ei:
        tx.verify_chain([leaf[0]], store, now=NOW + datetime.timedelta(days=800))
    assert ei.value.description == AD.certificate_expired and "expired" in str(ei.value)
    with pytest.raises(TlsAlert) as ei:
        tx.verify_chain([leaf[0]], xv.Store([tx.generate_certificate("x", is_ca=True)[0]]),
                        now=NOW)
    assert ei.value.description == AD.unknown_ca
    with pytest.raises(TlsAlert) as ei:
        tx.verify_chain([], store, now=NOW)
    assert ei.value.description == AD.certificate_required


def test_intermediate_chain():
    root = tx.generate_certificate("root", is_ca=True)
    inter = tx.generate_certificate("inter", is_ca=True, issuer=root)
    leaf = tx.generate_certificate("leaf", names=["a.example"], issuer=inter)
    tx.verify_chain([leaf[0], inter[0]], xv.Store([root[0]]), now=NOW, hostname="a.example")
    with pytest.raises(TlsAlert):
        tx.verify_chain([leaf[0]], xv.Store([root[0]]), now=NOW, hostname="a.example")


def test_certificate_der_is_cached_per_certificate(tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem_a, _ = tx.generate_self_signed("a.example")
    pem_b, _ = tx.generate_self_signed("b.example")
    (tmp_path / "a.pem").write_bytes(pem_a)
    (tmp_path / "b.pem").write_bytes(pem_b)
    a = tx.load_certificates(tmp_path / "a.pem")[0]
    b = tx.load_certificates(tmp_path / "b.pem")[0]
    tx._DER_CACHE.clear()
    der_a = tx.certificate_der(a)
    assert der_a == a.public_bytes(serialization.Encoding.DER)
    assert tx.certificate_der(a) is der_a  # served from the cache
    assert tx.certificate_der(b) == b.public_bytes(serialization.Encoding.DER) != der_a
    # the same certificate loaded again (an equal object) shares the entry
    again = tx.load_certificates(tmp_path / "a.pem")[0]
    assert tx.certificate_der(again) is der_a
    assert len(tx._DER_CACHE) == 2


def test_parse_certificate_is_cached_and_bounded(monkeypatch):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def der_of(name: str) -> bytes:
        pem, _ = tx.generate_self_signed(name)
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)

    der_a, der_b, der_c = der_of("a.example"), der_of("b.example"), der_of("c.example")
    tx._PARSED_CACHE.clear()
    a = tx.parse_certificate(der_a)
    assert a.subject.rfc4514_string() == "CN=a.example"
    assert tx.parse_certificate(bytearray(der_a)) is a  # served from the cache
    assert tx.parse_certificate(der_b) is not a
    with pytest.raises(ValueError):
        tx.parse_certificate(b"not a certificate")
    # bounded: a full cache starts over rather than growing
    monkeypatch.setattr(tx, "_PARSED_CACHE_MAX", 2)
    tx.parse_certificate(der_c)
    assert len(tx._PARSED_CACHE) <= 2
    assert tx.parse_certificate(der_c).subject.rfc4514_string() == "CN=c.example"
