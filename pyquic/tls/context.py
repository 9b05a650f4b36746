"""Sans-I/O TLS 1.3 client and server state machines for QUIC.

RFC 8446 with RFC 9001's rules: handshake messages are exchanged per QUIC
crypto level instead of records, the transport parameters travel in extension
0x39 as opaque bytes, there is no middlebox-compatibility mode, no
EndOfEarlyData and no KeyUpdate message (RFC 9001 §8.3, §8.4, §6).

Use::

    ctx = TlsContext(TlsConfig(is_client=True, ...), transport_parameters, now=t)
    ctx.start()                               # client: queues the ClientHello
    ctx.receive(level, data)                  # bytes read at a crypto level
    ctx.secrets_to_install()  -> [TrafficSecret]   # install send before receive
    ctx.data_to_send()        -> [(level, message)]
    ctx.handshake_complete, ctx.alpn, ctx.peer_transport_parameters, ...

``transport_parameters`` may also be a callable ``f(peer_params) -> bytes``
that produces our extension 0x39 when it is first needed: on a server, after
the ClientHello is accepted and with the client's parameters, so the QUIC
layer can take the peer's parameters first and answer with its own (a
compatible version upgrade changes ours: RFC 9368 §5, libquic's order over
TRANSPORT_PARAM_EXT); on a client, at the first ClientHello with None.

Levels are the kernel's (pyquic.abi.CryptoLevel): APP 0, INITIAL 1,
HANDSHAKE 2, EARLY 3. Errors raise :class:`TlsAlert` (QUIC error 0x100+alert).
No clocks are read: ``now`` (seconds since the epoch) is passed in.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509 import verification as xv

from pyquic._rand import urandom
from pyquic.tls import x509 as tlsx509
from pyquic.tls.keyschedule import SUITES, KeySchedule, Transcript
from pyquic.tls.messages import (
    HRR_RANDOM,
    QUIC_MAX_EARLY_DATA,
    TLS_VERSION_1_3,
    AlertDescription,
    Certificate,
    CertificateRequest,
    CertificateVerify,
    CipherSuite,
    ClientHello,
    EncryptedExtensions,
    Finished,
    Group,
    HandshakeType,
    NewSessionTicket,
    OfferedPsks,
    PskKeyExchangeMode,
    ServerHello,
    TlsAlert,
    enum_members,
    parse_message,
    split_messages,
    truncate_client_hello,
)
from pyquic.tls.session import SessionTicket, TicketContents, TicketSealer

LEVEL_APP = 0
LEVEL_INITIAL = 1
LEVEL_HANDSHAKE = 2
LEVEL_EARLY = 3

A = AlertDescription
# plain classes of the members: cheaper attribute loads than the Enum classes
HT: Any = enum_members(HandshakeType)

DEFAULT_CIPHER_SUITES: list[int] = [
    CipherSuite.AES_128_GCM_SHA256,
    CipherSuite.AES_256_GCM_SHA384,
    CipherSuite.CHACHA20_POLY1305_SHA256,
]
DEFAULT_GROUPS: list[int] = [Group.X25519, Group.SECP256R1, Group.SECP384R1]

#: Hash of external PSKs (RFC 8446 §4.2.11: SHA-256 unless provisioned otherwise).
EXTERNAL_PSK_HASH = "sha256"

#: Tolerated difference between a ticket's real and claimed age for 0-RTT (§8.3).
MAX_TICKET_AGE_SKEW = 10.0

#: A handshake message larger than this is refused (bounds buffering).
MAX_MESSAGE_SIZE = 1 << 16


@dataclass
class TlsConfig:
    """What one endpoint offers, accepts and authenticates with."""

    is_client: bool
    #: Client: protocols offered; server: protocols in preference order.
    alpn_protocols: list[str] = field(default_factory=list)
    server_name: str | None = None
    cipher_suites: list[int] = field(default_factory=lambda: list(DEFAULT_CIPHER_SUITES))
    #: Client: the first group gets a key share in the first ClientHello.
    groups: list[int] = field(default_factory=lambda: list(DEFAULT_GROUPS))
    signature_algorithms: list[int] = field(
        default_factory=lambda: list(tlsx509.SUPPORTED_SIGNATURE_SCHEMES)
    )
    certificate_chain: list[x509.Certificate] = field(default_factory=list)
    private_key: tlsx509.PrivateKey | None = None
    #: Verify the peer's certificate (client: the server's; server: a client's).
    verify_peer: bool = True
    #: Trust anchors; None loads the system store when first needed.
    trust_store: xv.Store | None = None
    #: Server: 0 no client certificate, 1 request one, 2 require one.
    client_auth: int = 0
    #: Client: external PSK (identity, key). Server: identity -> key.
    psk: tuple[bytes, bytes] | None = None
    psk_keys: dict[bytes, bytes] = field(default_factory=dict)
    #: Client: a saved session to resume.
    session: SessionTicket | None = None
    #: Client: send 0-RTT when the session allows it.
    enable_early_data: bool = True
    #: Server: key for sealing/opening tickets; None disables tickets.
    ticket_key: bytes | None = None
    #: Server: max_early_data in tickets; 0xffffffff for QUIC, 0 disables 0-RTT.
    max_early_data: int = QUIC_MAX_EARLY_DATA
    ticket_lifetime: int = 86400
    #: Receives NSS key-log lines (without newline).
    keylog: Callable[[str], None] | None = None


@dataclass(frozen=True)
class TrafficSecret:
    """A secret to install with QUIC_SOCKOPT_CRYPTO_SECRET."""

    level: int
    send: bool
    cipher: int  # linux/tls.h TLS_CIPHER_*
    secret: bytes


class State(Enum):
    START = auto()
    CLIENT_WAIT_SH = auto()
    CLIENT_WAIT_EE = auto()
    CLIENT_WAIT_CERT_CR = auto()
    CLIENT_WAIT_CERT = auto()
    CLIENT_WAIT_CV = auto()
    CLIENT_WAIT_FINISHED = auto()
    SERVER_WAIT_CH = auto()
    SERVER_WAIT_CERT = auto()
    SERVER_WAIT_CV = auto()
    SERVER_WAIT_FINISHED = auto()
    CONNECTED = auto()
    FAILED = auto()


_S: Any = enum_members(State)


class _KeyShare:
    """An ephemeral (EC)DHE key for one group."""

    def __init__(self, group: int) -> None:
        self.group = group
        self._x: x25519.X25519PrivateKey | None = None
        self._ec: ec.EllipticCurvePrivateKey | None = None
        if group == Group.X25519:
            self._x = x25519.X25519PrivateKey.generate()
        elif group == Group.SECP256R1:
            self._ec = ec.generate_private_key(ec.SECP256R1())
        elif group == Group.SECP384R1:
            self._ec = ec.generate_private_key(ec.SECP384R1())
        else:
            raise ValueError(f"unsupported group {group:#06x}")

    def public(self) -> bytes:
        if self._x is not None:
            return self._x.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        assert self._ec is not None
        return self._ec.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def exchange(self, peer: bytes) -> bytes:
        """The shared secret; illegal_parameter for a bad peer share (RFC 8446 §4.2.8)."""
        try:
            if self._x is not None:
                if len(peer) != 32:
                    raise ValueError("x25519 share must be 32 bytes")
                return self._x.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
            assert self._ec is not None
            # §4.2.8.2: only the uncompressed point form is allowed.
            if not peer or peer[0] != 4:
                raise ValueError("EC share must be an uncompressed point")
            pub = ec.EllipticCurvePublicKey.from_encoded_point(self._ec.curve, peer)
            return self._ec.exchange(ec.ECDH(), pub)
        except ValueError as exc:
            raise TlsAlert(A.illegal_parameter, f"bad key share: {exc}") from exc


def _alpn_bytes(protocols: list[str]) -> list[bytes]:
    return [p.encode() for p in protocols]


class TlsContext:
    """One TLS 1.3 handshake, client or server, for one QUIC connection."""

    def __init__(
        self,
        config: TlsConfig,
        transport_parameters: bytes | Callable[[bytes | None], bytes],
        *,
        now: float = 0.0,
        random: Callable[[int], bytes] = urandom,
    ) -> None:
        self.config = config
        self.is_client = config.is_client
        self._tp_source: Callable[[bytes | None], bytes] | None = None
        if callable(transport_parameters):
            self._tp_source = transport_parameters
            self.transport_parameters = b""
        else:
            self.transport_parameters = bytes(transport_parameters)
        self.now = now
        self._random = random
        self.state = State.START if self.is_client else State.SERVER_WAIT_CH

        # results
        self.handshake_complete = False
        self.alpn: str | None = None
        self.peer_transport_parameters: bytes | None = None
        self.peer_certificates: list[x509.Certificate] = []
        self.cipher_suite: int | None = None
        self.group: int | None = None
        self.early_data_offered = False
        self.early_data_accepted = False
        self.psk_accepted = False
        self.session_resumed = False
        self.hrr_sent = False  # HRR happened (either side)
        self.server_name: str | None = config.server_name
        self.session_ticket: SessionTicket | None = None
        self.alert: TlsAlert | None = None

        # outputs
        self._out: list[tuple[int, bytes]] = []
        self._secrets: list[TrafficSecret] = []

        # internals
        self._buffers: dict[int, bytearray] = {}
        self._transcript = Transcript()
        self._ks: KeySchedule | None = None
        self._key_share: _KeyShare | None = None
        self._client_random = b""
        self._client_hello: ClientHello | None = None
        self._psk: bytes | None = None
        self._psk_external = False
        self._psk_suite: int | None = None  # suite of the offered ticket
        self._psk_hash: str | None = None
        self._c_hs = b""
        self._s_hs = b""
        self._c_ap = b""
        self._s_ap = b""
        self._res_master = b""
        self._cert_request: CertificateRequest | None = None
        self._client_auth_requested = False
        self._peer_scheme_list: list[int] = []
        self._ticket_contents: TicketContents | None = None
        self._sealer = TicketSealer(config.ticket_key) if config.ticket_key else None

    # ------------------------------------------------------------ public API

    def start(self) -> None:
        """Client: produce the first ClientHello."""
        if not self.is_client or self.state is not State.START:
            raise RuntimeError("start() is for a client that has not started")
        self._client_random = self._random(32)
        groups = self.config.groups
        if not groups:
            raise ValueError("no groups configured")
        self._key_share = _KeyShare(groups[0])
        self._send_client_hello(first=True)
        self.state = State.CLIENT_WAIT_SH

    def receive(self, level: int, data: bytes) -> None:
        """Feed handshake bytes read at ``level``; raises TlsAlert on failure."""
        if self.state is State.FAILED:
            raise self.alert or TlsAlert(A.internal_error, "handshake failed")
        buf = self._buffers.setdefault(int(level), bytearray())
        buf += data
        try:
            messages, used = split_messages(buf)
            del buf[:used]
            if len(buf) > MAX_MESSAGE_SIZE:
                raise TlsAlert(A.unexpected_message, "handshake message too large")
            for mtype, message in messages:
                self._handle(int(level), mtype, message)
        except TlsAlert as alert:
            self.state = State.FAILED
            self.alert = alert
            raise

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """Handshake messages produced so far, each with its level, in order."""
        out, self._out = self._out, []
        return out

    def secrets_to_install(self) -> list[TrafficSecret]:
        """New traffic secrets in the order to install them (send before receive)."""
        out, self._secrets = self._secrets, []
        return out

    @property
    def negotiated_cipher(self) -> int | None:
        """linux/tls.h cipher type of the negotiated suite."""
        return SUITES[self.cipher_suite].kernel_cipher if self.cipher_suite else None

    def process_session_ticket(self, message: bytes, now: float) -> SessionTicket:
        """Client: turn a raw NewSessionTicket message into saved session state."""
        mtype, body = parse_message(message)
        if mtype != HT.NEW_SESSION_TICKET:
            raise TlsAlert(A.unexpected_message, "not a NewSessionTicket")
        if not self.is_client or not self.handshake_complete:
            raise TlsAlert(A.unexpected_message, "NewSessionTicket before the handshake ended")
        nst = NewSessionTicket.decode(body)
        assert self._ks is not None and self.cipher_suite is not None
        ticket = SessionTicket(
            ticket=nst.ticket,
            psk=self._ks.resumption_psk(self._res_master, nst.nonce),
            cipher_suite=self.cipher_suite,
            age_add=nst.age_add,
            lifetime=nst.lifetime,
            received_at=now,
            max_early_data=nst.max_early_data or 0,
            alpn=self.alpn,
            server_name=self.server_name,
            peer_transport_parameters=self.peer_transport_parameters or b"",
        )
        self.session_ticket = ticket
        return ticket

    # ------------------------------------------------------------ helpers

    def _emit(self, level: int, message: bytes, transcript: bool = True) -> None:
        if transcript:
            self._transcript.add(message)
        self._out.append((level, message))

    def _install(self, level: int, send: bool, secret: bytes, suite: int | None = None) -> None:
        s = suite if suite is not None else self.cipher_suite
        assert s is not None
        self._secrets.append(TrafficSecret(level, send, SUITES[s].kernel_cipher, secret))

    def _keylog(self, label: str, secret: bytes) -> None:
        if self.config.keylog is not None:
            self.config.keylog(f"{label} {self._client_random.hex()} {secret.hex()}")

    def _handle(self, level: int, mtype: int, message: bytes) -> None:
        body = message[4:]
        st = self.state
        if self.is_client:
            if st is _S.CLIENT_WAIT_SH and mtype == HT.SERVER_HELLO and level == LEVEL_INITIAL:
                self._client_on_server_hello(message, ServerHello.decode(body))
                return
            if level == LEVEL_HANDSHAKE:
                if st is _S.CLIENT_WAIT_EE and mtype == HT.ENCRYPTED_EXTENSIONS:
                    self._client_on_ee(message, EncryptedExtensions.decode(body))
                    return
                if st is _S.CLIENT_WAIT_CERT_CR and mtype == HT.CERTIFICATE_REQUEST:
                    self._client_on_cert_request(message, CertificateRequest.decode(body))
                    return
                if st in (_S.CLIENT_WAIT_CERT_CR, _S.CLIENT_WAIT_CERT) and (
                    mtype == HT.CERTIFICATE
                ):
                    self._on_certificate(message, Certificate.decode(body))
                    return
                if st is _S.CLIENT_WAIT_CV and mtype == HT.CERTIFICATE_VERIFY:
                    self._on_certificate_verify(message, CertificateVerify.decode(body))
                    return
                if st is _S.CLIENT_WAIT_FINISHED and mtype == HT.FINISHED:
                    self._client_on_finished(message, Finished.decode(body))
                    return
            if st is _S.CONNECTED and level == LEVEL_APP and mtype == HT.NEW_SESSION_TICKET:
                self.process_session_ticket(message, self.now)
                return
        else:
            if st is _S.SERVER_WAIT_CH and mtype == HT.CLIENT_HELLO and level == LEVEL_INITIAL:
                self._server_on_client_hello(message, ClientHello.decode(body))
                return
            if level == LEVEL_HANDSHAKE:
                if st is _S.SERVER_WAIT_CERT and mtype == HT.CERTIFICATE:
                    self._on_certificate(message, Certificate.decode(body))
                    return
                if st is _S.SERVER_WAIT_CV and mtype == HT.CERTIFICATE_VERIFY:
                    self._on_certificate_verify(message, CertificateVerify.decode(body))
                    return
                if st is _S.SERVER_WAIT_FINISHED and mtype == HT.FINISHED:
                    self._server_on_finished(message, Finished.decode(body))
                    return
        # RFC 8446 §6.2 / RFC 9001 §4.1.3: wrong type or wrong level.
        raise TlsAlert(A.unexpected_message, f"message {mtype} at level {level} in {st.name}")

    # ------------------------------------------------------------ client

    def _local_transport_parameters(self, peer: bytes | None) -> bytes:
        """Our extension 0x39, fetched from the callable source on first use."""
        if self._tp_source is not None:
            source, self._tp_source = self._tp_source, None
            self.transport_parameters = bytes(source(peer))
        return self.transport_parameters

    def _send_client_hello(self, first: bool, cookie: bytes | None = None) -> None:
        cfg = self.config
        self._local_transport_parameters(None)
        assert self._key_share is not None
        ch = ClientHello(
            random=self._client_random,
            cipher_suites=list(cfg.cipher_suites),
            server_name=cfg.server_name,
            supported_groups=list(cfg.groups),
            signature_algorithms=list(cfg.signature_algorithms),
            key_share=[(self._key_share.group, self._key_share.public())],
            supported_versions=[TLS_VERSION_1_3],
            alpn_protocols=_alpn_bytes(cfg.alpn_protocols) if cfg.alpn_protocols else None,
            quic_transport_parameters=self.transport_parameters,
            cookie=cookie,
            # Always listed: it also tells the server tickets are usable (§4.2.9).
            psk_key_exchange_modes=[PskKeyExchangeMode.PSK_DHE_KE],
        )
        # Choose what PSK to offer: a saved session, else the external PSK.
        identity: bytes | None = None
        age = 0
        if first:
            sess = cfg.session
            if sess is not None and sess.is_valid(self.now) and sess.cipher_suite in cfg.cipher_suites:
                self._psk = sess.psk
                self._psk_external = False
                self._psk_suite = sess.cipher_suite
                self._psk_hash = SUITES[sess.cipher_suite].hash_name
            elif cfg.psk is not None:
                self._psk = cfg.psk[1]
                self._psk_external = True
                self._psk_hash = EXTERNAL_PSK_HASH
        if self._psk is not None:
            if self._psk_external:
                assert cfg.psk is not None
                identity = cfg.psk[0]
            else:
                assert cfg.session is not None
                identity = cfg.session.ticket
                age = cfg.session.obfuscated_age(self.now)
            # 0-RTT only in the first ClientHello (RFC 8446 §4.2.10).
            sess = cfg.session
            if (
                first
                and not self._psk_external
                and sess is not None
                and cfg.enable_early_data
                and sess.max_early_data > 0
                and (sess.alpn is None or sess.alpn in cfg.alpn_protocols or not cfg.alpn_protocols)
            ):
                ch.early_data = True
            assert self._psk_hash is not None
            hlen = hashlib.new(self._psk_hash).digest_size
            ch.pre_shared_key = OfferedPsks([(identity, age)], [bytes(hlen)])
            partial = ch.encode()
            truncated = truncate_client_hello(partial, ch.pre_shared_key)
            ch.pre_shared_key.binders = [self._binder(truncated)]
        message = ch.encode()
        self._client_hello = ch
        self._emit(LEVEL_INITIAL, message)
        if first and ch.early_data:
            assert self._psk_suite is not None
            ks = KeySchedule(self._psk_suite, self._psk)
            secret = ks.client_early_traffic_secret(hashlib.new(self._psk_hash or "", message).digest())
            self.early_data_offered = True
            self._install(LEVEL_EARLY, True, secret, self._psk_suite)
            self._keylog("CLIENT_EARLY_TRAFFIC_SECRET", secret)

    def _binder(self, truncated: bytes) -> bytes:
        """PSK binder over the transcript up to the truncated ClientHello (§4.2.11.2)."""
        assert self._psk is not None and self._psk_hash is not None
        suite = next(s for s, i in SUITES.items() if i.hash_name == self._psk_hash)
        ks = KeySchedule(suite, self._psk)
        if self._transcript.hash_name is not None:
            h = self._transcript.digest(truncated)
        else:
            h = hashlib.new(self._psk_hash, truncated).digest()
        return ks.finished(ks.binder_key(self._psk_external), h)

    def _client_on_server_hello(self, message: bytes, sh: ServerHello) -> None:
        cfg = self.config
        ch = self._client_hello
        assert ch is not None and self._key_share is not None
        # §4.1.3: echo of our (empty) legacy_session_id.
        if sh.legacy_session_id_echo != ch.legacy_session_id:
            raise TlsAlert(A.illegal_parameter, "legacy_session_id_echo mismatch")
        if sh.cipher_suite not in cfg.cipher_suites:
            raise TlsAlert(A.illegal_parameter, "server chose a cipher suite not offered")
        if self.cipher_suite is not None and sh.cipher_suite != self.cipher_suite:
            raise TlsAlert(A.illegal_parameter, "cipher suite changed after HelloRetryRequest")
        if sh.is_hrr:
            if self.hrr_sent:
                raise TlsAlert(A.unexpected_message, "second HelloRetryRequest")  # §4.1.4
            if sh.selected_group is None and sh.cookie is None:
                raise TlsAlert(A.illegal_parameter, "HelloRetryRequest would not change anything")
            group = sh.selected_group
            if group is not None and (group not in cfg.groups or group == self._key_share.group):
                raise TlsAlert(A.illegal_parameter, "HelloRetryRequest selected a bad group")
            self.hrr_sent = True
            self.cipher_suite = sh.cipher_suite
            self._transcript.set_hash(SUITES[sh.cipher_suite].hash_name)
            self._transcript.restart_after_hrr()
            self._transcript.add(message)
            if self._psk_hash is not None and self._psk_hash != SUITES[sh.cipher_suite].hash_name:
                self._psk = None  # the PSK cannot be used with this hash
            if group is not None:
                self._key_share = _KeyShare(group)
            self.early_data_accepted = False
            self._send_client_hello(first=False, cookie=sh.cookie)
            return
        if sh.key_share is None:
            raise TlsAlert(A.missing_extension, "ServerHello without key_share")
        group, peer_share = sh.key_share
        if group != self._key_share.group:
            raise TlsAlert(A.illegal_parameter, "key share for a group we did not send")
        psk: bytes | None = None
        if sh.pre_shared_key is not None:
            if ch.pre_shared_key is None or sh.pre_shared_key != 0:
                raise TlsAlert(A.illegal_parameter, "server selected an unknown PSK")
            if SUITES[sh.cipher_suite].hash_name != self._psk_hash:
                raise TlsAlert(A.illegal_parameter, "cipher suite hash does not match the PSK")
            psk = self._psk
            self.psk_accepted = True
            self.session_resumed = not self._psk_external
        self.cipher_suite = sh.cipher_suite
        self.group = group
        if self._transcript.hash_name is None:
            self._transcript.set_hash(SUITES[sh.cipher_suite].hash_name)
        self._transcript.add(message)
        ks = self._ks = KeySchedule(sh.cipher_suite, psk)
        ks.set_shared_secret(self._key_share.exchange(peer_share))
        self._c_hs, self._s_hs = ks.handshake_traffic_secrets(self._transcript.digest())
        self._install(LEVEL_HANDSHAKE, True, self._c_hs)
        self._install(LEVEL_HANDSHAKE, False, self._s_hs)
        self._keylog("CLIENT_HANDSHAKE_TRAFFIC_SECRET", self._c_hs)
        self._keylog("SERVER_HANDSHAKE_TRAFFIC_SECRET", self._s_hs)
        self.state = State.CLIENT_WAIT_EE

    def _client_on_ee(self, message: bytes, ee: EncryptedExtensions) -> None:
        ch = self._client_hello
        assert ch is not None
        if ee.quic_transport_parameters is None:
            raise TlsAlert(A.missing_extension, "no quic_transport_parameters")  # RFC 9001 §8.2
        if ee.alpn_protocol is not None:
            if ch.alpn_protocols is None:
                raise TlsAlert(A.unsupported_extension, "ALPN not offered")
            if ee.alpn_protocol not in ch.alpn_protocols:
                raise TlsAlert(A.illegal_parameter, "server selected an ALPN not offered")
            self.alpn = ee.alpn_protocol.decode()
        elif ch.alpn_protocols:
            raise TlsAlert(A.no_application_protocol, "server selected no ALPN")  # RFC 9001 §8.1
        if ee.early_data:
            if not ch.early_data or not self.psk_accepted:
                raise TlsAlert(A.unsupported_extension, "early_data not offered")
            self.early_data_accepted = True
        self.peer_transport_parameters = ee.quic_transport_parameters
        self._transcript.add(message)
        self.state = State.CLIENT_WAIT_FINISHED if self.psk_accepted else State.CLIENT_WAIT_CERT_CR

    def _client_on_cert_request(self, message: bytes, req: CertificateRequest) -> None:
        # RFC 8446 §4.3.2: context is empty during the handshake.
        if req.context:
            raise TlsAlert(A.illegal_parameter, "non-empty certificate_request_context")
        self._cert_request = req
        self._transcript.add(message)
        self.state = State.CLIENT_WAIT_CERT

    def _on_certificate(self, message: bytes, cert: Certificate) -> None:
        cfg = self.config
        if cert.context:
            raise TlsAlert(A.illegal_parameter, "non-empty certificate_request_context")
        self._transcript.add(message)
        if not cert.certificates:
            if self.is_client:
                # RFC 8446 §4.4.2.4: a server must send a certificate.
                raise TlsAlert(A.decode_error, "server sent an empty Certificate")
            if cfg.client_auth >= 2:
                raise TlsAlert(A.certificate_required, "client certificate required")
            self.state = State.SERVER_WAIT_FINISHED
            return
        try:
            chain = [tlsx509.parse_certificate(c) for c in cert.certificates]
        except ValueError as exc:
            raise TlsAlert(A.bad_certificate, f"cannot parse certificate: {exc}") from exc
        if cfg.verify_peer:
            store = cfg.trust_store
            if store is None:
                try:
                    store = tlsx509.load_trust_store(None)
                except ValueError as exc:
                    raise TlsAlert(A.unknown_ca, str(exc)) from exc
            when = datetime.datetime.fromtimestamp(self.now, datetime.timezone.utc)
            tlsx509.verify_chain(
                chain, store, now=when, hostname=cfg.server_name if self.is_client else None,
                server=self.is_client,
            )
        self.peer_certificates = chain
        self.state = State.CLIENT_WAIT_CV if self.is_client else State.SERVER_WAIT_CV

    def _on_certificate_verify(self, message: bytes, cv: CertificateVerify) -> None:
        offered = (
            self.config.signature_algorithms if self.is_client else self._peer_scheme_list
        )
        if cv.algorithm not in offered:
            raise TlsAlert(A.illegal_parameter, "signature scheme not offered")  # §4.4.3
        content = tlsx509.signed_content(self.is_client, self._transcript.digest())
        tlsx509.verify_signature(
            self.peer_certificates[0].public_key(), cv.algorithm, content, cv.signature
        )
        self._transcript.add(message)
        self.state = State.CLIENT_WAIT_FINISHED if self.is_client else State.SERVER_WAIT_FINISHED

    def _client_on_finished(self, message: bytes, fin: Finished) -> None:
        ks = self._ks
        assert ks is not None
        expected = ks.finished(self._s_hs, self._transcript.digest())
        if not hmac.compare_digest(expected, fin.verify_data):
            raise TlsAlert(A.decrypt_error, "server Finished does not verify")  # §4.4.4
        self._transcript.add(message)
        self._c_ap, self._s_ap = ks.application_traffic_secrets(self._transcript.digest())
        if self._cert_request is not None:
            self._send_certificate(self._cert_request.signature_algorithms)
        self._emit(LEVEL_HANDSHAKE, Finished(ks.finished(self._c_hs, self._transcript.digest())).encode())
        self._res_master = ks.resumption_master_secret(self._transcript.digest())
        self._install(LEVEL_APP, True, self._c_ap)
        self._install(LEVEL_APP, False, self._s_ap)
        self._keylog("CLIENT_TRAFFIC_SECRET_0", self._c_ap)
        self._keylog("SERVER_TRAFFIC_SECRET_0", self._s_ap)
        self.state = State.CONNECTED
        self.handshake_complete = True

    def _send_certificate(self, peer_schemes: list[int]) -> None:
        """Our Certificate and CertificateVerify (client answering a request, or server)."""
        cfg = self.config
        key = cfg.private_key
        scheme = None
        if key is not None and cfg.certificate_chain:
            for s in tlsx509.signature_schemes_for_key(key):
                if s in peer_schemes:
                    scheme = s
                    break
        if scheme is None or key is None:
            if not self.is_client:
                raise TlsAlert(A.handshake_failure, "no certificate/signature scheme usable")
            self._emit(LEVEL_HANDSHAKE, Certificate(b"", []).encode())  # §4.4.2: empty
            return
        self._emit(
            LEVEL_HANDSHAKE,
            Certificate(
                b"", [tlsx509.certificate_der(c) for c in cfg.certificate_chain]
            ).encode(),
        )
        content = tlsx509.signed_content(not self.is_client, self._transcript.digest())
        self._emit(
            LEVEL_HANDSHAKE,
            CertificateVerify(scheme, tlsx509.sign(key, scheme, content)).encode(),
        )

    # ------------------------------------------------------------ server

    def _server_on_client_hello(self, message: bytes, ch: ClientHello) -> None:
        cfg = self.config
        second = self.hrr_sent
        if ch.supported_versions is None or TLS_VERSION_1_3 not in ch.supported_versions:
            raise TlsAlert(A.protocol_version, "client does not offer TLS 1.3")  # §4.2.1
        if ch.legacy_session_id:
            # RFC 9001 §8.4: no middlebox compatibility mode; PROTOCOL_VIOLATION.
            raise TlsAlert(A.illegal_parameter, "non-empty legacy_session_id", quic_error=0x0A)
        if ch.quic_transport_parameters is None:
            raise TlsAlert(A.missing_extension, "no quic_transport_parameters")  # RFC 9001 §8.2
        if second:
            first = self._client_hello
            assert first is not None
            if ch.early_data:
                raise TlsAlert(A.illegal_parameter, "early_data after HelloRetryRequest")
            if self.cipher_suite not in ch.cipher_suites:
                raise TlsAlert(A.illegal_parameter, "ClientHello changed its cipher suites")
        if ch.pre_shared_key is not None and ch.psk_key_exchange_modes is None:
            raise TlsAlert(A.missing_extension, "pre_shared_key without psk_key_exchange_modes")
        if ch.supported_groups is not None and ch.key_share is None:
            raise TlsAlert(A.missing_extension, "supported_groups without key_share")  # §9.2

        # ALPN (RFC 7301 §3.2, RFC 9001 §8.1): server preference order.
        alpn: str | None = None
        if cfg.alpn_protocols:
            offered = ch.alpn_protocols or []
            for p in cfg.alpn_protocols:
                if p.encode() in offered:
                    alpn = p
                    break
            if alpn is None:
                raise TlsAlert(A.no_application_protocol, "no common application protocol")

        # Cipher suite: server preference.
        suites = [s for s in cfg.cipher_suites if s in ch.cipher_suites]
        if not suites:
            raise TlsAlert(A.handshake_failure, "no common cipher suite")
        suite = self.cipher_suite if second and self.cipher_suite else suites[0]

        # PSK (§4.2.11): first acceptable identity.
        psk: bytes | None = None
        psk_index: int | None = None
        psk_external = False
        ticket: TicketContents | None = None
        modes = ch.psk_key_exchange_modes or []
        dhe = True
        if ch.pre_shared_key is not None and (
            PskKeyExchangeMode.PSK_DHE_KE in modes or PskKeyExchangeMode.PSK_KE in modes
        ):
            for i, (identity, obf_age) in enumerate(ch.pre_shared_key.identities):
                if identity in cfg.psk_keys:
                    cand_hash, cand_psk, ext, tc = EXTERNAL_PSK_HASH, cfg.psk_keys[identity], True, None
                elif self._sealer is not None:
                    tc = self._sealer.open(identity)
                    if tc is None or tc.cipher_suite not in SUITES:
                        continue
                    if self.now - tc.issued_at > cfg.ticket_lifetime:
                        continue
                    cand_hash, cand_psk, ext = SUITES[tc.cipher_suite].hash_name, tc.psk, False
                else:
                    continue
                usable = [s for s in suites if SUITES[s].hash_name == cand_hash]
                if second:
                    usable = [s for s in usable if s == suite]
                if not usable:
                    continue
                if tc is not None and tc.cipher_suite in usable:
                    suite = tc.cipher_suite
                else:
                    suite = usable[0]
                psk, psk_index, psk_external, ticket = cand_psk, i, ext, tc
                self._ticket_age_ok = tc is not None and self._fresh(tc, obf_age)
                break
            if psk is not None:
                dhe = PskKeyExchangeMode.PSK_DHE_KE in modes

        # Key exchange group.
        share: tuple[int, bytes] | None = None
        if dhe:
            offered_shares = dict(ch.key_share or [])
            for g in cfg.groups:
                if g in offered_shares:
                    share = (g, offered_shares[g])
                    break
            if share is None:
                if ch.key_share is None:
                    raise TlsAlert(A.missing_extension, "no key_share")
                client_groups = ch.supported_groups or []
                common = [g for g in cfg.groups if g in client_groups]
                if not common or second:
                    raise TlsAlert(
                        A.illegal_parameter if second else A.handshake_failure,
                        "no common key exchange group",
                    )
                self._send_hrr(message, ch, suite, common[0])
                return
            if second and share[0] != self.group:
                raise TlsAlert(A.illegal_parameter, "key share not for the requested group")

        if psk is None:
            if not cfg.certificate_chain or cfg.private_key is None:
                raise TlsAlert(A.handshake_failure, "no acceptable PSK and no certificate")
            if ch.signature_algorithms is None:
                raise TlsAlert(A.missing_extension, "no signature_algorithms")  # §9.2
            if not any(
                s in ch.signature_algorithms
                for s in tlsx509.signature_schemes_for_key(cfg.private_key)
            ):
                raise TlsAlert(A.handshake_failure, "no common signature scheme")

        # Binder check (§4.2.11.2) before trusting the PSK.
        if psk is not None:
            assert ch.pre_shared_key is not None and psk_index is not None
            self._psk, self._psk_external = psk, psk_external
            self._psk_hash = SUITES[suite].hash_name
            if self._transcript.hash_name is None:
                self._transcript.set_hash(SUITES[suite].hash_name)
            truncated = truncate_client_hello(message, ch.pre_shared_key)
            expected = self._binder(truncated)
            if not hmac.compare_digest(expected, ch.pre_shared_key.binders[psk_index]):
                raise TlsAlert(A.decrypt_error, "PSK binder does not verify")
            self.psk_accepted = True
            self.session_resumed = not psk_external

        self.cipher_suite = suite
        self.alpn = alpn
        self.server_name = ch.server_name
        self._client_hello = ch
        self._client_random = ch.random
        self.peer_transport_parameters = ch.quic_transport_parameters
        # The QUIC layer takes the client's parameters before it gives ours
        # (a compatible version upgrade changes version_information).
        self._local_transport_parameters(ch.quic_transport_parameters)
        if self._transcript.hash_name is None:
            self._transcript.set_hash(SUITES[suite].hash_name)
        self._transcript.add(message)
        ks = self._ks = KeySchedule(suite, psk)

        # 0-RTT acceptance (RFC 8446 §4.2.10, RFC 9001 §4.6.2).
        if ch.early_data:
            self.early_data_offered = True
            if (
                ticket is not None
                and psk_index == 0
                and cfg.max_early_data > 0
                and ticket.max_early_data > 0
                and ticket.cipher_suite == suite
                and ticket.alpn == alpn
                and self._ticket_age_ok
            ):
                self.early_data_accepted = True
                early = ks.client_early_traffic_secret(self._transcript.digest())
                self._install(LEVEL_EARLY, False, early)
                self._keylog("CLIENT_EARLY_TRAFFIC_SECRET", early)

        # ServerHello.
        key_share: tuple[int, bytes] | None = None
        if share is not None:
            mine = _KeyShare(share[0])
            ks.set_shared_secret(mine.exchange(share[1]))
            key_share = (share[0], mine.public())
            self.group = share[0]
        else:
            ks.set_shared_secret(bytes(ks.hash_len))  # psk_ke: no (EC)DHE (§7.1)
        sh = ServerHello(
            random=self._random(32),
            cipher_suite=suite,
            legacy_session_id_echo=ch.legacy_session_id,
            key_share=key_share,
            pre_shared_key=psk_index if psk is not None else None,
        )
        self._emit(LEVEL_INITIAL, sh.encode())
        self._c_hs, self._s_hs = ks.handshake_traffic_secrets(self._transcript.digest())
        self._install(LEVEL_HANDSHAKE, True, self._s_hs)
        self._install(LEVEL_HANDSHAKE, False, self._c_hs)
        self._keylog("CLIENT_HANDSHAKE_TRAFFIC_SECRET", self._c_hs)
        self._keylog("SERVER_HANDSHAKE_TRAFFIC_SECRET", self._s_hs)

        ee = EncryptedExtensions(
            alpn_protocol=alpn.encode() if alpn is not None else None,
            quic_transport_parameters=self.transport_parameters,
            early_data=self.early_data_accepted,
        )
        self._emit(LEVEL_HANDSHAKE, ee.encode())
        if psk is None:
            if cfg.client_auth:
                self._client_auth_requested = True
                self._peer_scheme_list = list(cfg.signature_algorithms)
                self._emit(
                    LEVEL_HANDSHAKE,
                    CertificateRequest(b"", list(cfg.signature_algorithms)).encode(),
                )
            assert ch.signature_algorithms is not None
            self._send_certificate(ch.signature_algorithms)
        self._emit(LEVEL_HANDSHAKE, Finished(ks.finished(self._s_hs, self._transcript.digest())).encode())
        self._c_ap, self._s_ap = ks.application_traffic_secrets(self._transcript.digest())
        self._install(LEVEL_APP, True, self._s_ap)
        self._keylog("SERVER_TRAFFIC_SECRET_0", self._s_ap)
        self._keylog("CLIENT_TRAFFIC_SECRET_0", self._c_ap)
        self.state = State.SERVER_WAIT_CERT if self._client_auth_requested else State.SERVER_WAIT_FINISHED

    _ticket_age_ok = False

    def _fresh(self, tc: TicketContents, obfuscated_age: int) -> bool:
        """0-RTT freshness check on the ticket age (RFC 8446 §8.3)."""
        claimed = ((obfuscated_age - tc.age_add) & 0xFFFFFFFF) / 1000.0
        actual = self.now - tc.issued_at
        return abs(actual - claimed) <= MAX_TICKET_AGE_SKEW

    def _send_hrr(self, message: bytes, ch: ClientHello, suite: int, group: int) -> None:
        """HelloRetryRequest asking for ``group`` (RFC 8446 §4.1.4)."""
        self.hrr_sent = True
        self.cipher_suite = suite
        self.group = group
        self._client_hello = ch
        self._transcript.set_hash(SUITES[suite].hash_name)
        self._transcript.add(message)
        self._transcript.restart_after_hrr()
        hrr = ServerHello(
            random=HRR_RANDOM,
            cipher_suite=suite,
            legacy_session_id_echo=ch.legacy_session_id,
            selected_group=group,
        )
        self._emit(LEVEL_INITIAL, hrr.encode())

    def _server_on_finished(self, message: bytes, fin: Finished) -> None:
        ks = self._ks
        assert ks is not None
        expected = ks.finished(self._c_hs, self._transcript.digest())
        if not hmac.compare_digest(expected, fin.verify_data):
            raise TlsAlert(A.decrypt_error, "client Finished does not verify")  # §4.4.4
        self._transcript.add(message)
        self._res_master = ks.resumption_master_secret(self._transcript.digest())
        self._install(LEVEL_APP, False, self._c_ap)
        self.state = State.CONNECTED
        self.handshake_complete = True
        # libquic sends the ticket once the APP receive key is in; only to a client
        # that listed a PSK mode (RFC 8446 §4.2.9).
        ch = self._client_hello
        if self._sealer is not None and ch is not None and ch.psk_key_exchange_modes:
            self._send_new_session_ticket()

    def _send_new_session_ticket(self) -> None:
        cfg = self.config
        ks = self._ks
        assert ks is not None and self._sealer is not None and self.cipher_suite is not None
        nonce = self._random(8)
        age_add = int.from_bytes(self._random(4), "big")
        contents = TicketContents(
            psk=ks.resumption_psk(self._res_master, nonce),
            cipher_suite=self.cipher_suite,
            age_add=age_add,
            issued_at=self.now,
            max_early_data=cfg.max_early_data,
            alpn=self.alpn,
            server_name=self.server_name,
        )
        nst = NewSessionTicket(
            lifetime=cfg.ticket_lifetime,
            age_add=age_add,
            nonce=nonce,
            ticket=self._sealer.seal(contents, self._random(12)),
            max_early_data=cfg.max_early_data if cfg.max_early_data else None,
        )
        self._emit(LEVEL_APP, nst.encode(), transcript=False)
