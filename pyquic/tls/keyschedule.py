"""The TLS 1.3 key schedule (RFC 8446 §7.1) and cipher-suite parameters.

HKDF runs on ``pyquic._hmac`` (RFC 2104 on ``hashlib`` objects, faster than
``hmac.digest`` for these short messages); this module keeps no state beyond
bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyquic._hmac import hmac_digest
from pyquic.tls.messages import CipherSuite, HandshakeType

#: linux/tls.h TLS_CIPHER_* values the kernel expects in quic_crypto_secret.type.
TLS_CIPHER_AES_GCM_128 = 51
TLS_CIPHER_AES_GCM_256 = 52
TLS_CIPHER_CHACHA20_POLY1305 = 54


@dataclass(frozen=True)
class SuiteInfo:
    """What a cipher suite means for the key schedule and for the kernel."""

    suite: int
    hash_name: str
    hash_len: int
    kernel_cipher: int


SUITES: dict[int, SuiteInfo] = {
    CipherSuite.AES_128_GCM_SHA256: SuiteInfo(0x1301, "sha256", 32, TLS_CIPHER_AES_GCM_128),
    CipherSuite.AES_256_GCM_SHA384: SuiteInfo(0x1302, "sha384", 48, TLS_CIPHER_AES_GCM_256),
    CipherSuite.CHACHA20_POLY1305_SHA256: SuiteInfo(
        0x1303, "sha256", 32, TLS_CIPHER_CHACHA20_POLY1305
    ),
}


_DIGEST_SIZE = {"sha256": 32, "sha384": 48}


def _digest_size(hash_name: str) -> int:
    size = _DIGEST_SIZE.get(hash_name)
    return size if size is not None else hashlib.new(hash_name).digest_size


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2)."""
    if not salt:
        salt = bytes(_digest_size(hash_name))
    return hmac_digest(salt, ikm, hash_name)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3)."""
    block = hmac_digest(prk, info + b"\x01", hash_name)
    if length <= len(block):  # one block: every TLS 1.3 secret, key and IV
        return block[:length]
    out = block
    counter = 2
    while len(out) < length:
        block = hmac_digest(prk, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return out[:length]


def hkdf_expand_label(
    hash_name: str, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """HKDF-Expand-Label (RFC 8446 §7.1); ``label`` excludes the "tls13 " prefix."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context
    return hkdf_expand(hash_name, secret, info, length)


def finished_verify_data(hash_name: str, base_key: bytes, transcript_hash: bytes) -> bytes:
    """verify_data = HMAC(finished_key, Transcript-Hash) (RFC 8446 §4.4.4)."""
    size = _digest_size(hash_name)
    finished_key = hkdf_expand_label(hash_name, base_key, b"finished", b"", size)
    return hmac_digest(finished_key, transcript_hash, hash_name)


#: Hash("") per hash name: a constant of the key schedule (§7.1 "derived")
_EMPTY_HASH: dict[str, bytes] = {}
#: per hash name: (early secret, its "derived" secret) without a PSK, which
#: depend on nothing but the hash (§7.1: HKDF-Extract(0, 0)); computed once
_NO_PSK_EARLY: dict[str, tuple[bytes, bytes]] = {}


def empty_hash(hash_name: str) -> bytes:
    """Hash of the empty string (cached: the same for every connection)."""
    h = _EMPTY_HASH.get(hash_name)
    if h is None:
        h = _EMPTY_HASH[hash_name] = hashlib.new(hash_name).digest()
    return h


