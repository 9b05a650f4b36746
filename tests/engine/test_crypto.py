"""Tests for pyquic.engine.crypto with RFC 9001 / RFC 9369 Appendix A vectors."""

from __future__ import annotations

import pytest

from pyquic.engine.crypto import (
    TLS_CIPHER_AES_CCM_128,
    TLS_CIPHER_AES_GCM_128,
    TLS_CIPHER_AES_GCM_256,
    TLS_CIPHER_CHACHA20_POLY1305,
    VERSION_1,
    VERSION_2,
    CryptoError,
    PacketKey,
    hash_for_cipher,
    hkdf_expand_label,
    initial_keys,
    initial_secrets,
    retry_integrity_tag,
    verify_retry_integrity,
)

DCID = bytes.fromhex("8394c8f03e515708")
CHACHA_SECRET = bytes.fromhex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b")


def test_v1_initial_secrets_and_keys() -> None:
    # RFC 9001 A.1
    client, server = initial_secrets(VERSION_1, DCID)
    assert client.hex() == "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea"
    assert server.hex() == "3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b"
    ck = PacketKey(TLS_CIPHER_AES_GCM_128, client, VERSION_1)
    assert ck.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert ck.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert ck.hp_key.hex() == "9f50449e04a0e810283a1e9933adedd2"
    sk = PacketKey(TLS_CIPHER_AES_GCM_128, server, VERSION_1)
    assert sk.key.hex() == "cf3a5331653c364c88f0f379b6067e37"
    assert sk.iv.hex() == "0ac1493ca1905853b0bba03e"
    assert sk.hp_key.hex() == "c206b8d9b9f0f37644430b490eeaa314"


def test_v2_initial_secrets_and_keys() -> None:
    # RFC 9369 A.1
    client, server = initial_secrets(VERSION_2, DCID)
    assert client.hex() == "14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b"
    assert server.hex() == "0263db1782731bf4588e7e4d93b7463907cb8cd8200b5da55a8bd488eafc37c1"
    ck = PacketKey(TLS_CIPHER_AES_GCM_128, client, VERSION_2)
    assert ck.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    assert ck.iv.hex() == "91f73e2351d8fa91660e909f"
    assert ck.hp_key.hex() == "45b95e15235d6f45a6b19cbcb0294ba9"
    sk = PacketKey(TLS_CIPHER_AES_GCM_128, server, VERSION_2)
    assert sk.key.hex() == "82db637861d55e1d011f19ea71d5d2a7"
    assert sk.iv.hex() == "dd13c276499c0249d3310652"
    assert sk.hp_key.hex() == "edf6d05c83121201b436e16877593c3a"


def test_initial_keys_direction() -> None:
    csend, crecv = initial_keys(VERSION_1, DCID, is_client=True)
    ssend, srecv = initial_keys(VERSION_1, DCID, is_client=False)
    assert csend.key == srecv.key and crecv.key == ssend.key
    assert csend.key != crecv.key


