"""Key schedule against RFC 8448 §3 ("Simple 1-RTT Handshake"), values typed in."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from pyquic.tls.keyschedule import (
    KeySchedule,
    Transcript,
    hkdf_expand_label,
    hkdf_extract,
)
from pyquic.tls.messages import CipherSuite


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


# RFC 8448 §3
CLIENT_X25519_PRIV = h("49af42ba7f7994852d713ef2784bcbcaa7911de26adc5642cb634540e7ea5005")
SERVER_X25519_PUB = h("c9828876112095fe66762bdbf7c672e156d6cc253b833df1dd69b1b04e751f0f")
ECDHE = h("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
EARLY = h("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a")
DERIVED_HS = h("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba")
HANDSHAKE = h("1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac")
HASH_CH_SH = h("860c06edc07858ee8e78f0e7428c58edd6b43f2ca3e6e95f02ed063cf0e1cad8")
C_HS = h("b3eddb126e067f35a780b3abf45e2d8f3b1a950738f52e9600746a0e27a55a21")
S_HS = h("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
DERIVED_MS = h("43de77e0c77713859a944db9db2590b53190a65b3ee2e4f12dd7a0bb7ce254b4")
MASTER = h("18df06843d13a08bf2a449844c5f8a478001bc4d4c627984d5a41da8d0402919")
HASH_CH_CV = h("edb7725fa7a3473b031ec8ef65a2485493900138a2b91291407d7951a06110ed")
S_FINISHED_KEY = h("008d3b66f816ea559f96b537e885c31fc068bf492c652f01f288a1d8cdc19fc8")
S_VERIFY = h("9b9b141d906337fbd2cbdce71df4deda4ab42c309572cb7fffee5454b78f0718")
HASH_CH_SFIN = h("9608102a0f1ccc6db6250b7b7e417b1a000eaada3daae4777a7686c9ff83df13")
C_AP = h("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5")
S_AP = h("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
EXP_MASTER = h("fe22f881176eda18eb8f44529e6792c50c9a3f89452f68d8ae311b4309d3cf50")
C_FINISHED_KEY = h("b80ad01015fb2f0bd65ff7d4da5d6bf83f84821d1f87fdc7d3c75b5a7b42d9c4")
C_VERIFY = h("a8ec436d677634ae525ac1fcebe11a039ec17694fac6e98527b642f2edd5ce61")
HASH_CH_CFIN = h("209145a96ee8e2a122ff810047cc952684658d6049e86429426db87c54ad143d")
RES_MASTER = h("7df235f2031d2a051287d02b0241b0bfdaf86cc856231f2d5aba46c434ec196c")
# NewSessionTicket nonce 00 00 -> resumption PSK (RFC 8448 §3 / §4)
RES_PSK = h("4ecd0eb6ec3b4d87f5d6028f922ca4c5851a277fd41311c9e62d2c9492e1c4f3")


@pytest.fixture
def ks() -> KeySchedule:
    k = KeySchedule(CipherSuite.AES_128_GCM_SHA256)
    k.set_shared_secret(ECDHE)
    return k


def test_x25519_shared_secret():
    priv = x25519.X25519PrivateKey.from_private_bytes(CLIENT_X25519_PRIV)
    assert priv.exchange(x25519.X25519PublicKey.from_public_bytes(SERVER_X25519_PUB)) == ECDHE


def test_early_and_handshake_secret(ks):
    assert ks.early_secret == EARLY
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert ks.derive_secret(EARLY, b"derived", empty) == DERIVED_HS
    assert ks.handshake_secret == HANDSHAKE
    assert hkdf_extract("sha256", DERIVED_HS, ECDHE) == HANDSHAKE


def test_handshake_traffic_secrets(ks):
    assert ks.handshake_traffic_secrets(HASH_CH_SH) == (C_HS, S_HS)


def test_master_secret(ks):
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert ks.derive_secret(HANDSHAKE, b"derived", empty) == DERIVED_MS
    assert ks.master_secret == MASTER


def test_finished_keys_and_verify_data(ks):
    assert hkdf_expand_label("sha256", S_HS, b"finished", b"", 32) == S_FINISHED_KEY
    assert hkdf_expand_label("sha256", C_HS, b"finished", b"", 32) == C_FINISHED_KEY
    assert ks.finished(S_HS, HASH_CH_CV) == S_VERIFY
    assert ks.finished(C_HS, HASH_CH_SFIN) == C_VERIFY


def test_application_and_derived_secrets(ks):
    assert ks.application_traffic_secrets(HASH_CH_SFIN) == (C_AP, S_AP)
    assert ks.exporter_master_secret(HASH_CH_SFIN) == EXP_MASTER
    assert ks.resumption_master_secret(HASH_CH_CFIN) == RES_MASTER
    assert ks.resumption_psk(RES_MASTER, b"\x00\x00") == RES_PSK


def test_psk_early_secret_changes_with_psk():
    a = KeySchedule(CipherSuite.AES_128_GCM_SHA256, RES_PSK)
    assert a.early_secret != EARLY and len(a.early_secret) == 32
    b = KeySchedule(CipherSuite.AES_256_GCM_SHA384)
    assert len(b.early_secret) == 48


def test_transcript_hrr_rewrite():
    t = Transcript()
    t.add(b"\x01\x00\x00\x01A")
    t.set_hash("sha256")
    import hashlib

    assert t.digest() == hashlib.sha256(b"\x01\x00\x00\x01A").digest()
    t.restart_after_hrr()
    inner = hashlib.sha256(b"\x01\x00\x00\x01A").digest()
    assert t.digest() == hashlib.sha256(b"\xfe\x00\x00\x20" + inner).digest()


def test_no_psk_early_secrets_are_cached_and_correct():
    """The PSK-less early secret and its "derived" secret are computed once per
    hash; a second schedule reuses them and still reaches RFC 8448's values."""
    from pyquic.tls import keyschedule

    keyschedule._NO_PSK_EARLY.clear()
    a = KeySchedule(CipherSuite.AES_128_GCM_SHA256)
    assert "sha256" in keyschedule._NO_PSK_EARLY
    assert keyschedule._NO_PSK_EARLY["sha256"] == (EARLY, DERIVED_HS)
    b = KeySchedule(CipherSuite.AES_128_GCM_SHA256)
    b.set_shared_secret(ECDHE)
    assert a.early_secret == b.early_secret == EARLY
    assert b.handshake_secret == HANDSHAKE and b.master_secret == MASTER
    # a PSK never uses the cache
    c = KeySchedule(CipherSuite.AES_128_GCM_SHA256, RES_PSK)
    c.set_shared_secret(ECDHE)
    assert c.handshake_secret != HANDSHAKE
    # sha384 has its own entry
    d = KeySchedule(CipherSuite.AES_256_GCM_SHA384)
    assert keyschedule._NO_PSK_EARLY["sha384"][0] == d.early_secret


def test_hkdf_expand_multi_block_rfc5869():
    """RFC 5869 A.1 (82-byte output: three SHA-256 blocks)."""
    from pyquic.tls.keyschedule import hkdf_expand

    prk = h("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
    okm = h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
            "34007208d5b887185865")
    assert hkdf_expand("sha256", prk, h("f0f1f2f3f4f5f6f7f8f9"), 42) == okm
    long = h("b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
             "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
             "cc30c58179ec3e87c14c01d5c1f3434f1d87")
    prk2 = h("06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244")
    info2 = bytes(range(0xb0, 0x100))
    assert hkdf_expand("sha256", prk2, info2, 82) == long
