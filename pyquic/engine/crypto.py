"""QUIC packet protection keys (RFC 9001 §5, RFC 9369 §3.3).

Public API (stable):

- ``VERSION_1 = 0x00000001``, ``VERSION_2 = 0x6B3343CF``
- ``hash_for_cipher(cipher: int) -> str``: "sha256" or "sha384" (the TLS 1.3
  suite hash; ``cipher`` is a ``pyquic.abi.TlsCipher`` value, 51..54).
- ``hkdf_extract(hash_name, salt, ikm) -> bytes``
- ``hkdf_expand_label(hash_name, secret, label: bytes, context: bytes, length)
  -> bytes``: TLS 1.3 HKDF-Expand-Label; ``label`` without "tls13 ".
- ``initial_secrets(version: int, dcid: bytes) -> tuple[bytes, bytes]``:
  (client_initial_secret, server_initial_secret) (RFC 9001 §5.2, RFC 9369
  §3.3.1).  Initial keys are AES-128-GCM: ``PacketKey(TLS_CIPHER_AES_GCM_128,
  secret, version)``.
- ``initial_keys(version, dcid, is_client) -> tuple[PacketKey, PacketKey]``:
  (send key, receive key) for the Initial space.
- ``PacketKey(cipher: int, secret: bytes, version: int)``:
  ``encrypt(pn, header, payload) -> bytes`` returns ciphertext + tag (the
  header is the AAD and is not included); ``decrypt(pn, header, ciphertext)
  -> bytes`` raises ``CryptoError``; ``hp_mask(sample: bytes) -> bytes``
  (5 bytes, RFC 9001 §5.4); ``next_phase() -> PacketKey`` (key update, RFC
  9001 §6.1: new secret via "quic ku" / "quicv2 ku", header protection key
  kept); attributes ``cipher``, ``version``, ``secret``, ``key``, ``iv``,
  ``hp_key``, ``tag_len`` (16), ``hash_name``.
- ``retry_integrity_tag(version, odcid, retry_without_tag) -> bytes``
  (RFC 9001 §5.8, RFC 9369 §3.3.3); ``verify_retry_integrity(version, odcid,
  retry_packet) -> bool`` checks the last 16 bytes.
- ``CryptoError`` (re-exported from ``errors``).
- Cipher ids (same values as ``pyquic.abi.TlsCipher``):
  ``TLS_CIPHER_AES_GCM_128 = 51``, ``TLS_CIPHER_AES_GCM_256 = 52``,
  ``TLS_CIPHER_AES_CCM_128 = 53``, ``TLS_CIPHER_CHACHA20_POLY1305 = 54``.
"""

from __future__ import annotations

import hmac
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from pyquic._hmac import HmacKey, hmac_digest
from pyquic.abi import TlsCipher, Version

from .errors import CryptoError

__all__ = [
    "TLS_CIPHER_AES_CCM_128",
    "TLS_CIPHER_AES_GCM_128",
    "TLS_CIPHER_AES_GCM_256",
    "TLS_CIPHER_CHACHA20_POLY1305",
    "VERSION_1",
    "VERSION_2",
    "CryptoError",
    "PacketKey",
    "hash_for_cipher",
    "hkdf_expand_label",
    "hkdf_extract",
    "initial_keys",
    "initial_secrets",
    "retry_integrity_tag",
    "verify_retry_integrity",
]

VERSION_1 = int(Version.V1)  # 0x00000001
VERSION_2 = int(Version.V2)  # 0x6B3343CF (RFC 9369)

# linux/tls.h TLS_CIPHER_* (pyquic.abi.TlsCipher)
TLS_CIPHER_AES_GCM_128 = TlsCipher.AES_GCM_128
TLS_CIPHER_AES_GCM_256 = TlsCipher.AES_GCM_256
TLS_CIPHER_AES_CCM_128 = TlsCipher.AES_CCM_128
TLS_CIPHER_CHACHA20_POLY1305 = TlsCipher.CHACHA20_POLY1305

# RFC 9001 §5.2 and RFC 9369 §3.3.1
_INITIAL_SALT = {
    VERSION_1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    VERSION_2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}

