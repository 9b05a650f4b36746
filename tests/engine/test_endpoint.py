"""Tests for pyquic/engine/endpoint.py: tokens and stateless answers."""

from __future__ import annotations

import random

from pyquic.engine import endpoint as ep
from pyquic.engine.connection import QuicConnection
from pyquic.engine.crypto import initial_keys
from pyquic.engine.errors import INVALID_TOKEN
from pyquic.engine.frame import ConnectionCloseFrame, parse_frames
from pyquic.engine.packet import (
    VERSION_1,
    VERSION_2,
    PacketType,
    parse_header,
    parse_version_negotiation,
    unprotect,
    verify_retry,
)

KEY = bytes(range(32))
ADDR = ("127.0.0.1", 5555)


def _rand(seed: int = 3):
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def test_token_roundtrip_and_binding() -> None:
    t = ep.make_token(KEY, ep.TOKEN_RETRY, ADDR, 100.0, b"\x01" * 8)
    assert ep.open_token(KEY, t, ADDR, 101.0) == (ep.TOKEN_RETRY, b"\x01" * 8)
    # Retry tokens are bound to host and port, and expire quickly
    assert ep.open_token(KEY, t, ("127.0.0.1", 5556), 101.0) is None
    assert ep.open_token(KEY, t, ("127.0.0.2", 5555), 101.0) is None
    assert ep.open_token(KEY, t, ADDR, 100.0 + ep.RETRY_TOKEN_LIFETIME + 1) is None
    assert ep.open_token(bytes(32), t, ADDR, 101.0) is None  # another server key
    bad = bytearray(t)
    bad[-1] ^= 1
    assert ep.open_token(KEY, bytes(bad), ADDR, 101.0) is None
    assert len(t) <= 120  # fits the kernel's TOKEN option limit


def test_new_token_bound_to_host_only() -> None:
    t = ep.make_token(KEY, ep.TOKEN_NEW, ADDR, 100.0)
    assert ep.open_token(KEY, t, ("127.0.0.1", 9999), 5000.0) == (ep.TOKEN_NEW, b"")
    assert ep.open_token(KEY, t, ("127.0.0.9", 5555), 101.0) is None
    assert ep.open_token(KEY, t, ADDR, 100.0 + ep.NEW_TOKEN_LIFETIME + 1) is None


def test_reset_token_derivation() -> None:
    a = ep.reset_token(KEY, b"abcdefgh")
    assert len(a) == 16 and a == ep.reset_token(KEY, b"abcdefgh")
    assert a != ep.reset_token(KEY, b"abcdefgi")
    assert a != ep.reset_token(bytes(32), b"abcdefgh")


def _client_initial(version: int = VERSION_1, token: bytes = b"") -> tuple[QuicConnection, bytes]:
    c = QuicConnection(True, random=_rand(11))
    if version != VERSION_1:
        c.version = version
        c.cfg_version = version
    if token:
        c.set_token(token)
    c.connect(("127.0.0.1", 4433), ADDR, 0.0)
    from pyquic.abi import CryptoLevel

    c.send_handshake(CryptoLevel.INITIAL, b"\x01\x00\x00\x04ping")
    (d, _), = c.datagrams_to_send(0.0)
    return c, d


def _listener(validate: bool) -> QuicConnection:
    lst = QuicConnection(False, random=_rand(5))
    lst.listen()
    lst.validate_peer_address = int(validate)
    return lst


def test_accept_without_validation() -> None:
    _c, d = _client_initial()
    dec = ep.stateless_response(d, ADDR, None, 0.0, _listener(False))
    assert dec.accept and dec.response is None


def test_retry_sent_and_verifiable() -> None:
    c, d = _client_initial()
    lst = _listener(True)
    dec = ep.stateless_response(d, ADDR, None, 0.0, lst, random=_rand(1))
    assert not dec.accept and dec.response is not None
    h = parse_header(dec.response, 0)
    assert h.packet_type == PacketType.RETRY
    assert h.dcid == c.scid and h.scid != c.dcid
    assert verify_retry(VERSION_1, c.orig_dcid, dec.response, h)
    assert ep.open_token(lst.static_key, h.token, ADDR, 1.0) == (ep.TOKEN_RETRY, c.orig_dcid)
    # a different listener (other key) cannot open it
    assert ep.open_token(bytes(32), h.token, ADDR, 1.0) is None