class Transcript:
    """Running transcript hash; handles the HelloRetryRequest rewrite (RFC 8446 §4.4.1)."""

    def __init__(self) -> None:
        self._messages: list[bytes] = []
        self._hash: hashlib._Hash | None = None
        self.hash_name: str | None = None

    def set_hash(self, hash_name: str) -> None:
        """Fix the hash once the cipher suite is known and replay what was buffered."""
        self.hash_name = hash_name
        self._hash = hashlib.new(hash_name)
        for m in self._messages:
            self._hash.update(m)
        self._messages = []

    def add(self, message: bytes) -> None:
        if self._hash is None:
            self._messages.append(message)
        else:
            self._hash.update(message)

    def digest(self, extra: bytes = b"") -> bytes:
        """Hash of everything so far (plus ``extra``, not recorded)."""
        assert self._hash is not None, "hash not chosen yet"
        h = self._hash.copy()
        if extra:
            h.update(extra)
        return h.digest()

    def restart_after_hrr(self) -> None:
        """Replace ClientHello1 by message_hash(Hash(ClientHello1)) (§4.4.1)."""
        d = self.digest()
        assert self.hash_name is not None
        self._hash = hashlib.new(self.hash_name)
        self._hash.update(bytes((HandshakeType.MESSAGE_HASH, 0, 0, len(d))) + d)


class KeySchedule:
    """Secrets along the RFC 8446 §7.1 chain for one cipher suite."""

    def __init__(self, suite: int, psk: bytes | None = None) -> None:
        self.info = SUITES[suite]
        h = self.info.hash_name
        self.hash_name = h
        self.hash_len = self.info.hash_len
        self._early_derived: bytes | None = None
        if psk is None:
            pair = _NO_PSK_EARLY.get(h)
            if pair is None:
                zeros = bytes(self.hash_len)
                early = hkdf_extract(h, zeros, zeros)
                derived = hkdf_expand_label(h, early, b"derived", empty_hash(h), self.hash_len)
                pair = _NO_PSK_EARLY[h] = (early, derived)
            self.early_secret, self._early_derived = pair
        else:
            self.early_secret = hkdf_extract(h, bytes(self.hash_len), psk)
        self.handshake_secret = b""
        self.master_secret = b""

    def derive_secret(self, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
        """Derive-Secret(Secret, Label, Messages) with the hash already taken (§7.1)."""
        return hkdf_expand_label(self.hash_name, secret, label, transcript_hash, self.hash_len)

    def _empty_hash(self) -> bytes:
        return empty_hash(self.hash_name)

    def binder_key(self, external: bool) -> bytes:
        label = b"ext binder" if external else b"res binder"
        return self.derive_secret(self.early_secret, label, self._empty_hash())

    def client_early_traffic_secret(self, ch_hash: bytes) -> bytes:
        return self.derive_secret(self.early_secret, b"c e traffic", ch_hash)

    def set_shared_secret(self, ecdhe: bytes) -> None:
        """Advance to the handshake secret (§7.1)."""
        derived = self._early_derived
        if derived is None:
            derived = self.derive_secret(self.early_secret, b"derived", self._empty_hash())
        self.handshake_secret = hkdf_extract(self.hash_name, derived, ecdhe)
        derived2 = self.derive_secret(self.handshake_secret, b"derived", self._empty_hash())
        self.master_secret = hkdf_extract(self.hash_name, derived2, bytes(self.hash_len))

    def handshake_traffic_secrets(self, sh_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) handshake traffic secrets after ClientHello..ServerHello."""
        return (
            self.derive_secret(self.handshake_secret, b"c hs traffic", sh_hash),
            self.derive_secret(self.handshake_secret, b"s hs traffic", sh_hash),
        )

    def application_traffic_secrets(self, sfin_hash: bytes) -> tuple[bytes, bytes]:
        """(client, server) first application secrets after server Finished."""
        return (
            self.derive_secret(self.master_secret, b"c ap traffic", sfin_hash),
            self.derive_secret(self.master_secret, b"s ap traffic", sfin_hash),
        )

    def exporter_master_secret(self, sfin_hash: bytes) -> bytes:
        return self.derive_secret(self.master_secret, b"exp master", sfin_hash)

    def resumption_master_secret(self, cfin_hash: bytes) -> bytes:
        return self.derive_secret(self.master_secret, b"res master", cfin_hash)

    def finished(self, base_key: bytes, transcript_hash: bytes) -> bytes:
        return finished_verify_data(self.hash_name, base_key, transcript_hash)

    def resumption_psk(self, resumption_master: bytes, nonce: bytes) -> bytes:
        """PSK for a ticket (§4.6.1)."""
        return hkdf_expand_label(
            self.hash_name, resumption_master, b"resumption", nonce, self.hash_len
        )