# RFC 9001 §5.8 and RFC 9369 §3.3.3: fixed AES-128-GCM key and nonce.
_RETRY_KEY = {
    VERSION_1: (
        bytes.fromhex("be0c690b9f66575a1d766b54e368c84e"),
        bytes.fromhex("461599d35d632bf2239825bb"),
    ),
    VERSION_2: (
        bytes.fromhex("8fb4b01b56ac48e260fbcbcead7ccc92"),
        bytes.fromhex("d86969bc2d7c6d9990efb04a"),
    ),
}

# (key, iv, hp, ku) labels; RFC 9001 §5.1/§6.1, RFC 9369 §3.3.2
_LABELS = {
    VERSION_1: (b"quic key", b"quic iv", b"quic hp", b"quic ku"),
    VERSION_2: (b"quicv2 key", b"quicv2 iv", b"quicv2 hp", b"quicv2 ku"),
}

# cipher -> (key length, hash)
_CIPHERS: dict[int, tuple[int, str]] = {
    TLS_CIPHER_AES_GCM_128: (16, "sha256"),
    TLS_CIPHER_AES_GCM_256: (32, "sha384"),
    TLS_CIPHER_AES_CCM_128: (16, "sha256"),
    TLS_CIPHER_CHACHA20_POLY1305: (32, "sha256"),
}

_IV_LEN = 12
_TAG_LEN = 16
_HP_ZERO = bytes(5)
_ECB = modes.ECB()  # stateless: one instance serves every header-protection key


