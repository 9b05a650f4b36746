"""The request/response path's deferred ACK (``QuicConnection.settle``), the
``output_due`` check and the lazily armed idle timer, on an established pair
pumped by hand with a virtual clock (no wall-clock timing anywhere)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from pyquic import abi
from pyquic.engine import frame as fr
from pyquic.engine import packet as pk
from pyquic.engine.common import encode_varint
from pyquic.engine.connection import ConnState, QuicConnection
from pyquic.engine.errors import PROTOCOL_VIOLATION
from pyquic.engine.timer import TimerKind

from .netsim import CLIENT_ADDR, SERVER_ADDR, NetSim
from .test_fastpath import _protected, _read_all

APP = 2
NEW, FIN = 0x400, 0x200


# ------------------------------------------------------------------ helpers
def _pair(server_setup: Any = None, client_tp: Any = None, quiet: float = 0.5,
          delay: float = 0.010) -> tuple[NetSim, QuicConnection, QuicConnection]:
    """An established pair with stream 0 open both ways (the fast receive
    path only continues streams that already carried data) and nothing in
    flight: ``sim.now`` is the virtual time to continue from."""
    sim = NetSim(seed=5, server_setup=server_setup, delay=delay)
    if client_tp is not None:
        sim.client.set_transport_param(client_tp)
    assert sim.handshake()
    assert sim.run(lambda s: s.client.handshake_confirmed, max_time=5)
    cli, srv = sim.client, sim.server
    assert srv is not None
    cli.send_stream(0, b"hello", NEW, True)
    assert sim.run(lambda s: srv.readable(), max_time=2)
    item = srv.recv(65536)
    assert item is not None and item.data == b"hello"
    srv.send_stream(0, b"hi", 0, True)
    assert sim.run(lambda s: cli.readable(), max_time=2)
    item = cli.recv(65536)
    assert item is not None and item.data == b"hi"
    sim.run(lambda s: False, max_time=quiet)  # the ACKs of all that settle
    assert cli.state == srv.state == ConnState.ESTABLISHED
    assert cli._ack_later is None and srv._ack_later is None
    assert cli.cc.bytes_in_flight == 0 and srv.cc.bytes_in_flight == 0
    return sim, cli, srv


def _send(conn: QuicConnection, data: bytes, now: float, flags: int = 0) -> list[bytes]:
    assert conn.send_stream(0, data, flags, True) == len(data)
    return [d for d, _a in conn.datagrams_to_send(now)]


def _to_server(srv: QuicConnection, dgrams: list[bytes], now: float) -> None:
    for d in dgrams:
        srv.receive_datagram(d, CLIENT_ADDR, SERVER_ADDR, now)


def _to_client(cli: QuicConnection, dgrams: list[bytes], now: float) -> None:
    for d in dgrams:
        cli.receive_datagram(d, SERVER_ADDR, CLIENT_ADDR, now)


def _payload(receiver: QuicConnection, d: bytes) -> bytes:
    """The plaintext payload of a 1-RTT datagram, decrypted with
    ``receiver``'s key (not delivered to it)."""
    hdr = pk.parse_header(d, 0, len(receiver.scid))
    key = receiver._recv_keys[APP]
    assert not hdr.is_long and key is not None
    assert hdr.packet_end == len(d)  # one packet per datagram
    um = pk.remove_header_protection(key, d, hdr)
    pn = pk.decode_packet_number(um.truncated_pn, um.pn_len,
                                 receiver.spaces[APP].largest_received)
    return pk.decrypt_payload(key, d, hdr, um, pn)


def _frames(receiver: QuicConnection, d: bytes) -> list[Any]:
    """The frames of a 1-RTT datagram (see ``_payload``)."""
    return fr.parse_frames(_payload(receiver, d), int(pk.PacketType.ONE_RTT))


def _round_trip(sim: NetSim, cli: QuicConnection, srv: QuicConnection,
                gap: float = 0.004) -> tuple[int, float, float]:
    """One request (client, at sim.now) and its reply (server), delivered
    ``gap`` apart; returns (request pn, send time, arrival time of the reply)."""
    t0 = sim.now
    req = _send(cli, b"request", t0)
    assert len(req) == 1
    req_pn = cli.spaces[APP].next_pn - 1
    assert cli.spaces[APP].sent[req_pn].sent_time == t0
    t1 = t0 + gap
    _to_server(srv, req, t1)
    assert _read_all(srv) == b"request"
    rsp = _send(srv, b"response", t1)
    assert len(rsp) == 1
    t2 = t1 + gap
    _to_client(cli, rsp, t2)
    return req_pn, t0, t2


