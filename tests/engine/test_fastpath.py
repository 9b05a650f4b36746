"""The connection's fast paths (1-RTT STREAM send/receive, empty flushes,
batched ACK handling) against the general code: same bytes on the wire, same
errors, and actually taken in a bulk transfer."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi import EventType, StreamState
from pyquic.engine import frame as fr
from pyquic.engine import packet as pk
from pyquic.engine.common import encode_varint
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.errors import FLOW_CONTROL_ERROR, FRAME_ENCODING_ERROR
from pyquic.engine.outqueue import OutQueue

from .netsim import CLIENT_ADDR, SERVER_ADDR, NetSim, StreamReceiver, StreamSender

APP = 2
NEW, FIN = 0x400, 0x200


def _established(seed: int = 5, **kw: Any) -> NetSim:
    sim = NetSim(seed=seed, **kw)
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)
    sim.run(lambda s: False, max_time=0.2)  # let NEW_CONNECTION_ID etc. settle
    return sim


def _inject(src: QuicConnection, dst: QuicConnection, payload: bytes,
            src_addr: object = CLIENT_ADDR, dst_addr: object = SERVER_ADDR,
            now: float = 0.0) -> None:
    """A 1-RTT packet from ``src`` with ``payload``, protected with its real key."""
    dst.receive_datagram(_protected(src, payload), src_addr, dst_addr, now or dst._now)


def _read_all(conn: QuicConnection) -> bytes:
    """Everything readable now (at most 10 reads)."""
    got = b""
    for _ in range(10):
        item = conn.recv(65536)
        if item is None:
            break
        got += item.data
    return got


def _open_stream(sim: NetSim) -> int:
    """Client stream 0 with some data delivered, so the server knows it."""
    sim.client.send_stream(0, b"hello", NEW, True)
    assert sim.server is not None
    srv = sim.server
    assert sim.run(lambda s: srv.readable(), max_time=2)
    item = srv.recv(65536)
    assert item is not None and item.data == b"hello"
    return 0


def test_fast_send_packet_parses_with_the_general_parser() -> None:
    sim = _established()
    cli = sim.client
    assert sim.server is not None
    data = bytes(range(256)) * 20
    cli.send_stream(0, data, NEW, True)
    out: list[tuple[bytes, object]] = []
    for i in range(50):  # the pacer spreads the datagrams out
        out += cli.datagrams_to_send(sim.now + i * 0.01)
    assert len(out) >= 4
    key = sim.server._recv_keys[APP]
    assert key is not None
    got = b""
    for d, _addr in out:
        hdr = pk.parse_header(d, 0, len(sim.server.scid))
        _first, _pn, payload = pk.unprotect(key, d, hdr, -1)
        frames = fr.parse_frames(payload, int(pk.PacketType.ONE_RTT))
        streams = [f for f in frames if isinstance(f, fr.StreamFrame)]
        assert len(streams) == 1 and streams[0].stream_id == 0
        assert streams[0].offset == len(got)
        got += streams[0].data
        assert len(d) <= cli.paths.max_datagram_size()
    assert got == data


def test_fast_paths_are_taken_in_a_bulk_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"send": 0, "recv": 0}
    orig_send = OutQueue._build_stream_burst
    orig_recv = QuicConnection._stream_fast

    def send(self: OutQueue, *a: Any) -> Any:
        r = orig_send(self, *a)
        counts["send"] += max(r, 0)
        return r

    def recv(self: QuicConnection, *a: Any) -> bool:
        r = orig_recv(self, *a)
        counts["recv"] += r
        return r

    monkeypatch.setattr(OutQueue, "_build_stream_burst", send)
    monkeypatch.setattr(QuicConnection, "_stream_fast", recv)
    data = random.Random(2).randbytes(600_000)
    sim = _established(loss=0.02, reorder=0.02)
    snd = StreamSender(sim.client, [data])
    rcv = StreamReceiver()

    def step(s: NetSim) -> None:
        snd.step()
        rcv.step(s.server)

    sim.on_step = step
    assert sim.run(lambda s: snd.done and len(rcv.fin) == 1, max_time=600)
    assert rcv.stream(snd.ids[0]) == data
    assert counts["send"] > 200 and counts["recv"] > 200, counts


def test_fast_receive_flow_control_violation_closes() -> None:
    """RFC 9000 §4.5 still holds when the frame takes the fast path's shape."""
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None
    limit = srv.local_tp["max_stream_data_bidi_remote"]
    # one STREAM frame (OFF, no LEN) continuing the stream past the limit
    payload = b"\x0c" + encode_varint(sid) + encode_varint(5) + b"x" * (limit + 10)
    _inject(sim.client, srv, payload[:1100])  # in the window: fine
    assert srv.state == ConnState.ESTABLISHED
    far = b"\x0c" + encode_varint(sid) + encode_varint(limit) + b"y" * 100
    _inject(sim.client, srv, far)
    assert srv.is_closed
    assert srv.get_close_info().errcode == FLOW_CONTROL_ERROR


