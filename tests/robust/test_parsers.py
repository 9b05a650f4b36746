"""Property tests: every parser of network input rejects bad input only with
the engine's own protocol errors, and accepted input round-trips.

Short runs (max_examples modest, derandomized); fuzz/run.py does the long
runs with the same targets.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import ALLOWED, TARGETS, run_one
from pyquic.engine import frame as fr
from pyquic.engine import packet as pk
from pyquic.engine.common import VARINT_MAX
from pyquic.engine.crypto import VERSION_1, VERSION_2, PacketKey
from pyquic.engine.errors import CryptoError, QuicError
from pyquic.engine.transport_param import (
    PreferredAddress,
    TransportParameters,
    VersionInformation,
)

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOWER = settings(FAST, max_examples=60)

varint = st.integers(0, VARINT_MAX)
small = st.integers(0, 1 << 20)
cid = st.binary(min_size=1, max_size=20)


# ---------------------------------------------------------------- raw bytes
@pytest.mark.parametrize("name", [n for n in TARGETS if not n.startswith("receive_datagram")])
def test_target_survives_random_bytes(name: str) -> None:
    @FAST
    @given(st.binary(max_size=600))
    def check(data: bytes) -> None:
        crash = run_one(name, data)
        assert crash is None, f"{name}: {crash!r} on {data.hex()}"

    check()


@pytest.mark.parametrize("name", ["receive_datagram_garbage", "receive_datagram_mutated"])
def test_receive_datagram_never_raises(name: str) -> None:
    @SLOWER
    @given(st.binary(max_size=1500))
    def check(data: bytes) -> None:
        crash = run_one(name, data)
        assert crash is None, f"{name}: {crash!r} on {data.hex()}"

    check()


def test_run_one_reports_foreign_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle itself: an IndexError is a crash, a QuicError is not."""
    def boom(data: bytes) -> None:
        raise (IndexError if data else QuicError)(0)

    monkeypatch.setitem(TARGETS, "boom", boom)
    assert isinstance(run_one("boom", b"x"), IndexError)
    assert run_one("boom", b"") is None


# ------------------------------------------------------------------- frames
@st.composite
def ack_ranges(draw: st.DrawFn) -> list[tuple[int, int]]:
    largest = draw(st.integers(0, 1 << 40))
    out: list[tuple[int, int]] = []
    hi = largest
    for _ in range(draw(st.integers(1, 6))):
        lo = max(0, hi - draw(st.integers(0, 1000)))
        out.append((lo, hi))
        gap = draw(st.integers(2, 1000))
        hi = lo - gap
        if hi < 0:
            break
    return out


stream_id = st.integers(0, (1 << 62) - 1)
data = st.binary(max_size=64)

FRAMES = st.one_of(
    st.builds(fr.PingFrame),
    st.builds(fr.AckFrame, ack_ranges(), small,
              st.none() | st.tuples(small, small, small)),
    st.builds(fr.ResetStreamFrame, stream_id, varint, st.integers(0, 1 << 40)),
    st.builds(fr.StopSendingFrame, stream_id, varint),
    st.builds(fr.CryptoFrame, st.integers(0, 1 << 40), data),
    st.builds(fr.NewTokenFrame, st.binary(min_size=1, max_size=64)),
    st.builds(fr.StreamFrame, stream_id, st.integers(0, 1 << 40), data, st.booleans()),
    st.builds(fr.MaxDataFrame, varint),
    st.builds(fr.MaxStreamDataFrame, stream_id, varint),
    st.builds(fr.MaxStreamsFrame, st.integers(0, 1 << 60), st.booleans()),
    st.builds(fr.DataBlockedFrame, varint),
    st.builds(fr.StreamDataBlockedFrame, stream_id, varint),
    st.builds(fr.StreamsBlockedFrame, st.integers(0, 1 << 60), st.booleans()),
    st.builds(fr.NewConnectionIdFrame, st.integers(1, 1 << 30), st.just(0), cid,
              st.binary(min_size=16, max_size=16)),
    st.builds(fr.RetireConnectionIdFrame, small),
    st.builds(fr.PathChallengeFrame, st.binary(min_size=8, max_size=8)),
    st.builds(fr.PathResponseFrame, st.binary(min_size=8, max_size=8)),
    st.builds(fr.ConnectionCloseFrame, varint, varint, st.binary(max_size=32)),
    st.builds(fr.ConnectionCloseFrame, varint, st.just(0), st.binary(max_size=32),
              st.just(True)),
    st.builds(fr.HandshakeDoneFrame),
    st.builds(fr.DatagramFrame, data),
)