# ------------------------------------------------------------------ settle
@pytest.mark.parametrize("how", ["next_timer", "handle_timer"])
def test_reply_ack_is_deferred_then_settled_with_the_arrival_rtt(how: str) -> None:
    """The ACK in the reply (ACK + in-order STREAM) waits in ``_ack_later``:
    the acknowledged request stays in flight until the timers are read; the
    RTT sample counts from the reply's arrival (RFC 9002 §5.1), not from
    when the bookkeeping ran."""
    sim, cli, srv = _pair()
    old_rtt = cli.rtt.latest_rtt
    req_pn, t0, t2 = _round_trip(sim, cli, srv)
    assert cli._ack_later is not None
    assert cli._ack_later[1] == t2  # the arrival time goes with it
    assert cli._ack_later[0].largest >= req_pn
    assert req_pn in cli.spaces[APP].sent  # not processed yet
    assert cli.cc.bytes_in_flight > 0
    assert cli.rtt.latest_rtt == old_rtt
    assert _read_all(cli) == b"response"  # the data went to the application at once
    if how == "next_timer":
        cli.next_timer()
    else:
        # later than the arrival, before any timer is due: an RTT sample taken
        # at the settle time would be 15 ms too long
        cli.handle_timer(t2 + 0.015)
    assert cli._ack_later is None
    assert req_pn not in cli.spaces[APP].sent
    assert cli.cc.bytes_in_flight == 0
    assert cli.rtt.latest_rtt == t2 - t0
    assert cli.rtt.latest_rtt != old_rtt
    assert cli.state == ConnState.ESTABLISHED


def test_settle_without_deferred_ack_is_a_no_op() -> None:
    _sim, cli, _srv = _pair()
    assert cli._ack_later is None
    assert cli.settle() is False
    assert cli._losses == 0


def test_next_fast_path_packet_settles_the_previous_ack_first() -> None:
    """ACKs are processed in arrival order (RFC 9002 §A.7): a second reply
    arriving before anyone read the timers settles the first one's ACK."""
    sim, cli, srv = _pair()
    req_pn, t0, t2 = _round_trip(sim, cli, srv)
    first = cli._ack_later
    assert first is not None
    # another round trip without reading the client's timers in between
    sim.now = t2
    # (the client's send does not settle: its window is wide open)
    req2 = _send(cli, b"again", t2)
    assert cli._ack_later is first
    _to_server(srv, req2, t2 + 0.004)
    assert _read_all(srv) == b"again"
    rsp = _send(srv, b"reply2", t2 + 0.004)
    _to_client(cli, rsp, t2 + 0.008)
    assert cli._ack_later is not None and cli._ack_later is not first
    assert cli._ack_later[1] == t2 + 0.008
    assert req_pn not in cli.spaces[APP].sent  # the first ACK ran
    assert cli.rtt.latest_rtt == t2 - t0  # ... with its own arrival time
    cli.next_timer()
    assert not cli.spaces[APP].sent or max(cli.spaces[APP].sent) < req_pn
    assert cli.rtt.latest_rtt == pytest.approx(0.008)


@pytest.mark.parametrize("later, lost", [(3, True), (2, False)])
def test_settle_detects_packet_threshold_loss_and_retransmits(later: int, lost: bool) -> None:
    """Request 1 is dropped, ``later`` requests after it arrive and the reply
    acknowledges them: with 3 later packets acknowledged request 1 is lost
    by the packet threshold (RFC 9002 §6.1.1, kPacketThreshold = 3), settle()
    says so and the next flush retransmits its bytes (RFC 9000 §13.3); with
    2 it is not lost yet (the time threshold, §6.1.2, has not passed)."""
    sim, cli, srv = _pair()
    t0 = sim.now
    base = 5  # b"hello" went before
    pieces = [bytes([0x61 + i]) * 100 for i in range(later + 1)]
    dgrams: list[bytes] = []
    pns: list[int] = []
    for i, p in enumerate(pieces):
        out = _send(cli, p, t0 + i * 0.0001)
        assert len(out) == 1
        dgrams += out
        pns.append(cli.spaces[APP].next_pn - 1)
    t1 = t0 + 0.005
    _to_server(srv, dgrams[1:], t1)  # the first one is lost
    assert _read_all(srv) == b""  # a gap: nothing in order yet
    rsp = _send(srv, b"reply", t1)
    assert len(rsp) == 1
    t2 = t1 + 0.005
    _to_client(cli, rsp, t2)
    assert cli._ack_later is not None  # a multi-range ACK, deferred as well
    assert cli._ack_later[0].ranges[0][1] == pns[-1]
    assert all(pn in cli.spaces[APP].sent for pn in pns)
    assert cli._losses == 0
    assert _read_all(cli) == b"reply"
    assert cli.settle() is lost
    assert cli._ack_later is None
    assert all(pn not in cli.spaces[APP].sent for pn in pns[1:])
    assert pns[0] in cli.spaces[APP].sent or lost
    if not lost:
        assert cli._losses == 0
        assert cli.spaces[APP].loss_time is not None  # RFC 9002 §6.1.2 timer
        return
    assert cli._losses == 1
    assert pns[0] not in cli.spaces[APP].sent
    out = [d for d, _a in cli.datagrams_to_send(t2)]
    assert out
    streams = [f for d in out for f in _frames(srv, d) if isinstance(f, fr.StreamFrame)]
    assert any(f.stream_id == 0 and f.offset == base and f.data == pieces[0]
               for f in streams), streams
    _to_server(srv, out, t2 + 0.005)
    assert _read_all(srv) == b"".join(pieces)