@pytest.mark.parametrize("payload", [b"\x0c", b"\x0e\x00\x05", b"\x0e\x00\x05\x40"])
def test_fast_receive_truncated_stream_frame(payload: bytes) -> None:
    """A truncated STREAM frame is FRAME_ENCODING_ERROR (RFC 9000 §12.4), not
    a crash of the fast parser."""
    sim = _established()
    _open_stream(sim)
    srv = sim.server
    assert srv is not None
    _inject(sim.client, srv, payload + b"")
    assert srv.is_closed
    assert srv.get_close_info().errcode == FRAME_ENCODING_ERROR


def test_fast_receive_ack_and_stream_in_one_packet() -> None:
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None
    largest = srv.spaces[APP].next_pn - 1
    ack = fr.AckFrame([(0, largest)], 0).encode()
    frame = b"\x0c" + encode_varint(sid) + encode_varint(5) + b"more"
    _inject(sim.client, srv, ack + frame)
    assert srv.state == ConnState.ESTABLISHED
    assert not srv.spaces[APP].sent  # everything acknowledged
    item = srv.recv(65536)
    assert item is not None and item.data == b"more" and item.stream_id == sid


def test_empty_flush_returns_nothing_without_packing(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = _established()
    cli = sim.client
    calls = []
    orig_build, orig_small = OutQueue.build_datagrams, OutQueue._build_small

    def build(self: OutQueue, *a: Any) -> Any:
        calls.append("build_datagrams")
        return orig_build(self, *a)

    def small(self: OutQueue, *a: Any) -> Any:
        calls.append("_build_small")
        return orig_small(self, *a)

    monkeypatch.setattr(OutQueue, "build_datagrams", build)
    monkeypatch.setattr(OutQueue, "_build_small", small)
    assert cli.datagrams_to_send(sim.now) == []
    assert calls == []
    cli.send_stream(0, b"x", NEW, True)
    assert len(cli.datagrams_to_send(sim.now)) == 1
    assert calls == ["_build_small"]  # a request: packed at once, without the general packer


def test_peer_reset_with_62_bit_code_masks_the_event_code() -> None:
    """The kernel's STREAM_UPDATE errcode is a u32: a 62-bit code is truncated."""
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None
    srv.set_event(EventType.STREAM_UPDATE, True)
    code = (1 << 40) | 0x1234
    _inject(sim.client, srv, fr.ResetStreamFrame(sid, code, 5).encode())
    assert srv.state == ConnState.ESTABLISHED
    item = srv.recv(65536)
    assert item is not None
    ev = abi.decode_event(item.data)
    assert isinstance(ev, abi.StreamUpdateEvent)
    assert ev.state == StreamState.RECV_RESET_RECVD and ev.errcode == 0x1234


def test_fast_receive_out_of_order_and_gap_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out-of-order STREAM data (a lost packet) is buffered by the fast path,
    not the general frame parser, and released once the gap fills."""
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None
    general: list[int] = []
    orig = QuicConnection._process_frames

    def spy(self: QuicConnection, *a: Any) -> bool:
        general.append(1)
        return orig(self, *a)

    monkeypatch.setattr(QuicConnection, "_process_frames", spy)

    def frame(off: int, data: bytes) -> bytes:
        return b"\x0c" + encode_varint(sid) + encode_varint(off) + data

    _inject(sim.client, srv, frame(5 + 300, b"c" * 300))  # gap at 5..305
    _inject(sim.client, srv, frame(5 + 600, b"d" * 300))
    _inject(sim.client, srv, frame(5 + 350, b"x" * 100))  # duplicate inside the gap
    assert srv.recv(65536) is None
    _inject(sim.client, srv, frame(5, b"a" * 300))  # fills it
    got = _read_all(srv)
    assert got == b"a" * 300 + b"c" * 300 + b"d" * 300
    assert not general
    assert srv.state == ConnState.ESTABLISHED
    assert srv.streams.recv_highest >= 905


def test_fast_receive_out_of_order_flow_control_violation_closes() -> None:
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None
    limit = srv.local_tp["max_stream_data_bidi_remote"]
    far = b"\x0c" + encode_varint(sid) + encode_varint(limit - 50) + b"y" * 100
    _inject(sim.client, srv, far)  # out of order and beyond the window
    assert srv.is_closed
    assert srv.get_close_info().errcode == FLOW_CONTROL_ERROR


def test_fast_ack_only_packets_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """ACK-only packets are built and processed by the fast paths in a bulk
    transfer, and parse with the general parser."""
    built: list[bytes] = []
    orig_build = OutQueue._build_ack_fast

    def build(self: OutQueue, conn: QuicConnection, *a: Any) -> Any:
        d = orig_build(self, conn, *a)
        if d and not conn.is_client:
            built.append(d)
        return d

    monkeypatch.setattr(OutQueue, "_build_ack_fast", build)
    general = {"acks": 0}
    orig = QuicConnection._process_frames

    def spy(self: QuicConnection, space: int, frames: list[Any], *a: Any) -> bool:
        if space == APP and frames and all(
                isinstance(f, (fr.AckFrame, fr.PaddingFrame)) for f in frames):
            general["acks"] += 1
        return orig(self, space, frames, *a)

    monkeypatch.setattr(QuicConnection, "_process_frames", spy)
    data = random.Random(3).randbytes(300_000)
    sim = _established(loss=0.01)
    snd = StreamSender(sim.client, [data])
    rcv = StreamReceiver()

    def step(s: NetSim) -> None:
        snd.step()
        rcv.step(s.server)

    sim.on_step = step
    assert sim.run(lambda s: snd.done and len(rcv.fin) == 1, max_time=600)
    assert rcv.stream(snd.ids[0]) == data
    assert len(built) > 20 and general["acks"] == 0
    # the fast ACK-only packet decodes with the general code: ACK (+ PADDING)
    d = built[-1]
    hdr = pk.parse_header(d, 0, len(sim.client.scid))
    key = sim.client._recv_keys[APP]
    assert not hdr.is_long and key is not None
    um = pk.remove_header_protection(key, d, hdr)
    pn = pk.decode_packet_number(um.truncated_pn, um.pn_len,
                                 sim.client.spaces[APP].largest_received)
    frames = fr.parse_frames(pk.decrypt_payload(key, d, hdr, um, pn), int(pk.PacketType.ONE_RTT))
    assert isinstance(frames[0], fr.AckFrame)
    assert all(isinstance(f, fr.PaddingFrame) for f in frames[1:])


def _protected(src: QuicConnection, payload: bytes) -> bytes:
    """A 1-RTT packet from ``src`` with ``payload`` (not delivered)."""
    pns = src.spaces[APP]
    pn = pns.next_pn
    pns.next_pn += 1
    payload += bytes(max(0, pk.min_payload_len(4) - len(payload)))
    hdr = pk.encode_short_header(src.dcid, pn, 4, key_phase=src.key_phase)
    key = src.send_key(APP)
    assert key is not None
    return pk.protect(key, hdr, payload, pn)


def test_receive_datagrams_batch_matches_one_by_one() -> None:
    """receive_datagrams (a GRO batch): in-order data, a duplicate, a
    corrupted packet and a gap are handled as by receive_datagram, in order;
    an error closes the connection and the rest of the batch meets CLOSING."""
    sim = _established()
    sid = _open_stream(sim)
    srv = sim.server
    assert srv is not None

    def frame(off: int, data: bytes) -> bytes:
        return b"\x0c" + encode_varint(sid) + encode_varint(off) + data

    p1 = _protected(sim.client, frame(5, b"aaaa"))
    p2 = _protected(sim.client, frame(9, b"bbbb"))
    p4 = _protected(sim.client, frame(17, b"dddd"))  # before the gap fills
    p3 = _protected(sim.client, frame(13, b"cccc"))
    bad = bytearray(p2)
    bad[-1] ^= 1  # fails authentication: dropped
    srv.receive_datagrams([p1, p2, p1, bytes(bad), p4, p3], CLIENT_ADDR, SERVER_ADDR, sim.now)
    assert srv.state == ConnState.ESTABLISHED
    got = _read_all(srv)
    assert got == b"aaaabbbbccccdddd"
    pns = srv.spaces[APP]
    assert pns.largest_received == sim.client.spaces[APP].next_pn - 1
    # an error in the middle of a batch: closed, later packets not delivered
    limit = srv.local_tp["max_stream_data_bidi_remote"]
    over = _protected(sim.client, frame(limit, b"y" * 100))
    after = _protected(sim.client, frame(21, b"eeee"))
    srv.receive_datagrams([over, after], CLIENT_ADDR, SERVER_ADDR, sim.now)
    assert srv.is_closed
    assert srv.get_close_info().errcode == FLOW_CONTROL_ERROR
    assert srv.spaces[APP].largest_received < sim.client.spaces[APP].next_pn - 1


def _bulk_flushes(monkeypatch: pytest.MonkeyPatch, fast: bool) -> tuple[list[int], bytes]:
    """Datagrams per flush of a bulk transfer by the client, with the fast
    packers on or off (same seed, same clock), and the bytes the server got.
    Checks the in-flight accounting and the congestion window on every flush."""
    if not fast:
        monkeypatch.setattr(OutQueue, "_fast_ok", lambda self, conn: False)
    sim = _established(seed=9)
    cli = sim.client
    srv = sim.server
    assert srv is not None
    data = random.Random(4).randbytes(300_000)
    sent = 0
    counts: list[int] = []
    got = b""
    pns = cli.spaces[APP]
    for i in range(60):
        now = sim.now + i * 0.004
        if sent < len(data):
            try:
                sent += cli.send_stream(0, data[sent:], (0 if sent else NEW) | FIN, True)
            except OSError:
                pass  # send buffer full
        ds = cli.datagrams_to_send(now)
        counts.append(len(ds))
        # RFC 9002 §7: in flight = sum of the in-flight packets; within the window
        assert cli.cc.bytes_in_flight == pns.bytes_in_flight == sum(
            p.size for p in pns.sent.values() if p.in_flight)
        assert cli.cc.bytes_in_flight <= cli.cc.congestion_window
        assert all(len(d) <= cli.paths.max_datagram_size() for d, _a in ds)
        for d, _a in ds:
            srv.receive_datagram(d, CLIENT_ADDR, SERVER_ADDR, now)
        if i % 3 == 2:  # the server reads and acknowledges what arrived so far
            for _ in range(1000):
                item = srv.recv(1 << 20)
                if item is None:
                    break
                got += item.data
            for d, _a in srv.datagrams_to_send(now + 0.002):
                cli.receive_datagram(d, SERVER_ADDR, CLIENT_ADDR, now + 0.002)
    monkeypatch.undo()
    return counts, got


def test_fast_packers_follow_the_window_and_pacer_as_the_general_packer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The burst packer sends as many datagrams per flush as the general one
    (the window and the pacer decide per datagram, RFC 9002 §7, §7.7); only
    the last flush differs (the general packer's STREAM frames carry a Length
    and a wider offset, so it needs one datagram more at the end)."""
    fast, got_fast = _bulk_flushes(monkeypatch, True)
    slow, got_slow = _bulk_flushes(monkeypatch, False)
    data = random.Random(4).randbytes(300_000)
    assert got_fast == data and got_slow == data
    assert 0 in fast[:12] or min(fast[:12]) < max(fast)  # paced / window-limited
    last = max(i for i, n in enumerate(fast) if n)
    assert fast[:last] == slow[:last]
    assert sum(fast) <= sum(slow)


def _send_state(conn: QuicConnection, sid: int) -> tuple[Any, ...]:
    st = conn.streams.streams[sid]
    send = st.send
    assert send is not None
    return (send.state, send.write_offset, b"".join(send._chunks[send._head:]),
            send._blocked_pending, conn.streams.data_sent,
            conn.streams._data_blocked_pending, sorted(conn.streams._pending_send),
            conn.outq.cork)


@pytest.mark.parametrize("case", ["fits", "opened", "stream_credit", "conn_credit", "sndbuf",
                                  "empty", "finished", "unknown", "peer_uni"])
def test_fast_send_matches_the_general_send(case: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """send_stream without flags takes ``_send_stream_fast`` only where all of
    the data fits; either way the stream, the connection credit, the BLOCKED
    flags and the errors are what the general path gives."""
    results = []
    orig = QuicConnection._send_stream_fast
    for fast in (True, False):
        sim = _established()
        cli = sim.client
        sid = 0
        cli.send_stream(sid, b"x", NEW, True)
        cli.datagrams_to_send(sim.now)  # the stream has nothing pending
        cli._send_cork = cli.outq.cork = True  # as after a MSG_MORE send
        send = cli.streams.streams[sid].send
        assert send is not None
        data = b"y" * 100
        if case == "stream_credit":
            send.max_data = send.write_offset + 40
        elif case == "conn_credit":
            cli.streams.max_data_peer = cli.streams.data_sent + 30
        elif case == "sndbuf":
            data = b"z" * (cli._sndbuf() + 10)
        elif case == "empty":
            data = b""
        elif case == "finished":
            cli.send_stream(sid, b"", FIN, True)
        elif case == "opened":
            sid = 4  # opened without data yet: its sending half is READY
            cli.stream_open(sid, 0)
        elif case == "unknown":
            sid = 8
        elif case == "peer_uni":
            sid = 3  # a server-initiated unidirectional stream: no sending half
            cli.streams.get_or_create_peer(sid)
        taken: list[int] = []

        def spy(self: QuicConnection, stream_id: int, d: bytes, fast: bool = fast,
                taken: list[int] = taken) -> int:
            n = orig(self, stream_id, d) if fast else 0
            taken.append(n)
            return n

        monkeypatch.setattr(QuicConnection, "_send_stream_fast", spy)
        try:
            out: Any = cli.send_stream(sid, data, 0, False)
        except OSError as exc:
            out = ("error", exc.errno)
        state = _send_state(cli, sid) if sid in cli.streams.streams and \
            cli.streams.streams[sid].send is not None else None
        results.append((out, state))
        if fast:
            assert bool(taken and taken[0]) == (case in ("fits", "opened"))
    assert results[0] == results[1]
    if case in ("fits", "opened"):
        assert results[0][0] == 100


@pytest.mark.parametrize("case", ["plain", "ack_due", "ctrl_queued", "window_full",
                                  "back_to_back"])
def test_request_lane_matches_the_general_packer(case: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``_collect`` packs a lone request or reply with ``_build_small`` itself;
    the datagrams, the packets recorded as sent and the timers are what the
    general packer (``build_datagrams``) gives, also where the lane must step
    aside (a control frame queued, the congestion window full)."""
    runs = []
    orig_build, orig_small = OutQueue.build_datagrams, OutQueue._build_small
    for lane in (True, False):
        sim = _established()
        cli, srv = sim.client, sim.server
        assert srv is not None
        now = sim.now
        inside = [False]
        hits: list[int] = []

        def build(self: OutQueue, *a: Any, inside: list[bool] = inside) -> Any:
            inside[0] = True
            try:
                return orig_build(self, *a)
            finally:
                inside[0] = False

        def small(self: OutQueue, *a: Any, lane: bool = lane, inside: list[bool] = inside,
                  hits: list[int] = hits) -> Any:
            if not inside[0]:
                if not lane:
                    return None  # lane off: as if it declined, the general packer packs
                hits.append(1)
            return orig_small(self, *a)

        monkeypatch.setattr(OutQueue, "build_datagrams", build)
        monkeypatch.setattr(OutQueue, "_build_small", small)
        trace: list[Any] = []
        for i in range(4):
            if case == "ack_due":
                srv.spaces[APP].ack_needed = True  # the lane takes the ACK along
            elif case == "ctrl_queued" and i == 1:
                cli.outq.push_ctrl(APP, fr.MaxDataFrame(cli.streams.recv_max_data + 1000))
            elif case == "window_full" and i == 2:
                cli.cc.congestion_window = cli.cc.bytes_in_flight + 100
            cli.send_stream(0, bytes([i]) * 64, NEW if i == 0 else 0, True)
            early: list[bytes] = []
            if case == "back_to_back":  # a second request before any answer
                early = [item[0] for item in cli.datagrams_to_send(now)]
                trace.append((len(early), cli.next_timer()))
                now += 0.0005
                cli.send_stream(0, bytes([i]) * 64, 0, True)
            for sender, receiver, src, dst in ((cli, srv, CLIENT_ADDR, SERVER_ADDR),
                                               (srv, cli, SERVER_ADDR, CLIENT_ADDR)):
                out = [item[0] for item in sender.datagrams_to_send(now)]
                if sender is cli:
                    out = early + out
                sent = sender.spaces[APP].sent
                trace.append(([len(d) for d in out],
                              [(p.pn, p.size, p.ack_eliciting, p.in_flight, p.frames)
                               for p in sent.values()],
                              sender.next_timer(), sender.cc.bytes_in_flight))
                for d in out:
                    receiver.receive_datagram(d, src, dst, now)
                if sender is cli:
                    data = _read_all(srv)
                    if data:
                        srv.send_stream(0, data, 0, True)
                else:
                    _read_all(cli)
            now += 0.001
        runs.append(trace)
        assert bool(hits) == lane  # the lane packed (or, off, never did)
    assert runs[0] == runs[1]
