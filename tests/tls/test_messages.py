"""Codec round trips and malformed input rejected with the right alert."""

from __future__ import annotations

import pytest

from pyquic.tls.messages import (
    HRR_RANDOM,
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    Finished,
    HandshakeType,
    NewSessionTicket,
    OfferedPsks,
    ServerHello,
    TlsAlert,
    decode_alpn,
    decode_server_name,
    encode_server_name,
    handshake_message,
    parse_message,
    split_messages,
    truncate_client_hello,
)
from pyquic.tls.messages import (
    AlertDescription as AD,
)


def body(msg: bytes) -> bytes:
    return parse_message(msg)[1]


def alert_of(fn, *args) -> int:
    with pytest.raises(TlsAlert) as ei:
        fn(*args)
    return ei.value.description


def full_ch(**kw) -> ClientHello:
    base = {
        "random": bytes(range(32)), "cipher_suites": [0x1301, 0x1303], "server_name": "example.com",
        "supported_groups": [0x1D, 0x17], "signature_algorithms": [0x0403, 0x0804],
        "key_share": [(0x1D, b"k" * 32)], "supported_versions": [0x0304],
        "psk_key_exchange_modes": [1], "alpn_protocols": [b"h3", b"smb"],
        "quic_transport_parameters": b"\x01\x02\x03", "early_data": True, "cookie": b"c",
        "pre_shared_key": OfferedPsks([(b"ticket", 1234)], [b"b" * 32]),
    }
    base.update(kw)
    return ClientHello(**base)


def test_client_hello_roundtrip():
    ch = full_ch()
    msg = ch.encode()
    assert msg[0] == HandshakeType.CLIENT_HELLO
    assert ClientHello.decode(body(msg)) == ch
    # legacy_session_id is empty (RFC 9001 §8.4)
    assert msg[4 + 2 + 32] == 0


def test_truncated_client_hello_ends_before_binders():
    ch = full_ch()
    msg = ch.encode()
    t = truncate_client_hello(msg, ch.pre_shared_key)
    assert msg.startswith(t) and len(msg) - len(t) == 2 + 1 + 32


@pytest.mark.parametrize("cut", [1, 10, 40, 60])
def test_client_hello_truncated_is_decode_error(cut):
    b = body(full_ch().encode())
    assert alert_of(ClientHello.decode, b[:-cut]) == AD.decode_error


def test_client_hello_trailing_bytes_is_decode_error():
    assert alert_of(ClientHello.decode, body(full_ch().encode()) + b"\x00") == AD.decode_error


def test_client_hello_bad_compression_is_illegal_parameter():
    ch = full_ch(pre_shared_key=None)
    b = bytearray(body(ch.encode()))
    pos = 2 + 32 + 1 + 2 + 4  # version, random, sid len, suites len, suites
    assert b[pos : pos + 2] == b"\x01\x00"
    b[pos + 1] = 1
    assert alert_of(ClientHello.decode, bytes(b)) == AD.illegal_parameter


def test_client_hello_duplicate_extension_is_illegal_parameter():
    ch = full_ch(pre_shared_key=None, other_extensions=[(0xFF00, b""), (0xFF00, b"")])
    assert alert_of(ClientHello.decode, body(ch.encode())) == AD.illegal_parameter


def test_pre_shared_key_not_last_is_illegal_parameter():
    ch = full_ch(pre_shared_key=None)
    psk = OfferedPsks([(b"t", 0)], [b"b" * 32]).encode()
    ch.other_extensions = [(41, psk), (0xFF01, b"")]
    assert alert_of(ClientHello.decode, body(ch.encode())) == AD.illegal_parameter


def test_psk_binder_count_mismatch_is_illegal_parameter():
    psk = OfferedPsks([(b"t", 0), (b"u", 0)], [b"b" * 32])
    assert alert_of(OfferedPsks.decode, psk.encode()) == AD.illegal_parameter


def test_duplicate_key_share_group_is_illegal_parameter():
    ch = full_ch(key_share=[(0x1D, b"a" * 32), (0x1D, b"b" * 32)], pre_shared_key=None)
    assert alert_of(ClientHello.decode, body(ch.encode())) == AD.illegal_parameter


def test_empty_alpn_name_is_decode_error():
    assert alert_of(decode_alpn, b"\x00\x04\x02h3") == AD.decode_error  # truncated
    assert alert_of(decode_alpn, b"\x00\x01\x00") == AD.decode_error  # list too short
    assert alert_of(decode_alpn, b"\x00\x03\x00\x01x") == AD.decode_error  # empty name


def test_server_name():
    assert decode_server_name(encode_server_name("a.example")) == "a.example"
    assert alert_of(decode_server_name, b"\x00\x04\x01\x00\x01x") == AD.illegal_parameter


def test_server_hello_roundtrip_and_hrr():
    sh = ServerHello(random=b"r" * 32, cipher_suite=0x1302, key_share=(0x17, b"\x04" + b"p" * 64),
                     pre_shared_key=0)
    assert ServerHello.decode(body(sh.encode())) == sh
    hrr = ServerHello(random=HRR_RANDOM, cipher_suite=0x1301, selected_group=0x18, cookie=b"ck")
    d = ServerHello.decode(body(hrr.encode()))
    assert d.is_hrr and d.selected_group == 0x18 and d.cookie == b"ck" and d.key_share is None