def _tampered_ack(cli: QuicConnection, srv: QuicConnection, multi: bool) -> bytes:
    """A server packet whose ACK acknowledges a packet number the client never
    sent, followed by an in-order STREAM frame (the request/response shape)."""
    unsent = cli.spaces[APP].next_pn + 5
    ranges = [(unsent, unsent), (0, 1)] if multi else [(0, unsent)]
    ack = fr.AckFrame(ranges, 0).encode()
    offset = cli.streams.streams[0].recv._contig  # in order
    stream = b"\x0c" + encode_varint(0) + encode_varint(offset) + b"tampered"
    return _protected(srv, ack + stream)


@pytest.mark.parametrize("multi", [False, True])
def test_ack_of_unsent_packet_on_fast_path_closes_at_once(multi: bool) -> None:
    """RFC 9000 §13.1: an ACK of a packet number never sent is a
    PROTOCOL_VIOLATION, found on receipt, not deferred to settle()."""
    sim, cli, srv = _pair()
    d = _tampered_ack(cli, srv, multi)
    cli.receive_datagram(d, SERVER_ADDR, CLIENT_ADDR, sim.now + 0.001)
    # no settle, next_timer, flush ... in between
    assert cli.is_closed
    assert cli.get_close_info().errcode == PROTOCOL_VIOLATION
    assert cli._ack_later is None


def test_send_stream_settles_when_the_send_buffer_is_full() -> None:
    """Data the deferred ACK acknowledges leaves the send buffer before a
    write is refused: without settle() the write would be EAGAIN."""
    sim, cli, srv = _pair()
    t0 = sim.now
    chunk = bytes(8192)
    for _ in range(64):  # fill the send buffer (bounded)
        try:
            n = cli.send_stream(0, chunk, 0, True)
        except OSError as e:
            assert e.errno == errno.EAGAIN
            break
        if n < len(chunk):
            break
    assert cli._buffered() >= cli._sndbuf()
    sent: list[bytes] = []
    for i in range(20):  # what the window and the pacer let out
        sent += [d for d, _a in cli.datagrams_to_send(t0 + i * 0.001)]
    assert sent
    t1 = t0 + 0.03
    _to_server(srv, sent, t1)  # (the server does not read: no window update)
    rsp = _send(srv, b"ok", t1)
    assert len(rsp) == 1
    _to_client(cli, rsp, t1 + 0.01)
    assert cli._ack_later is not None
    assert cli._buffered() >= cli._sndbuf()  # still full before settling
    n = cli.send_stream(0, b"z" * 4096, 0, True)
    assert n > 0
    assert cli._ack_later is None


def test_writable_settles_the_deferred_ack() -> None:
    sim, cli, srv = _pair()
    t0 = sim.now
    chunk = bytes(8192)
    for _ in range(64):
        try:
            if cli.send_stream(0, chunk, 0, True) < len(chunk):
                break
        except OSError as e:
            assert e.errno == errno.EAGAIN
            break
    sent: list[bytes] = []
    for i in range(20):
        sent += [d for d, _a in cli.datagrams_to_send(t0 + i * 0.001)]
    _to_server(srv, sent, t0 + 0.03)
    _to_client(cli, _send(srv, b"ok", t0 + 0.03), t0 + 0.04)
    assert cli._ack_later is not None
    assert cli._buffered() >= cli._sndbuf()
    assert cli.writable()  # POLLOUT: the acknowledged bytes left the buffer
    assert cli._ack_later is None
    assert cli._buffered() < cli._sndbuf()


