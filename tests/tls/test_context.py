"""Client <-> server handshakes of the sans-I/O engine, in memory."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.x509 import verification as xv

from pyquic.tls import x509 as tx
from pyquic.tls.context import TlsConfig
from pyquic.tls.messages import AlertDescription as AD
from pyquic.tls.messages import CipherSuite, Group, TlsAlert

from .harness import NOW, Endpoint, deliver_ticket, handshake, pump

CA_CERT, CA_KEY = tx.generate_certificate("ctx CA", is_ca=True)
STORE = xv.Store([CA_CERT])
LEAF = tx.generate_certificate("server", names=["localhost"], issuer=(CA_CERT, CA_KEY))
CLIENT = tx.generate_certificate("client", names=["client"], issuer=(CA_CERT, CA_KEY))
TICKET_KEY = bytes(range(64))


def client_conf(**kw) -> TlsConfig:
    base = {"is_client": True, "alpn_protocols": ["h3"], "server_name": "localhost", "trust_store": STORE}
    base.update(kw)
    return TlsConfig(**base)


def server_conf(**kw) -> TlsConfig:
    base = {"is_client": False, "alpn_protocols": ["h3"], "certificate_chain": [LEAF[0]],
                "private_key": LEAF[1], "ticket_key": TICKET_KEY}
    base.update(kw)
    return TlsConfig(**base)


def assert_keys_agree(c: Endpoint, s: Endpoint) -> None:
    for level in (2, 0):
        assert c.secret(level, True) == s.secret(level, False)
        assert c.secret(level, False) == s.secret(level, True)
    assert c.ctx.peer_transport_parameters == b"stp"
    assert s.ctx.peer_transport_parameters == b"ctp"


@pytest.mark.parametrize("suite,cipher", [
    (CipherSuite.AES_128_GCM_SHA256, 51),
    (CipherSuite.AES_256_GCM_SHA384, 52),
    (CipherSuite.CHACHA20_POLY1305_SHA256, 54),
])
def test_each_cipher_suite(suite, cipher):
    c, s = handshake(client_conf(cipher_suites=[suite]), server_conf())
    assert c.complete and s.complete
    assert c.ctx.cipher_suite == s.ctx.cipher_suite == suite
    assert {x.cipher for x in c.secrets} == {cipher}
    assert len(c.secret(0, True)) == (48 if suite == CipherSuite.AES_256_GCM_SHA384 else 32)
    assert_keys_agree(c, s)


@pytest.mark.parametrize("group", [Group.X25519, Group.SECP256R1, Group.SECP384R1])
def test_each_group(group):
    c, s = handshake(client_conf(groups=[group]), server_conf())
    assert c.ctx.group == s.ctx.group == group and not c.ctx.hrr_sent
    assert_keys_agree(c, s)


@pytest.mark.parametrize("keytype", ["p256", "p384", "rsa", "ed25519"])
def test_each_signature_key(keytype):
    from .conftest import KEY_MAKERS

    leaf = tx.generate_certificate("server", names=["localhost"], issuer=(CA_CERT, CA_KEY),
                                   key=KEY_MAKERS[keytype]())
    c, _s = handshake(client_conf(), server_conf(certificate_chain=[leaf[0]], private_key=leaf[1]))
    assert c.complete and c.ctx.peer_certificates[0] == leaf[0]


def test_hello_retry_request():
    c, s = handshake(client_conf(groups=[Group.X25519, Group.SECP384R1]),
                     server_conf(groups=[Group.SECP384R1]))
    assert c.ctx.hrr_sent and s.ctx.hrr_sent
    assert c.ctx.group == s.ctx.group == Group.SECP384R1
    assert_keys_agree(c, s)


def test_hrr_impossible_group_fails():
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(groups=[Group.X25519]), server_conf(groups=[Group.SECP384R1]))
    assert ei.value.description == AD.handshake_failure


def test_alpn_server_preference_and_mismatch():
    c, s = handshake(client_conf(alpn_protocols=["a", "b", "c"]),
                     server_conf(alpn_protocols=["c", "b"]))
    assert c.ctx.alpn == s.ctx.alpn == "c"
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(alpn_protocols=["a"]), server_conf(alpn_protocols=["b"]))
    assert ei.value.description == AD.no_application_protocol
    assert ei.value.error_code == 0x100 + 120


def test_external_psk():
    ident, key = b"client1", bytes(range(32))
    c, s = handshake(client_conf(psk=(ident, key), verify_peer=False),
                     server_conf(certificate_chain=[], private_key=None, psk_keys={ident: key}))
    assert c.ctx.psk_accepted and s.ctx.psk_accepted and not c.ctx.session_resumed
    assert c.ctx.peer_certificates == []
    assert_keys_agree(c, s)


def test_external_psk_wrong_key_fails_binder():
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(psk=(b"id", b"\x01" * 32)),
                  server_conf(certificate_chain=[], private_key=None, psk_keys={b"id": b"\x02" * 32}))
    assert ei.value.description == AD.decrypt_error


def test_psk_only_server_without_psk_fails():
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(), server_conf(certificate_chain=[], private_key=None))
    assert ei.value.description == AD.handshake_failure


def _first_session(**skw):
    c, s = handshake(client_conf(), server_conf(**skw))
    return deliver_ticket(c, s)


def test_resumption_with_0rtt_accepted():
    sess = _first_session()
    assert sess.max_early_data == 0xFFFFFFFF and sess.peer_transport_parameters == b"stp"
    c, s = handshake(client_conf(session=sess), server_conf(), now=NOW + 1)
    assert c.ctx.session_resumed and s.ctx.session_resumed
    assert c.ctx.early_data_accepted and s.ctx.early_data_accepted
    assert c.secret(3, True) == s.secret(3, False)
    assert c.ctx.peer_certificates == []  # no certificate in a resumed handshake
    assert_keys_agree(c, s)


def test_resumption_0rtt_rejected_by_server_config():
    sess = _first_session()
    c, s = handshake(client_conf(session=sess), server_conf(max_early_data=0), now=NOW + 1)
    assert c.ctx.session_resumed and c.ctx.early_data_offered
    assert not c.ctx.early_data_accepted and not s.ctx.early_data_accepted
    assert not [x for x in s.secrets if x.level == 3]
    assert_keys_agree(c, s)


def test_0rtt_rejected_when_ticket_too_old_for_freshness():
    sess = _first_session()
    # the client believes the ticket is fresh, the server sees 60 s of skew
    c = Endpoint(client_conf(session=sess), b"ctp", NOW + 1)
    s = Endpoint(server_conf(), b"stp", NOW + 61)
    c.start()
    pump(c, s)
    assert s.ctx.session_resumed and not s.ctx.early_data_accepted


def test_resumption_with_unknown_ticket_falls_back_to_full_handshake():
    sess = _first_session()
    c, s = handshake(client_conf(session=sess), server_conf(ticket_key=b"\x09" * 64))
    assert not c.ctx.session_resumed and not c.ctx.early_data_accepted
    assert c.ctx.peer_certificates  # full handshake with certificate
    assert_keys_agree(c, s)


def test_resumption_after_hrr_drops_early_data():
    sess = _first_session()
    c, s = handshake(client_conf(session=sess, groups=[Group.X25519, Group.SECP256R1]),
                     server_conf(groups=[Group.SECP256R1]), now=NOW + 1)
    assert c.ctx.hrr_sent and c.ctx.session_resumed
    assert not c.ctx.early_data_accepted
    assert_keys_agree(c, s)


def test_session_data_roundtrip():
    from pyquic.tls.session import SessionTicket

    sess = _first_session()
    assert SessionTicket.from_bytes(sess.to_bytes()) == sess
    with pytest.raises(ValueError):
        SessionTicket.from_bytes(b"junk")


def test_client_certificate_requested_and_sent():
    c, s = handshake(
        client_conf(certificate_chain=[CLIENT[0]], private_key=CLIENT[1]),
        server_conf(client_auth=1, trust_store=STORE),
    )
    assert s.ctx.peer_certificates[0] == CLIENT[0]
    assert_keys_agree(c, s)


def test_client_certificate_optional_absent():
    _c, s = handshake(client_conf(), server_conf(client_auth=1, trust_store=STORE))
    assert s.complete and s.ctx.peer_certificates == []


def test_client_certificate_required_absent():
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(), server_conf(client_auth=2, trust_store=STORE))
    assert ei.value.description == AD.certificate_required


def test_client_certificate_untrusted():
    other_ca = tx.generate_certificate("other", is_ca=True)
    rogue = tx.generate_certificate("client", issuer=other_ca)
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(certificate_chain=[rogue[0]], private_key=rogue[1]),
                  server_conf(client_auth=2, trust_store=STORE))
    assert ei.value.description == AD.unknown_ca


def test_bad_server_certs():
    expired = tx.generate_certificate(
        "server", names=["localhost"], issuer=(CA_CERT, CA_KEY),
        not_before=tx.datetime.datetime.fromtimestamp(NOW - 86400 * 10, tx.datetime.timezone.utc),
        not_after=tx.datetime.datetime.fromtimestamp(NOW - 86400, tx.datetime.timezone.utc),
    )
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(), server_conf(certificate_chain=[expired[0]], private_key=expired[1]))
    assert ei.value.description == AD.certificate_expired and "expired" in str(ei.value)

    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(server_name="other.example"), server_conf())
    assert ei.value.description == AD.bad_certificate and "other.example" in str(ei.value)

    selfsigned = tx.generate_certificate("localhost")
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(), server_conf(certificate_chain=[selfsigned[0]],
                                             private_key=selfsigned[1]))
    assert ei.value.description == AD.unknown_ca and "not trusted" in str(ei.value)

    # verification off: the same self-signed certificate is accepted
    c, _ = handshake(client_conf(verify_peer=False),
                     server_conf(certificate_chain=[selfsigned[0]], private_key=selfsigned[1]))
    assert c.complete


def test_wrong_key_for_certificate_fails_verify():
    other = tx.generate_certificate("x")[1]
    with pytest.raises(TlsAlert) as ei:
        handshake(client_conf(), server_conf(private_key=other))
    assert ei.value.description == AD.decrypt_error


def test_tampered_finished_is_decrypt_error():
    c = Endpoint(client_conf(), b"ctp")
    s = Endpoint(server_conf(), b"stp")
    c.start()
    for level, data in c.output():
        s.receive(level, data)
    out = s.output()
    out[-1] = (out[-1][0], out[-1][1][:-1] + bytes([out[-1][1][-1] ^ 1]))
    with pytest.raises(TlsAlert) as ei:
        for level, data in out:
            c.receive(level, data)
    assert ei.value.description == AD.decrypt_error
    # a failed context keeps failing
    with pytest.raises(TlsAlert):
        c.receive(2, b"")


def test_message_at_wrong_level_is_unexpected():
    c = Endpoint(client_conf(), b"ctp")
    s = Endpoint(server_conf(), b"stp")
    c.start()
    (_level, ch), = c.output()
    with pytest.raises(TlsAlert) as ei:
        s.receive(2, ch)
    assert ei.value.description == AD.unexpected_message


def test_byte_at_a_time_delivery():
    c = Endpoint(client_conf(), b"ctp")
    s = Endpoint(server_conf(), b"stp")
    c.start()
    for _ in range(10):
        moved = False
        for src, dst in ((c, s), (s, c)):
            for level, data in src.output():
                for i in range(len(data)):
                    dst.receive(level, data[i : i + 1])
                moved = True
        if not moved:
            break
    assert c.complete and s.complete


def test_keylog_lines():
    lines: list[str] = []
    c, s = handshake(client_conf(keylog=lines.append), server_conf())
    rnd = c.ctx._client_random.hex()
    got = {ln.split()[0]: ln.split() for ln in lines}
    assert set(got) == {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                        "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"}
    assert all(v[1] == rnd for v in got.values())
    assert got["SERVER_TRAFFIC_SECRET_0"][2] == c.secret(0, False).hex()
    # early secret is logged on 0-RTT
    sess = deliver_ticket(c, s)
    lines.clear()
    handshake(client_conf(keylog=lines.append, session=sess), server_conf(), now=NOW + 1)
    assert any(ln.startswith("CLIENT_EARLY_TRAFFIC_SECRET ") for ln in lines)


def test_config_is_plain_dataclass():
    assert dataclasses.is_dataclass(TlsConfig)


def test_legacy_session_id_is_protocol_violation():
    from pyquic.tls.messages import ClientHello

    c = Endpoint(client_conf(), b"ctp")
    s = Endpoint(server_conf(), b"stp")
    c.start()
    ((_lvl, msg),) = c.output()
    ch = ClientHello.decode(msg[4:])
    ch.legacy_session_id = b"x" * 32
    with pytest.raises(TlsAlert) as ei:
        s.receive(1, ch.encode())
    assert ei.value.error_code == 0x0A


def test_key_update_message_is_unexpected():
    c, _s = handshake(client_conf(), server_conf())
    with pytest.raises(TlsAlert) as ei:
        c.receive(0, bytes([24, 0, 0, 1, 0]))  # RFC 9001 §6: no TLS KeyUpdate
    assert ei.value.description == AD.unexpected_message


def test_server_transport_parameters_from_callable_after_client_hello():
    """A callable source is asked for the server's parameters with the client's,
    once, after the ClientHello is accepted (libquic's order on a server)."""
    calls: list[bytes | None] = []

    def source(peer: bytes | None) -> bytes:
        calls.append(peer)
        return b"upgraded-" + (peer or b"")

    c = Endpoint(client_conf(), b"client-tp")
    s = Endpoint(server_conf(), source)  # type: ignore[arg-type]
    c.start()
    assert calls == []  # nothing asked before the ClientHello
    pump(c, s)
    assert calls == [b"client-tp"]
    assert c.ctx.peer_transport_parameters == b"upgraded-client-tp"
    assert s.ctx.transport_parameters == b"upgraded-client-tp"
    assert c.complete and s.complete


def test_server_transport_parameters_callable_not_called_for_hrr():
    """With a HelloRetryRequest the source is asked only for the second ClientHello."""
    calls: list[bytes | None] = []

    def source(peer: bytes | None) -> bytes:
        calls.append(peer)
        return b"stp"

    c = Endpoint(client_conf(groups=[Group.SECP256R1, Group.X25519]), b"ctp")
    # the client's first key share is P-256; a server that only takes X25519 asks again
    s = Endpoint(server_conf(groups=[Group.X25519]), source)  # type: ignore[arg-type]
    c.start()
    pump(c, s)
    assert s.ctx.hrr_sent and c.complete
    assert calls == [b"ctp"]
    assert c.ctx.peer_transport_parameters == b"stp"


def test_client_transport_parameters_from_callable():
    calls: list[bytes | None] = []

    def source(peer: bytes | None) -> bytes:
        calls.append(peer)
        return b"ctp-late"

    c = Endpoint(client_conf(), source)  # type: ignore[arg-type]
    s = Endpoint(server_conf(), b"stp")
    c.start()
    pump(c, s)
    assert calls == [None]
    assert s.ctx.peer_transport_parameters == b"ctp-late"