@FAST
@given(st.lists(FRAMES, min_size=1, max_size=8))
def test_frames_round_trip_in_1rtt(frames: list[fr.Frame]) -> None:
    wire = b"".join(f.encode() for f in frames)
    assert fr.parse_frames(wire, pk.PacketType.ONE_RTT) == frames


@FAST
@given(st.lists(FRAMES, min_size=1, max_size=6), st.data())
def test_mutated_frames_only_raise_quic_error(frames: list[fr.Frame], d: st.DataObject) -> None:
    wire = bytearray(b"".join(f.encode() for f in frames))
    for _ in range(d.draw(st.integers(1, 4))):
        i = d.draw(st.integers(0, len(wire) - 1))
        wire[i] = d.draw(st.integers(0, 255))
    cut = d.draw(st.integers(0, len(wire)))
    for ptype in (0, 1, 2, 5):
        for payload in (bytes(wire), bytes(wire[:cut])):
            try:
                fr.parse_frames(payload, ptype)
            except QuicError as e:
                assert e.error_code in (0x07, 0x0A), e  # FRAME_ENCODING / PROTOCOL_VIOLATION


# RFC 9000 §12.4 Table 3: what each packet type may carry.
_IH_ALLOWED = (fr.PaddingFrame, fr.PingFrame, fr.AckFrame, fr.CryptoFrame,
               fr.ConnectionCloseFrame)


@FAST
@given(FRAMES, st.sampled_from([pk.PacketType.INITIAL, pk.PacketType.HANDSHAKE,
                                pk.PacketType.ZERO_RTT]))
def test_frame_placement_rules(f: fr.Frame, ptype: pk.PacketType) -> None:
    """Frames outside Table 3 are PROTOCOL_VIOLATION (RFC 9000 §12.4)."""
    if ptype == pk.PacketType.ZERO_RTT:
        # 0-RTT forbids ACK, CRYPTO, HANDSHAKE_DONE, NEW_TOKEN, PATH_RESPONSE, RETIRE_CID
        bad = isinstance(f, (fr.AckFrame, fr.CryptoFrame, fr.HandshakeDoneFrame,
                             fr.NewTokenFrame, fr.PathResponseFrame,
                             fr.RetireConnectionIdFrame))
    else:
        bad = not isinstance(f, _IH_ALLOWED) or (
            isinstance(f, fr.ConnectionCloseFrame) and f.application)
    if bad:
        with pytest.raises(QuicError) as ei:
            fr.parse_frames(f.encode(), ptype)
        assert ei.value.error_code == 0x0A
    else:
        assert fr.parse_frames(f.encode(), ptype) == [f]


# ------------------------------------------------------ transport parameters
TPS = st.builds(
    TransportParameters,
    original_destination_connection_id=st.none() | st.binary(max_size=20),
    max_idle_timeout=st.integers(0, 1 << 40),
    stateless_reset_token=st.none() | st.binary(min_size=16, max_size=16),
    max_udp_payload_size=st.integers(1200, 65527),
    initial_max_data=varint,
    initial_max_stream_data_bidi_local=varint,
    initial_max_stream_data_bidi_remote=varint,
    initial_max_stream_data_uni=varint,
    initial_max_streams_bidi=st.integers(0, 1 << 60),
    initial_max_streams_uni=st.integers(0, 1 << 60),
    ack_delay_exponent=st.integers(0, 20),
    max_ack_delay=st.integers(0, (1 << 14) - 1),
    disable_active_migration=st.booleans(),
    preferred_address=st.none() | st.builds(
        PreferredAddress, st.binary(min_size=4, max_size=4), st.integers(0, 65535),
        st.binary(min_size=16, max_size=16), st.integers(0, 65535), cid,
        st.binary(min_size=16, max_size=16)),
    active_connection_id_limit=st.integers(2, 1 << 20),
    initial_source_connection_id=st.none() | st.binary(max_size=20),
    retry_source_connection_id=st.none() | st.binary(max_size=20),
    max_datagram_frame_size=st.integers(0, 65535),
    grease_quic_bit=st.booleans(),
    version_information=st.none() | st.builds(
        VersionInformation, st.sampled_from([VERSION_1, VERSION_2]),
        st.lists(st.sampled_from([VERSION_1, VERSION_2]), min_size=1, max_size=3)),
)