# ---------------------------------------------------------------- output_due
def test_output_due_follows_the_ack_rules() -> None:
    """One ack-eliciting request: the ACK may wait max_ack_delay (RFC 9000
    §13.2.1), nothing is due; a second one makes the ACK due at once
    (§13.2.2); so does the deadline passing."""
    sim, cli, srv = _pair()
    t0 = sim.now
    _to_server(srv, _send(cli, b"one", t0), t0 + 0.004)
    t1 = t0 + 0.004
    sp = srv.spaces[APP]
    assert sp.ack_pending and sp.ack_deadline is not None and sp.ack_deadline > t1
    assert srv.output_due(t1) is False
    assert srv.output_due(sp.ack_deadline) is True  # §13.2.1: max_ack_delay passed
    _to_server(srv, _send(cli, b"two", t0 + 0.001), t1 + 0.001)
    assert sp.ack_needed
    assert srv.output_due(t1 + 0.001) is True
    out = srv.datagrams_to_send(t1 + 0.001)
    assert out
    assert srv.output_due(t1 + 0.001) is False  # the ACK went out


def test_output_due_for_a_path_response_and_a_control_frame() -> None:
    sim, cli, srv = _pair()
    now = sim.now + 0.001
    # PATH_CHALLENGE: a PATH_RESPONSE must go out (RFC 9000 §8.2.2)
    d = _protected(cli, fr.PathChallengeFrame(b"12345678").encode())
    srv.receive_datagram(d, CLIENT_ADDR, SERVER_ADDR, now)
    assert srv.state == ConnState.ESTABLISHED
    assert srv.output_due(now) is True
    srv.datagrams_to_send(now)
    assert srv.output_due(now) is False
    # a queued control frame: STOP_SENDING (RFC 9000 §19.5)
    srv.stream_stop_sending(0, 7)
    assert srv.outq.ctrl[APP]
    assert srv.output_due(now) is True


def test_output_due_true_when_not_established() -> None:
    sim, cli, _srv = _pair()
    cli.close(sim.now)
    assert cli.output_due(sim.now) is True


# ---------------------------------------------------------------- idle timer
def test_idle_timer_is_armed_lazily_from_the_last_activity() -> None:
    """RFC 9000 §10.1: the idle timer restarts on receipt and on the first
    ack-eliciting packet sent after it; the engine only records the time and
    sets TimerKind.IDLE when the timers are read, to last activity +
    max(idle timeout, 3 * PTO)."""
    sim, cli, srv = _pair()
    t0 = sim.now
    before = srv.timers.get(TimerKind.IDLE)
    t1 = t0 + 0.004
    _to_server(srv, _send(cli, b"request", t0), t1)
    assert srv._last_activity == t1
    assert _read_all(srv) == b"request"
    t_reply = t1 + 0.003
    assert len(_send(srv, b"response", t_reply)) == 1
    assert srv._last_activity == t_reply  # first ack-eliciting send after receipt
    span = max(srv._idle_timeout, 3 * srv.rtt.pto())
    # not moved yet: stale until the timers are read
    assert srv.timers.get(TimerKind.IDLE) == before
    assert before is None or before < t_reply + span
    srv.next_timer()
    assert srv.timers.get(TimerKind.IDLE) == t_reply + span
    # a second send does not restart it (only the first after a receipt)
    assert len(_send(srv, b"more", t_reply + 0.002)) == 1
    assert srv._last_activity == t_reply
    srv.next_timer()
    assert srv.timers.get(TimerKind.IDLE) == t_reply + span


def test_idle_timer_uses_three_ptos_when_longer_than_the_idle_timeout() -> None:
    """RFC 9000 §10.1: max(idle timeout, 3 * PTO): the smallest idle timeout
    (1 s) on a 400 ms round trip."""
    tp = abi.TransportParam(max_idle_timeout=1_000_000)  # microseconds

    def setup(c: QuicConnection) -> None:
        c.set_transport_param(tp)

    sim, cli, srv = _pair(server_setup=setup, client_tp=tp, quiet=1.0, delay=0.2)
    assert srv._idle_timeout == 1.0
    t0 = sim.now
    t1 = t0 + 0.0001
    _to_server(srv, _send(cli, b"request", t0), t1)
    srv.next_timer()
    pto3 = 3 * srv.rtt.pto()
    assert pto3 > srv._idle_timeout
    assert srv.timers.get(TimerKind.IDLE) == srv._last_activity + pto3


def test_idle_timer_not_rearmed_once_closed() -> None:
    sim, cli, srv = _pair()
    _pn, _t0, t2 = _round_trip(sim, cli, srv)
    assert cli._rx_dirty and cli._ack_later is not None
    assert len(_send(cli, b"after", t2 + 0.001)) == 1  # idle timer now stale
    cli.close(t2 + 0.002)
    assert cli.is_closed
    cli.next_timer()
    assert cli.timers.get(TimerKind.IDLE) is None
    assert cli.timers.get(TimerKind.CLOSE) is not None
    cli.handle_timer(t2 + 0.003)
    assert cli.timers.get(TimerKind.IDLE) is None