def test_hp_mask_aes_vectors() -> None:
    # RFC 9001 A.2 / A.3 samples and masks
    client, server = initial_secrets(VERSION_1, DCID)
    ck = PacketKey(TLS_CIPHER_AES_GCM_128, client, VERSION_1)
    assert ck.hp_mask(bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b")).hex() == "437b9aec36"
    sk = PacketKey(TLS_CIPHER_AES_GCM_128, server, VERSION_1)
    assert sk.hp_mask(bytes.fromhex("2cd0991cd25b0aac406a5816b6394100")).hex() == "2ec0d8356a"


def test_chacha20_keys_and_key_update_v1() -> None:
    # RFC 9001 A.5
    k = PacketKey(TLS_CIPHER_CHACHA20_POLY1305, CHACHA_SECRET, VERSION_1)
    assert k.key.hex() == "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8"
    assert k.iv.hex() == "e0459b3474bdd0e44a41c144"
    assert k.hp_key.hex() == "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"
    mask = k.hp_mask(bytes.fromhex("5e5cd55c41f69080575d7999c25a5bfb"))
    assert mask.hex() == "aefefe7d03"
    nxt = k.next_phase()
    assert nxt.secret.hex() == "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9"
    assert nxt.hp_key == k.hp_key  # RFC 9001 §6: hp key unchanged
    assert nxt.key != k.key


def test_chacha20_keys_v2() -> None:
    # RFC 9369 A.5
    k = PacketKey(TLS_CIPHER_CHACHA20_POLY1305, CHACHA_SECRET, VERSION_2)
    assert k.key.hex() == "3bfcddd72bcf02541d7fa0dd1f5f9eeea817e09a6963a0e6c7df0f9a1bab90f2"
    assert k.iv.hex() == "a6b5bc6ab7dafce30ffff5dd"
    assert k.hp_key.hex() == "d659760d2ba434a226fd37b35c69e2da8211d10c4f12538787d65645d5d1b8e2"
    # v2 key update uses "quicv2 ku" (RFC 9369 §3.3.2), so it differs from v1.
    v1_next = PacketKey(TLS_CIPHER_CHACHA20_POLY1305, CHACHA_SECRET, VERSION_1).next_phase()
    assert k.next_phase().secret != v1_next.secret
    expected = hkdf_expand_label("sha256", CHACHA_SECRET, b"quicv2 ku", b"", 32)
    assert k.next_phase().secret == expected


@pytest.mark.parametrize(
    "cipher",
    [
        TLS_CIPHER_AES_GCM_128,
        TLS_CIPHER_AES_GCM_256,
        TLS_CIPHER_AES_CCM_128,
        TLS_CIPHER_CHACHA20_POLY1305,
    ],
)
def test_roundtrip_and_tamper(cipher: int) -> None:
    secret = bytes(range(48 if hash_for_cipher(cipher) == "sha384" else 32))
    k = PacketKey(cipher, secret, VERSION_1)
    ct = k.encrypt(7, b"hdr", b"payload")
    assert len(ct) == len(b"payload") + k.tag_len
    assert k.decrypt(7, b"hdr", ct) == b"payload"
    with pytest.raises(CryptoError):
        k.decrypt(8, b"hdr", ct)
    with pytest.raises(CryptoError):
        k.decrypt(7, b"hdX", ct)
    with pytest.raises(CryptoError):
        k.decrypt(7, b"hdr", ct[:-1] + bytes([ct[-1] ^ 1]))
    assert len(k.hp_mask(bytes(16))) == 5
    # Keys of two consecutive phases do not decrypt each other's packets.
    nxt = k.next_phase()
    with pytest.raises(CryptoError):
        nxt.decrypt(7, b"hdr", ct)
    assert nxt.next_phase().key != k.key


def test_hash_for_cipher() -> None:
    assert hash_for_cipher(TLS_CIPHER_AES_GCM_256) == "sha384"
    assert hash_for_cipher(TLS_CIPHER_CHACHA20_POLY1305) == "sha256"
    with pytest.raises(ValueError):
        hash_for_cipher(99)


def test_bad_version_rejected() -> None:
    with pytest.raises(ValueError):
        initial_secrets(0xFF00001D, DCID)


def test_retry_integrity_tag_v1_v2() -> None:
    # RFC 9001 A.4 and RFC 9369 A.4 (odcid is the client's original DCID)
    v1 = bytes.fromhex(
        "ff000000010008f067a5502a4262b5746f6b656e04a265ba2eff4d829058fb3f0f2496ba"
    )
    assert retry_integrity_tag(VERSION_1, DCID, v1[:-16]) == v1[-16:]
    assert verify_retry_integrity(VERSION_1, DCID, v1)
    v2 = bytes.fromhex(
        "cf6b3343cf0008f067a5502a4262b5746f6b656ec8646ce8bfe33952d955543665dcc7b6"
    )
    assert retry_integrity_tag(VERSION_2, DCID, v2[:-16]) == v2[-16:]
    assert verify_retry_integrity(VERSION_2, DCID, v2)
    assert not verify_retry_integrity(VERSION_1, DCID, v2)
    assert not verify_retry_integrity(VERSION_1, b"\x00" + DCID[1:], v1)


def _count_hkdf(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the label of every HKDF-Expand-Label the crypto module runs."""
    from pyquic.engine import crypto

    calls: list[bytes] = []
    real = crypto.hkdf_expand_label
    real_many = crypto._expand_labels

    def counting(hash_name: str, secret: bytes, label: bytes, context: bytes,
                 length: int) -> bytes:
        calls.append(label)
        return real(hash_name, secret, label, context, length)

    def counting_many(hash_name: str, secret: bytes,
                      labels: tuple[tuple[bytes, int], ...]) -> list[bytes]:
        calls.extend(label for label, _ in labels)
        return real_many(hash_name, secret, labels)

    monkeypatch.setattr(crypto, "hkdf_expand_label", counting)
    monkeypatch.setattr(crypto, "_expand_labels", counting_many)
    return calls


def test_packet_key_derives_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PacketKey runs no HKDF until it is used; the next phase's key (kept
    for a key update) costs nothing until used, then derives its secret and
    key + iv, and reuses the hp key."""
    client, _server = initial_secrets(VERSION_1, DCID)
    calls = _count_hkdf(monkeypatch)
    k = PacketKey(TLS_CIPHER_AES_GCM_128, client, VERSION_1)
    assert calls == []
    # RFC 9001 A.1 values, derived on first access (key, iv and hp at once)
    assert k.iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert calls == [b"quic key", b"quic iv", b"quic hp"]
    assert k.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert k.hp_key.hex() == "9f50449e04a0e810283a1e9933adedd2"
    assert len(calls) == 3
    calls.clear()
    nxt = k.next_phase()
    assert calls == []
    ct = nxt.encrypt(1, b"h", b"p")  # first use: secret, key and iv, not hp
    assert calls == [b"quic ku", b"quic key", b"quic iv"]
    assert nxt.hp_key == k.hp_key
    assert nxt.secret == hkdf_expand_label("sha256", client, b"quic ku", b"", 32)
    assert PacketKey(TLS_CIPHER_AES_GCM_128, nxt.secret, VERSION_1).decrypt(1, b"h", ct) == b"p"
    with pytest.raises(AttributeError):
        k.no_such_attribute  # noqa: B018


def test_lazy_next_phase_chain() -> None:
    """Two phases ahead, nothing used in between: the same keys as eager
    derivation, and a used key no longer holds the previous phase."""
    secret = bytes(range(32))
    k0 = PacketKey(TLS_CIPHER_AES_GCM_128, secret, VERSION_2)
    k2 = k0.next_phase().next_phase()
    s1 = hkdf_expand_label("sha256", secret, b"quicv2 ku", b"", 32)
    s2 = hkdf_expand_label("sha256", s1, b"quicv2 ku", b"", 32)
    eager = PacketKey(TLS_CIPHER_AES_GCM_128, s2, VERSION_2)
    assert k2.key == eager.key and k2.iv == eager.iv
    assert k2.hp_key == k0.hp_key != eager.hp_key
    assert k2.secret == s2
    assert k2._prev is None
    ct = k2.encrypt(3, b"h", b"x")
    assert eager.decrypt(3, b"h", ct) == b"x"
    with pytest.raises(ValueError):
        PacketKey(TLS_CIPHER_AES_GCM_128, None, VERSION_1)


def test_initial_keys_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Initial keys (public, RFC 9001 §5.2) are derived once per (version,
    DCID); the cache tells versions and DCIDs apart and stays bounded."""
    from pyquic.engine import crypto

    crypto._initial_material.cache_clear()
    calls = _count_hkdf(monkeypatch)
    csend, crecv = initial_keys(VERSION_1, DCID, True)
    n = len(calls)
    assert n == 8  # client in, server in; key, iv, hp for each
    ssend, srecv = initial_keys(VERSION_1, bytearray(DCID), False)
    assert len(calls) == n  # served from the cache
    for key in (csend, srecv):  # RFC 9001 A.1
        assert key.key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
        assert key.iv.hex() == "fa044b2f42a3fd3b46fb255c"
        assert key.hp_key.hex() == "9f50449e04a0e810283a1e9933adedd2"
    assert ssend.key == crecv.key == bytes.fromhex("cf3a5331653c364c88f0f379b6067e37")
    v2_send, _ = initial_keys(VERSION_2, DCID, True)  # RFC 9369 A.1
    assert v2_send.key.hex() == "8b1a0bc121284290a29e0971b5cd045d"
    other, _ = initial_keys(VERSION_1, DCID[:-1] + b"\x00", True)
    assert other.key != csend.key
    # each PacketKey builds its own cipher objects
    assert csend._aead is not srecv._aead
    assert crypto._initial_material.cache_info().maxsize is not None
    with pytest.raises(ValueError):
        initial_keys(0xFF00001D, DCID, True)


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("key_len", [0, 16, 32, 48, 64, 65, 128, 129, 200])
def test_hmac_helpers_match_stdlib(hash_name: str, key_len: int) -> None:
    import hmac

    from pyquic._hmac import HmacKey, hmac_digest

    key = bytes((i * 7 + 1) & 0xFF for i in range(key_len))
    hk = HmacKey(key, hash_name)
    for msg in (b"", b"abc", bytes(range(256)) * 3):
        expected = hmac.digest(key, msg, hash_name)
        assert hmac_digest(key, msg, hash_name) == expected
        assert hk.digest(msg) == expected  # reusable: states are copied
        assert hk.digest(msg) == expected


def test_reset_token_key_matches_reset_token() -> None:
    import hashlib
    import hmac

    from pyquic.engine.endpoint import _subkey, reset_token, reset_token_key

    key = bytes(range(32))
    hk = reset_token_key(key)
    for cid in (b"", b"\x01" * 8, bytes(range(20))):
        expected = hmac.new(_subkey(key, b"stateless_reset"), cid, hashlib.sha256).digest()[:16]
        assert reset_token(key, cid) == expected
        assert hk.digest(cid)[:16] == expected
    assert reset_token_key(bytes(32)).digest(b"x") != hk.digest(b"x")