@FAST
@given(TPS)
def test_transport_params_round_trip(p: TransportParameters) -> None:
    assert TransportParameters.decode(p.encode(), True) == p


@FAST
@given(TPS, st.data())
def test_mutated_transport_params(p: TransportParameters, d: st.DataObject) -> None:
    wire = bytearray(p.encode())
    if not wire:
        return
    for _ in range(d.draw(st.integers(1, 3))):
        wire[d.draw(st.integers(0, len(wire) - 1))] = d.draw(st.integers(0, 255))
    for by_server in (True, False):
        try:
            TransportParameters.decode(bytes(wire), by_server)
        except QuicError as e:
            assert e.error_code == 0x08  # TRANSPORT_PARAMETER_ERROR


@FAST
@given(TPS.filter(lambda p: p.original_destination_connection_id is not None))
def test_server_only_params_from_client_rejected(p: TransportParameters) -> None:
    """RFC 9000 §18.2: a client must not send original_destination_connection_id."""
    with pytest.raises(QuicError) as ei:
        TransportParameters.decode(p.encode(), False)
    assert ei.value.error_code == 0x08


# ----------------------------------------------------- packets and headers
@FAST
@given(st.sampled_from([51, 52, 53, 54]), st.binary(min_size=48, max_size=48),
       st.binary(min_size=1, max_size=200), st.integers(0, (1 << 32) - 1),
       st.integers(1, 4), st.data())
def test_short_packet_bit_flip_never_decrypts(cipher: int, secret: bytes, payload: bytes,
                                              pn: int, pn_len: int, d: st.DataObject) -> None:
    """RFC 9001 §5: header protection plus AEAD make every bit significant."""
    key = PacketKey(cipher, secret[:48 if cipher == 52 else 32], VERSION_1)
    payload += bytes(max(0, pk.min_payload_len(pn_len) - len(payload)))
    pkt = bytearray(pk.protect(key, pk.encode_short_header(b"\x07" * 8, pn, pn_len),
                               payload, pn))
    bit = d.draw(st.integers(0, len(pkt) * 8 - 1))
    pkt[bit >> 3] ^= 1 << (bit & 7)
    with pytest.raises((pk.PacketError, CryptoError, QuicError)):
        h = pk.parse_header(bytes(pkt), 0, 8)
        pk.unprotect(key, bytes(pkt), h, pn - 1)


@FAST
@given(cid, cid, st.lists(st.integers(0, (1 << 32) - 1), min_size=1, max_size=20))
def test_version_negotiation_round_trip(dcid: bytes, scid: bytes, versions: list[int]) -> None:
    assert pk.parse_version_negotiation(pk.build_version_negotiation(dcid, scid, versions)) \
        == (dcid, scid, versions)


@FAST
@given(st.sampled_from([VERSION_1, VERSION_2]), cid, cid, cid, st.binary(max_size=100),
       st.data())
def test_retry_integrity(version: int, dcid: bytes, scid: bytes, odcid: bytes,
                         token: bytes, d: st.DataObject) -> None:
    """RFC 9001 §5.8: a Retry verifies only with its odcid and unchanged bytes."""
    r = pk.build_retry(version, dcid, scid, odcid, token)
    h = pk.parse_header(r, 0, 8)
    assert h.packet_type == pk.PacketType.RETRY and h.token == token
    assert pk.verify_retry(version, odcid, r, h)
    assert not pk.verify_retry(version, odcid + b"\x00", r, h)
    bad = bytearray(r)
    i = d.draw(st.integers(0, len(r) - 1))
    bad[i] ^= d.draw(st.integers(1, 255))
    try:
        h2 = pk.parse_header(bytes(bad), 0, 8)
    except pk.PacketError:
        return
    if h2.packet_type == pk.PacketType.RETRY:
        assert not pk.verify_retry(h2.version, odcid, bytes(bad), h2)


def test_allowed_errors_are_the_engines_own() -> None:
    """The oracle must not be widened to generic exceptions by accident."""
    for exc in ALLOWED:
        assert exc.__module__.startswith("pyquic."), exc
