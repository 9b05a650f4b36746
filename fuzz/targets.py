"""Fuzz targets: one function per parser that reads network input.

Each target takes arbitrary bytes and feeds them to one parser.  A target
returns normally when the parser accepted the input or rejected it with one
of the engine's own protocol errors (``ALLOWED``); anything else escaping a
target (IndexError, TypeError, struct.error, an AssertionError from a
property check, ...) is a crash.  The same targets serve the short
hypothesis tests in tests/robust and the long runs of fuzz/run.py.

Properties checked besides "no foreign exception":

- ``frames``: whatever parses re-encodes to bytes that parse to equal frames.
- ``transport_params``: decode(encode(p)) == p for every accepted input.
- ``packet_mutation``: a protected packet with any bit flipped never
  decrypts (AEAD + header protection, RFC 9001 §5): corrupted input must
  never yield a payload.
- ``retry``: a Retry with any byte changed fails its integrity check.
- ``receive_datagram_*``: QuicConnection.receive_datagram raises nothing at
  all (it drops the datagram or closes the connection).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pyquic.engine import frame as fr
from pyquic.engine import packet as pk
from pyquic.engine.common import BufferReadError
from pyquic.engine.crypto import VERSION_1, VERSION_2, PacketKey, initial_keys
from pyquic.engine.errors import CryptoError, QuicError
from pyquic.engine.transport_param import TransportParameters
from pyquic.tls import messages as tm
from pyquic.tls.messages import TlsAlert

__all__ = ["ALLOWED", "TARGETS", "run_one"]

#: The engine's own protocol errors: a parser may reject input with these.
ALLOWED: tuple[type[BaseException], ...] = (
    QuicError, pk.PacketError, CryptoError, BufferReadError, TlsAlert,
)

_PTYPES = (pk.PacketType.INITIAL, pk.PacketType.ZERO_RTT, pk.PacketType.HANDSHAKE,
           pk.PacketType.ONE_RTT)
_CIPHERS = (51, 52, 53, 54)


def _take(data: bytes, n: int, pos: int) -> tuple[bytes, int]:
    chunk = data[pos:pos + n]
    return chunk + bytes(n - len(chunk)), pos + n


# ------------------------------------------------------------------ packets
def fuzz_header(data: bytes) -> None:
    """parse_header over a whole (maybe coalesced) datagram, then VN parsing."""
    if not data:
        return
    dcid_len = data[0] % 21
    buf = data[1:]
    off = 0
    for _ in range(64):  # bounded walk over coalesced packets
        if off >= len(buf):
            break
        try:
            h = pk.parse_header(buf, off, dcid_len, allow_zero_fixed_bit=bool(data[0] & 0x80))
        except pk.PacketError:
            break
        assert off <= h.pn_offset <= h.packet_end <= len(buf), "header offsets out of bounds"
        if h.packet_end <= off or not h.is_long:
            break
        off = h.packet_end
    try:
        pk.parse_version_negotiation(buf)
    except pk.PacketError:
        pass
    pk.is_stateless_reset(buf, {buf[-16:]})
    pk.stateless_reset_token_of(buf)


def fuzz_unprotect(data: bytes) -> None:
    """Header-protection removal and AEAD with a key drawn from the input."""
    if len(data) < 3:
        return
    cipher = _CIPHERS[data[0] & 3]
    version = VERSION_2 if data[0] & 4 else VERSION_1
    hlen = 48 if cipher == 52 else 32
    secret, pos = _take(data, hlen, 1)
    largest = data[pos] if pos < len(data) else 0
    buf = data[pos + 1:]
    key = PacketKey(cipher, secret, version)
    try:
        h = pk.parse_header(buf, 0, 8)
    except pk.PacketError:
        return
    if h.packet_type not in _PTYPES:
        return
    pk.unprotect(key, buf, h, largest - 1)


@lru_cache(maxsize=1)
def _fixed_keys() -> tuple[PacketKey, PacketKey]:
    send, _recv = initial_keys(VERSION_1, b"\x83\x94\xc8\xf0\x3e\x51\x57\x08", True)
    app = PacketKey(54, bytes(range(32)), VERSION_1)
    return send, app


def fuzz_packet_mutation(data: bytes) -> None:
    """Build a valid packet from the input, flip bits, demand that it never decrypts."""
    if len(data) < 4:
        return
    init_key, app_key = _fixed_keys()
    rng = random.Random(data[:4])
    long = bool(data[0] & 1)
    payload = data[4:4 + 300] or b"\x01"
    pn = int.from_bytes(data[1:4], "big")
    pn_len = (data[0] >> 1 & 3) + 1
    payload = payload + bytes(max(0, pk.min_payload_len(pn_len) - len(payload)))
    if long:
        key = init_key
        hdr = pk.encode_long_header(pk.PacketType.INITIAL, VERSION_1, b"\x11" * 8, b"\x22" * 8,
                                    pn, pn_len, len(payload), token=data[4:8])
    else:
        key = app_key
        hdr = pk.encode_short_header(b"\x33" * 8, pn, pn_len, key_phase=data[0] >> 3 & 1)
    pkt = bytearray(pk.protect(key, hdr, payload, pn))
    # sanity: the untouched packet round-trips
    h = pk.parse_header(bytes(pkt), 0, 8)
    _first, got_pn, got = pk.unprotect(key, bytes(pkt), h, pn - 1)
    assert got == payload and got_pn == pn, "clean packet did not round-trip"
    nflips = 1 + (data[0] >> 4) % 4
    for _ in range(nflips):
        bit = rng.randrange(len(pkt) * 8)
        pkt[bit >> 3] ^= 1 << (bit & 7)
    bad = bytes(pkt)
    if bad == pk.protect(key, hdr, payload, pn):
        return  # flips cancelled out
    try:
        h2 = pk.parse_header(bad, 0, 8)
        if h2.packet_type not in _PTYPES:
            return
        _f, pn2, plain = pk.unprotect(key, bad, h2, pn - 1)
    except (pk.PacketError, CryptoError, QuicError):
        return
    # Only acceptable if the flips were outside the protected packet (trailing bytes).
    assert h2.packet_end < len(bad) and plain == payload and pn2 == pn, \
        "a corrupted packet decrypted to a payload"


def fuzz_retry(data: bytes) -> None:
    """Retry: parse arbitrary bytes; a valid Retry with any byte changed must fail."""
    if len(data) < 2:
        return
    version = VERSION_2 if data[0] & 1 else VERSION_1
    odcid = data[1:1 + data[0] % 21]
    try:
        h = pk.parse_header(data, 0, 8)
        if h.packet_type == pk.PacketType.RETRY:
            pk.verify_retry(h.version, odcid, data, h)
    except pk.PacketError:
        pass
    token = data[2:2 + 64]
    good = pk.build_retry(version, b"\x01" * 8, b"\x02" * 8, odcid, token)
    h = pk.parse_header(good, 0, 8)
    assert h.packet_type == pk.PacketType.RETRY and pk.verify_retry(version, odcid, good, h)
    i = data[1] % len(good)
    bad = bytearray(good)
    bad[i] ^= 1 << (data[0] >> 5 & 7)
    try:
        h = pk.parse_header(bytes(bad), 0, 8)
    except pk.PacketError:
        return
    if h.packet_type == pk.PacketType.RETRY:
        assert not pk.verify_retry(h.version, odcid, bytes(bad), h), "mutated Retry verified"


def fuzz_version_negotiation(data: bytes) -> None:
    """Version Negotiation: arbitrary bytes, and a real VN list with a random tail."""
    try:
        pk.parse_version_negotiation(data)
    except pk.PacketError:
        pass
    if not data:
        return
    versions = [int.from_bytes(data[i:i + 4].ljust(4, b"\0"), "big") for i in range(0, 16, 4)]
    vn = pk.build_version_negotiation(data[:data[0] % 21], b"\x05" * 4, versions)
    _d, s, v = pk.parse_version_negotiation(vn)
    assert v == versions and s == b"\x05" * 4, "VN did not round-trip"
    try:
        pk.parse_version_negotiation(vn + data[1:])
    except pk.PacketError:
        pass


# ------------------------------------------------------------------- frames
def fuzz_frames(data: bytes) -> None:
    """parse_frames for each packet type; accepted frames must round-trip."""
    if not data:
        return
    ptype = _PTYPES[data[0] & 3]
    payload = data[1:]
    try:
        frames = fr.parse_frames(payload, int(ptype))
    except QuicError:
        return
    again = fr.parse_frames(b"".join(f.encode() for f in frames), int(ptype))
    assert again == frames, f"frames did not round-trip: {frames!r} -> {again!r}"


def fuzz_transport_params(data: bytes) -> None:
    """TransportParameters.decode; accepted parameters must round-trip."""
    if not data:
        return
    by_server = bool(data[0] & 1)
    try:
        p = TransportParameters.decode(data[1:], by_server)
    except QuicError:
        return
    q = TransportParameters.decode(p.encode(), by_server)
    assert q == p, "transport parameters did not round-trip"


# ---------------------------------------------------------------------- TLS
_TLS_DECODERS: tuple[Callable[[bytes], Any], ...] = (
    tm.ClientHello.decode, tm.ServerHello.decode, tm.EncryptedExtensions.decode,
    tm.CertificateRequest.decode, tm.Certificate.decode, tm.CertificateVerify.decode,
    tm.Finished.decode, tm.NewSessionTicket.decode, tm.OfferedPsks.decode,
    tm.decode_alpn, tm.decode_server_name, tm.parse_message,
)


def fuzz_tls_messages(data: bytes) -> None:
    """Every TLS message decoder on arbitrary bodies; split_messages on the stream."""
    if not data:
        return
    _TLS_DECODERS[data[0] % len(_TLS_DECODERS)](data[1:])
    msgs, used = tm.split_messages(data)
    assert 0 <= used <= len(data)
    for _t, m in msgs:
        tm.parse_message(m)


@lru_cache(maxsize=1)
def _client_hello() -> bytes:
    from pyquic.tls.context import TlsConfig, TlsContext

    ctx = TlsContext(TlsConfig(is_client=True, alpn_protocols=["robust"],
                               server_name="localhost", verify_peer=False), b"", now=1000.0)
    ctx.start()
    return b"".join(d for _lvl, d in ctx.data_to_send())


def fuzz_tls_server(data: bytes) -> None:
    """A server TlsContext fed a real ClientHello with mutations, or raw bytes."""
    from fuzz.harness import server_identity
    from pyquic.engine.transport_param import TransportParameters as TP
    from pyquic.tls.context import TlsConfig, TlsContext

    if not data:
        return
    cert, key = server_identity()
    tp = TP(initial_source_connection_id=b"\x01" * 8).encode()
    ctx = TlsContext(TlsConfig(is_client=False, alpn_protocols=["robust"],
                               certificate_chain=[cert], private_key=key), tp, now=1000.0)
    if data[0] & 1:
        msg = bytearray(_client_hello())
        rng = random.Random(data)
        for _ in range(1 + data[0] % 8):
            i = rng.randrange(len(msg))
            msg[i] = rng.randrange(256)
    else:
        msg = bytearray(data[1:])
    ctx.receive(1, bytes(msg))  # CryptoLevel.INITIAL
    ctx.data_to_send()


# --------------------------------------------------------------- connection
class _Capture:
    """An established in-memory pair and the real datagrams of its handshake
    and of a short stream transfer (c2s: client to server, s2c: back)."""

    def __init__(self) -> None:
        from fuzz.harness import Pair

        self.c2s: list[bytes] = []
        self.s2c: list[bytes] = []
        pair = Pair(seed=7)

        def cap(lst: list[bytes]) -> Callable[[bytes], bytes]:
            def f(d: bytes) -> bytes:
                lst.append(d)
                return d
            return f

        for _ in range(40):
            pair.flight(pair.client, pair._server, cap(self.c2s))
            if pair.has_server:
                pair.flight(pair.server, pair.client, cap(self.s2c))
            pair.advance(0.005)
            if pair.established() and pair.client.conn.handshake_confirmed:
                break
        assert pair.established(), "in-memory handshake failed"
        pair.client.conn.send_stream(0, b"x" * 3000, 0x400 | 0x200, True)
        for _ in range(5):
            pair.flight(pair.client, pair.server, cap(self.c2s))
            pair.flight(pair.server, pair.client, cap(self.s2c))
        self.pair = pair


_CAP: list[_Capture] = []


def _capture() -> _Capture:
    """The shared capture, rebuilt if a previous input closed its connections."""
    if not _CAP or _CAP[0].pair.server.conn.is_closed or _CAP[0].pair.client.conn.is_closed:
        _CAP[:] = [_Capture()]
    return _CAP[0]


def _mutate(rng: random.Random, d: bytes) -> bytes:
    b = bytearray(d)
    for _ in range(1 + rng.randrange(8)):
        op = rng.randrange(4)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2 and len(b) > 1:
            del b[rng.randrange(len(b)):]
        else:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randrange(1, 16))
    return bytes(b)


def fuzz_receive_datagram_garbage(data: bytes) -> None:
    """Garbage datagrams into a client mid-handshake and an established server."""
    from fuzz.harness import SERVER_ADDR, Pair

    pair = Pair(seed=3)
    pair.client.conn.receive_datagram(data, SERVER_ADDR, pair.client.addr, pair.now)
    pair.client.conn.datagrams_to_send(pair.now)
    _check_close(pair.client.conn)
    est = _capture().pair
    est.server.conn.receive_datagram(data, est.client.addr, est.server.addr, est.now)
    est.server.conn.datagrams_to_send(est.now)
    _check_close(est.server.conn)


def fuzz_receive_datagram_mutated(data: bytes) -> None:
    """Mutated real datagrams: the client's first Initial into a fresh server
    (accept), later client datagrams into the established server, and server
    datagrams into a fresh client with the same connection IDs (so the
    Initial keys match and the mutated ServerHello reaches its TLS)."""
    from fuzz.harness import SERVER_ADDR, Pair

    if len(data) < 2:
        return
    cap = _capture()
    rng = random.Random(data)
    if data[0] & 1:
        i = data[1] % len(cap.c2s)
        d = _mutate(rng, cap.c2s[i])
        if i == 0:
            pair = Pair(seed=7, start=False)
            srv = pair.new_server()
            try:
                srv.conn.accept(d, pair.client.addr, SERVER_ADDR, pair.now)
            except OSError:
                return  # not an Initial at all: the endpoint would drop it
            srv.conn.datagrams_to_send(pair.now)
            _check_close(srv.conn)
        else:
            est = cap.pair
            est.server.conn.receive_datagram(d, est.client.addr, est.server.addr, est.now)
            est.server.pump(est.now)
            est.server.conn.datagrams_to_send(est.now)
            _check_close(est.server.conn)
    else:
        d = _mutate(rng, cap.s2c[data[1] % len(cap.s2c)])
        pair = Pair(seed=7)
        pair.client.conn.datagrams_to_send(pair.now)
        pair.client.conn.receive_datagram(d, SERVER_ADDR, pair.client.addr, pair.now)
        pair.client.pump(pair.now)
        pair.client.conn.datagrams_to_send(pair.now)
        _check_close(pair.client.conn)


def _check_close(conn: Any) -> None:
    """A connection closed by input must name a peer fault, never an internal one."""
    f = conn.outq.close_frame
    if f is None or not conn.is_closed:
        return
    assert not bytes(f.reason).startswith(b"malformed"), \
        f"internal exception turned into a close: {f!r}"
    assert f.error_code != 0x01, f"INTERNAL_ERROR close on peer input: {f!r}"


_SRV_KEYS: dict[bytes, Any] = {}


def fuzz_conn_frames_initial(data: bytes) -> None:
    """A fresh server accepting a client Initial whose (valid, encrypted) payload
    is the input: every frame handler of the Initial space sees fuzz data."""
    from fuzz.harness import CLIENT_ADDR, SERVER_ADDR
    from pyquic.engine.connection import QuicConnection

    dcid = b"\x81" * 8
    if dcid not in _SRV_KEYS:
        _SRV_KEYS[dcid] = initial_keys(VERSION_1, dcid, True)[0]
    key = _SRV_KEYS[dcid]
    payload = data[:1100] or b"\x01"
    payload += bytes(max(0, 1100 - len(payload)))  # keep the datagram >= 1200 bytes
    hdr = pk.encode_long_header(pk.PacketType.INITIAL, VERSION_1, dcid, b"\x82" * 8, 0, 4,
                                len(payload))
    srv = QuicConnection(False, random=random.Random(1).randbytes)
    srv.accept(pk.protect(key, hdr, payload, 0), CLIENT_ADDR, SERVER_ADDR, 1000.0)
    srv.datagrams_to_send(1000.0)
    _check_close(srv)


def fuzz_conn_frames_1rtt(data: bytes) -> None:
    """An established server receiving a 1-RTT packet, protected with the real
    client keys, whose payload is the input (reused until a close, then rebuilt)."""
    if not data:
        return
    pair = _capture().pair
    src, dst = pair.client.conn, pair.server.conn
    pns = src.spaces[2]
    pn = pns.next_pn
    pns.next_pn += 1
    payload = data + bytes(max(0, pk.min_payload_len(4) - len(data)))
    key = src.send_key(2)
    assert key is not None, "established connection without 1-RTT keys"
    hdr = pk.encode_short_header(src.dcid, pn, 4, key_phase=src.key_phase)
    dst.receive_datagram(pk.protect(key, hdr, payload, pn), pair.client.addr, pair.server.addr,
                         pair.now)
    pair.server.pump(pair.now)
    dst.datagrams_to_send(pair.now)
    _check_close(dst)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "header": fuzz_header,
    "unprotect": fuzz_unprotect,
    "packet_mutation": fuzz_packet_mutation,
    "retry": fuzz_retry,
    "version_negotiation": fuzz_version_negotiation,
    "frames": fuzz_frames,
    "transport_params": fuzz_transport_params,
    "tls_messages": fuzz_tls_messages,
    "tls_server": fuzz_tls_server,
    "receive_datagram_garbage": fuzz_receive_datagram_garbage,
    "receive_datagram_mutated": fuzz_receive_datagram_mutated,
    "conn_frames_initial": fuzz_conn_frames_initial,
    "conn_frames_1rtt": fuzz_conn_frames_1rtt,
}


def run_one(name: str, data: bytes) -> BaseException | None:
    """Run target ``name`` on ``data``; return the crash, or None if it behaved.

    For the receive_datagram targets nothing at all may escape; for parsers
    only ``ALLOWED`` may."""
    allowed: tuple[type[BaseException], ...] = (
        () if name.startswith(("receive_datagram", "conn_")) else ALLOWED)
    try:
        TARGETS[name](data)
    except allowed:
        return None
    except Exception as e:  # noqa: BLE001 - a crash is what we look for
        return e
    return None