def test_server_hello_without_tls13_is_protocol_version():
    sh = ServerHello(random=b"r" * 32, cipher_suite=0x1301, supported_version=None,
                     key_share=(0x1D, b"k" * 32))
    assert alert_of(ServerHello.decode, body(sh.encode())) == AD.protocol_version


def test_server_hello_foreign_extension_is_unsupported_extension():
    sh = ServerHello(random=b"r" * 32, cipher_suite=0x1301, key_share=(0x1D, b"k" * 32),
                     other_extensions=[(16, b"\x00\x03\x02h3")])
    assert alert_of(ServerHello.decode, body(sh.encode())) == AD.unsupported_extension


def test_server_hello_bad_compression_is_illegal_parameter():
    b = bytearray(body(ServerHello(random=b"r" * 32, cipher_suite=0x1301,
                                   key_share=(0x1D, b"k" * 32)).encode()))
    b[2 + 32 + 1 + 2] = 1
    assert alert_of(ServerHello.decode, bytes(b)) == AD.illegal_parameter


def test_encrypted_extensions():
    ee = EncryptedExtensions(alpn_protocol=b"h3", quic_transport_parameters=b"tp", early_data=True)
    assert EncryptedExtensions.decode(body(ee.encode())) == ee
    bad = EncryptedExtensions(other_extensions=[(51, b"\x00\x1d\x00\x01k")])
    assert alert_of(EncryptedExtensions.decode, body(bad.encode())) == AD.illegal_parameter
    two = EncryptedExtensions(other_extensions=[(16, b"\x00\x07\x02h3\x03smb")])
    assert alert_of(EncryptedExtensions.decode, body(two.encode())) == AD.illegal_parameter


def test_certificate_messages():
    c = Certificate(b"", [b"der1", b"der2"])
    assert Certificate.decode(body(c.encode())) == c
    assert alert_of(Certificate.decode, body(c.encode())[:-3]) == AD.decode_error
    cr = CertificateRequest(b"", [0x0403])
    assert CertificateRequest.decode(body(cr.encode())) == cr
    no_sigalgs = handshake_message(13, b"\x00\x00\x00")
    assert alert_of(CertificateRequest.decode, body(no_sigalgs)) == AD.missing_extension
    cv = CertificateVerify(0x0403, b"sig")
    assert CertificateVerify.decode(body(cv.encode())) == cv
    assert alert_of(CertificateVerify.decode, b"\x04\x03\x00\x05ab") == AD.decode_error
    assert Finished.decode(body(Finished(b"v" * 32).encode())).verify_data == b"v" * 32


def test_new_session_ticket():
    nst = NewSessionTicket(3600, 77, b"\x00\x01", b"T" * 40, 0xFFFFFFFF)
    assert NewSessionTicket.decode(body(nst.encode())) == nst
    long = NewSessionTicket(604801, 0, b"", b"T")
    assert alert_of(NewSessionTicket.decode, body(long.encode())) == AD.illegal_parameter
    empty_ticket = NewSessionTicket(1, 0, b"", b"")
    assert alert_of(NewSessionTicket.decode, body(empty_ticket.encode())) == AD.decode_error


def test_split_messages_keeps_partial_tail():
    a = handshake_message(20, b"x" * 5)
    b = handshake_message(20, b"y" * 7)
    msgs, used = split_messages(a + b[:6])
    assert msgs == [(20, a)] and used == len(a)
    assert alert_of(parse_message, a[:-1]) == AD.decode_error


def test_alert_error_code():
    e = TlsAlert(AD.missing_extension, "x")
    assert e.error_code == 0x100 + 109 and "missing_extension" in str(e)


@pytest.mark.parametrize("count", [0, 1, 3, 32, 40])
def test_reader_uint16_list_and_vectors(count):
    from pyquic.tls.messages import Reader

    values = [(i * 0x0101 + 7) & 0xFFFF for i in range(count)]
    body = b"".join(v.to_bytes(2, "big") for v in values)
    r = Reader(len(body).to_bytes(2, "big") + body + b"\x00\x02ab")
    assert r.uint_list(2, 2) == values
    assert r.vec(2, 2) == b"ab"
    r.done()
    with pytest.raises(TlsAlert):  # odd length
        Reader(b"\x00\x03abc").uint_list(2, 2)
    with pytest.raises(TlsAlert):  # shorter than min_len
        Reader(b"\x00\x00").uint_list(2, 2, 2)
    with pytest.raises(TlsAlert):  # the length runs past the end
        Reader(b"\x00\x04ab").vec(2)
    with pytest.raises(TlsAlert):  # no room for the length itself
        Reader(b"\x00").sub(2)
    sub = Reader(b"\x00\x02xyz").sub(2)
    assert sub.raw(2) == b"xy" and sub.eof()