def hash_for_cipher(cipher: int) -> str:
    """Return the hashlib name of the TLS 1.3 hash for ``cipher``."""
    try:
        return _CIPHERS[cipher][1]
    except KeyError:
        raise ValueError(f"unsupported cipher {cipher}") from None


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2)."""
    return hmac_digest(salt, ikm, hash_name)


# (label, length) -> HkdfLabel without the context (RFC 8446 §7.1); QUIC's
# labels are a handful of constants, other callers' labels are not kept
# beyond _INFO_MAX entries
_INFO: dict[tuple[bytes, int], bytes] = {}
_INFO_MAX = 64


def _label_info(label: bytes, length: int) -> bytes:
    """length || len("tls13 " + label) || "tls13 " + label (no context yet)."""
    info = _INFO.get((label, length))
    if info is None:
        full_label = b"tls13 " + label
        info = length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label
        if len(_INFO) < _INFO_MAX:
            _INFO[(label, length)] = info
    return info


def hkdf_expand_label(
    hash_name: str, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """TLS 1.3 HKDF-Expand-Label (RFC 8446 §7.1); ``label`` lacks "tls13 "."""
    info = _label_info(label, length) + bytes((len(context),)) + context
    # HKDF-Expand (RFC 5869 §2.3)
    block = hmac_digest(secret, info + b"\x01", hash_name)
    if length <= len(block):  # one block: every QUIC key, IV and secret
        return block[:length]
    out = block
    counter = 2
    while len(out) < length:
        block = hmac_digest(secret, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return out[:length]


def _expand_labels(
    hash_name: str, secret: bytes, labels: tuple[tuple[bytes, int], ...]
) -> list[bytes]:
    """HKDF-Expand-Label(secret, label, "", length) for each (label, length),
    all one block long (QUIC keys, IVs and header protection keys), with the
    HMAC key set up once."""
    hk = HmacKey(secret, hash_name)
    return [hk.digest(_label_info(label, length) + b"\x00\x01")[:length]
            for label, length in labels]


def _check_version(version: int) -> None:
    if version not in _LABELS:
        raise ValueError(f"unsupported QUIC version 0x{version:08x}")


def initial_secrets(version: int, dcid: bytes) -> tuple[bytes, bytes]:
    """Return (client, server) Initial secrets for ``dcid`` (RFC 9001 §5.2)."""
    _check_version(version)
    initial = hkdf_extract("sha256", _INITIAL_SALT[version], dcid)
    client = hkdf_expand_label("sha256", initial, b"client in", b"", 32)
    server = hkdf_expand_label("sha256", initial, b"server in", b"", 32)
    return client, server


_Material = tuple[bytes, bytes, bytes]  # (key, iv, hp key)


@lru_cache(maxsize=128)
def _initial_material(
    version: int, dcid: bytes
) -> tuple[bytes, bytes, _Material, _Material]:
    """(client secret, server secret, client key material, server key material).

    Cached: Initial keys are public by design (RFC 9001 §5.2: a public salt and
    the client's DCID), and the same ones are derived again for a packet and
    its connection (a server reads the first ClientHello before accepting; a
    client and a server in one process derive the same keys).  Bounded LRU.
    """
    client, server = initial_secrets(version, dcid)
    l_key, l_iv, l_hp, _ = _LABELS[version]
    labels = ((l_key, 16), (l_iv, _IV_LEN), (l_hp, 16))  # AES-128-GCM
    ck, civ, chp = _expand_labels("sha256", client, labels)
    sk, siv, shp = _expand_labels("sha256", server, labels)
    return client, server, (ck, civ, chp), (sk, siv, shp)


def initial_keys(version: int, dcid: bytes, is_client: bool) -> tuple[PacketKey, PacketKey]:
    """Return (send, receive) Initial packet keys for this endpoint."""
    _check_version(version)
    client, server, cmat, smat = _initial_material(version, bytes(dcid))
    ckey = PacketKey(TLS_CIPHER_AES_GCM_128, client, version, _material=cmat)
    skey = PacketKey(TLS_CIPHER_AES_GCM_128, server, version, _material=smat)
    return (ckey, skey) if is_client else (skey, ckey)


_LAZY_ATTRS = frozenset({"key", "iv", "hp_key", "_iv_int", "_aead", "_hp_encryptor"})


class PacketKey:
    """AEAD + header protection key of one direction and one key phase.

    The AEAD object and, for AES, the ECB header-protection encryptor are
    built once, so per-packet work is one AEAD call plus one block encryption.
    """

    __slots__ = (
        "_aead",
        "_hp_encryptor",
        "_hp_given",
        "_iv_int",
        "_material",
        "_prev",
        "cipher",
        "hash_name",
        "hp_key",
        "iv",
        "key",
        "secret",
        "tag_len",
        "version",
    )

    def __init__(
        self, cipher: int, secret: bytes | None, version: int, *,
        _hp_key: bytes | None = None, _material: _Material | None = None,
        _prev: PacketKey | None = None,
    ) -> None:
        _check_version(version)
        try:
            _key_len, hash_name = _CIPHERS[cipher]
        except KeyError:
            raise ValueError(f"unsupported cipher {cipher}") from None
        self.cipher = int(cipher)
        self.version = version
        if secret is not None:
            self.secret = secret
        elif _prev is None:
            raise ValueError("a packet key needs a secret")
        self.hash_name = hash_name
        self.tag_len = _TAG_LEN
        # an hp key given up front (checked in _derive without a failing
        # attribute lookup: an exception per derived key is not free)
        self._hp_given = _hp_key is not None
        if _hp_key is not None:
            self.hp_key = _hp_key
        # (key, iv, hp) already derived (Initial keys, see initial_keys)
        self._material = _material
        # the key of the previous phase: this one's secret and hp key come
        # from it, on first use (next_phase)
        self._prev = _prev
        # key, iv, hp_key and the cipher objects are derived on first use
        # (__getattr__): a key that never protects a packet costs no HKDF and
        # no cipher context (e.g. the next key phase's, kept ready for a key
        # update that may never come)

    def __getattr__(self, name: str) -> Any:
        # only reached for a slot not set yet (see __init__)
        if name in _LAZY_ATTRS:
            self._derive()
            return object.__getattribute__(self, name)
        if name == "secret":
            return self._next_secret()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _next_secret(self) -> bytes:
        """RFC 9001 §6.1: this phase's secret from the previous phase's."""
        prev = self._prev
        if prev is None:  # pragma: no cover - __init__ sets one of the two
            raise AttributeError("secret")
        ku = _LABELS[self.version][3]
        prev_secret = prev.secret
        secret = hkdf_expand_label(self.hash_name, prev_secret, ku, b"", len(prev_secret))
        self.secret = secret
        return secret

    def _derive(self) -> None:
        """Derive the packet protection keys (RFC 9001 §5.1) and build the ciphers."""
        key_len, hash_name = _CIPHERS[self.cipher]
        material = self._material
        if material is not None:
            key, iv, hp_key = material
            self._material = None
        else:
            l_key, l_iv, l_hp, _ = _LABELS[self.version]
            secret = self.secret
            prev = self._prev
            if self._hp_given:
                hp_key = object.__getattribute__(self, "hp_key")
                key, iv = _expand_labels(hash_name, secret, ((l_key, key_len), (l_iv, _IV_LEN)))
            elif prev is not None:  # RFC 9001 §6: the hp key is not updated
                hp_key = prev.hp_key
                key, iv = _expand_labels(hash_name, secret, ((l_key, key_len), (l_iv, _IV_LEN)))
            else:
                key, iv, hp_key = _expand_labels(
                    hash_name, secret, ((l_key, key_len), (l_iv, _IV_LEN), (l_hp, key_len)))
            self._prev = None  # secret and hp key taken: let the old phase go
        aead: AESGCM | AESCCM | ChaCha20Poly1305
        if self.cipher == TLS_CIPHER_CHACHA20_POLY1305:
            aead = ChaCha20Poly1305(key)
            hp_enc = None
        else:
            aead = AESCCM(key) if self.cipher == TLS_CIPHER_AES_CCM_128 else AESGCM(key)
            # RFC 9001 §5.4.3: AES-ECB of the sample.
            hp_enc = Cipher(algorithms.AES(hp_key), _ECB).encryptor()
        self.key = key
        self.iv = iv
        self.hp_key = hp_key
        self._iv_int = int.from_bytes(iv, "big")
        self._aead = aead
        self._hp_encryptor = hp_enc

    def _nonce(self, pn: int) -> bytes:
        # RFC 9001 §5.3: iv XOR left-padded packet number.
        return (self._iv_int ^ pn).to_bytes(_IV_LEN, "big")

    def encrypt(self, pn: int, header: bytes, payload: bytes) -> bytes:
        """Return AEAD(payload) + tag with ``header`` as associated data."""
        return self._aead.encrypt(self._nonce(pn), payload, header)

    def decrypt(self, pn: int, header: bytes, ciphertext: bytes) -> bytes:
        """Return the plaintext; raise CryptoError if authentication fails."""
        try:
            return self._aead.decrypt(self._nonce(pn), ciphertext, header)
        except InvalidTag:
            raise CryptoError("packet authentication failed") from None

    def hp_mask(self, sample: bytes) -> bytes:
        """Return the 5-byte header protection mask for a 16-byte sample."""
        if self._hp_encryptor is not None:
            return self._hp_encryptor.update(sample)[:5]
        # RFC 9001 §5.4.4: counter = sample[0:4] little-endian, nonce =
        # sample[4:16]; cryptography's 16-byte ChaCha20 nonce is exactly that.
        enc = Cipher(algorithms.ChaCha20(self.hp_key, bytes(sample)), None).encryptor()
        return enc.update(_HP_ZERO)

    def next_phase(self) -> PacketKey:
        """Return the key of the next key phase (RFC 9001 §6.1).

        Nothing is derived until the new key is used: its secret ("quic ku")
        and its keys come from this one on first access.
        """
        return PacketKey(self.cipher, None, self.version, _prev=self)


def retry_integrity_tag(version: int, odcid: bytes, retry_without_tag: bytes) -> bytes:
    """Compute the Retry Integrity Tag (RFC 9001 §5.8, RFC 9369 §3.3.3)."""
    try:
        key, nonce = _RETRY_KEY[version]
    except KeyError:
        raise ValueError(f"unsupported QUIC version 0x{version:08x}") from None
    pseudo = bytes((len(odcid),)) + odcid + retry_without_tag
    return AESGCM(key).encrypt(nonce, b"", pseudo)


def verify_retry_integrity(version: int, odcid: bytes, retry_packet: bytes) -> bool:
    """True if the last 16 bytes of ``retry_packet`` are its valid tag."""
    if len(retry_packet) < _TAG_LEN or version not in _RETRY_KEY:
        return False
    expected = retry_integrity_tag(version, odcid, retry_packet[:-_TAG_LEN])
    return hmac.compare_digest(expected, retry_packet[-_TAG_LEN:])