def test_retry_v2_integrity_tag() -> None:
    c, d = _client_initial(VERSION_2)
    dec = ep.stateless_response(d, ADDR, None, 0.0, _listener(True))
    assert dec.response is not None
    h = parse_header(dec.response, 0)
    assert h.version == VERSION_2 and h.packet_type == PacketType.RETRY
    assert verify_retry(VERSION_2, c.orig_dcid, dec.response, h)
    assert not verify_retry(VERSION_1, c.orig_dcid, dec.response, h)


def test_invalid_retry_token_closes_with_invalid_token() -> None:
    lst = _listener(True)
    forged = bytes((ep.TOKEN_RETRY,)) + bytes(60)
    c, d = _client_initial(token=forged)
    dec = ep.stateless_response(d, ADDR, None, 0.0, lst)
    assert not dec.accept and dec.response is not None
    h = parse_header(dec.response, 0)
    assert h.packet_type == PacketType.INITIAL and h.dcid == c.scid
    _send, recv = initial_keys(VERSION_1, c.dcid, True)
    _first, _pn, payload = unprotect(recv, dec.response, h, -1)
    frames = parse_frames(payload, int(PacketType.INITIAL))
    assert isinstance(frames[0], ConnectionCloseFrame) and frames[0].error_code == INVALID_TOKEN


def test_invalid_new_token_gets_retry_and_valid_token_accepted() -> None:
    lst = _listener(True)
    stale = ep.make_token(lst.static_key, ep.TOKEN_NEW, ("10.0.0.1", 1), 0.0)
    _c, d = _client_initial(token=stale)
    dec = ep.stateless_response(d, ADDR, None, 0.0, lst)
    assert dec.response is not None
    assert parse_header(dec.response, 0).packet_type == PacketType.RETRY
    good = ep.make_token(lst.static_key, ep.TOKEN_NEW, ("127.0.0.1", 1), 0.0)
    _c, d = _client_initial(token=good)
    dec = ep.stateless_response(d, ADDR, None, 0.0, lst)
    assert dec.accept and dec.response is None


def test_version_negotiation_for_unknown_version() -> None:
    _c, d = _client_initial()
    unknown = bytearray(d)
    unknown[1:5] = (0x1A2A3A4A).to_bytes(4, "big")
    dec = ep.stateless_response(bytes(unknown), ADDR, None, 0.0, _listener(False))
    assert not dec.accept and dec.response is not None
    h = parse_header(d, 0)
    dcid, scid, versions = parse_version_negotiation(dec.response)
    assert dcid == h.scid and scid == h.dcid
    assert VERSION_1 in versions and VERSION_2 in versions
    # never answer a small datagram or a Version Negotiation packet
    assert ep.stateless_response(bytes(unknown[:600]), ADDR, None, 0.0, None).response is None
    assert ep.stateless_response(dec.response, ADDR, None, 0.0, None).response is None


def test_stateless_reset_for_short_header() -> None:
    lst = _listener(False)
    cid = b"12345678"
    pkt = b"\x40" + cid + bytes(60)
    dec = ep.stateless_response(pkt, ADDR, None, 0.0, lst)
    assert not dec.accept and dec.response is not None
    r = dec.response
    assert len(r) < len(pkt) and len(r) >= 21 and not r[0] & 0x80 and r[0] & 0x40
    assert r[-16:] == ep.reset_token(lst.static_key, cid)
    # too small to answer without looping (RFC 9000 §10.3.3)
    assert ep.stateless_response(pkt[:21], ADDR, None, 0.0, lst).response is None


def test_refuse_response_closes_with_connection_refused() -> None:
    from pyquic.engine.errors import CONNECTION_REFUSED

    c, d = _client_initial()
    r = ep.refuse_response(d)
    assert r is not None
    h = parse_header(r, 0)
    assert h.packet_type == PacketType.INITIAL and h.dcid == c.scid
    _send, recv = initial_keys(VERSION_1, c.dcid, True)
    _first, _pn, payload = unprotect(recv, r, h, -1)
    f = parse_frames(payload, int(PacketType.INITIAL))[0]
    assert isinstance(f, ConnectionCloseFrame) and f.error_code == CONNECTION_REFUSED
    # the client takes it as a refusal
    c.receive_datagram(r, ("127.0.0.1", 4433), ADDR, 0.01)
    assert c.is_closed
    assert ep.refuse_response(b"\x40" + bytes(40)) is None
