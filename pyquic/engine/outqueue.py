"""The send side: pending frames per space, packing, coalescing, retransmission.

Twin of the kernel's ``net/quic/outqueue.c``.  :class:`OutQueue` keeps what is
waiting to be sent (control frames per packet number space, CRYPTO data per
space, DATAGRAM frames) and turns it into UDP datagrams in
:meth:`OutQueue.build_datagrams`:

* one datagram may coalesce an Initial, a Handshake and a 1-RTT packet
  (RFC 9000 §12.2); a datagram carrying an ack-eliciting Initial is padded to
  1200 bytes (RFC 9000 §14.1; always on the client);
* each packet holds, in order: ACK, control frames, CRYPTO, DATAGRAM, then
  STREAM data pulled from the connection's stream scheduler, within the path
  MTU, the congestion window (RFC 9002 §7; ACK-only packets and PTO probes
  are exempt), the pacer and the anti-amplification limit (RFC 9000 §8.1);
* what each packet carried is recorded in its :class:`~.pnspace.SentPacket`
  as small tuples (``REC_*``) so a loss re-queues the *information*, never
  the packet (RFC 9000 §13.3): CRYPTO/STREAM ranges go back to their
  :class:`SendBuffer`, control frames are re-queued, flow-control updates
  are regenerated with the current value by the connection.

The connection passes itself as ``conn`` (duck-typed; see
``connection.QuicConnection``) so this module has no import cycle.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from . import frame as fr
from .common import encode_varint, varint_size
from .packet import (
    PacketType,
    long_type_bits,
    packet_number_length,
)
from .pnspace import SentPacket
from .stream import _S_RECVD

# packet number spaces
INITIAL, HANDSHAKE, APP = 0, 1, 2
SPACE_PACKET_TYPE = (PacketType.INITIAL, PacketType.HANDSHAKE, PacketType.ONE_RTT)

# what a sent packet carried (first element of each record tuple)
REC_ACK = 0  # (REC_ACK, largest acked in our ACK frame)
REC_CRYPTO = 1  # (REC_CRYPTO, space, offset, length)
REC_STREAM = 2  # (REC_STREAM, stream_id, offset, length, fin)
REC_CTRL = 3  # (REC_CTRL, frame): the connection re-queues or regenerates it
REC_PING = 8
REC_DATAGRAM = 9
REC_PATH = 10  # PATH_CHALLENGE / PATH_RESPONSE: never retransmitted
REC_CLOSE = 11

MIN_INITIAL_DATAGRAM = 1200  # RFC 9000 §14.1
_VARINT_PREFIX = {1: 0, 2: 0x4000, 4: 0x80000000, 8: 0xC000000000000000}  # RFC 9000 §16
_PN_MASK = (0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF)
_SID_CACHE: dict[int, bytes] = {}
_SAMPLE_LEN = 16
_TAG_LEN = 16
_MAX_DATAGRAMS_PER_CALL = 256
_SMALL_MAX = 1024  # stream bytes for _build_small (a request or response)
_BYTE = [bytes((i,)) for i in range(256)]
_ONE_RTT = PacketType.ONE_RTT


class SendBuffer:
    """An outgoing byte stream (CRYPTO or STREAM data) with retransmission.

    Data written is kept until acknowledged.  ``pop`` hands out lost ranges
    first, then new data.  Offsets are absolute stream offsets.
    """

    __slots__ = (
        "acked",
        "base",
        "buf",
        "fin_acked",
        "fin_lost",
        "fin_off",
        "fin_sent",
        "next_off",
        "retx",
    )

    def __init__(self, base: int = 0) -> None:
        self.base = base  # offset of buf[0]; everything below is acked
        self.buf = bytearray()
        self.next_off = base  # first offset never sent
        self.retx: list[list[int]] = []  # lost [start, end) ranges, ascending
        self.acked: list[list[int]] = []  # acked [start, end) ranges above base
        self.fin_off: int | None = None
        self.fin_sent = False
        self.fin_acked = False
        self.fin_lost = False

    @property
    def end(self) -> int:
        return self.base + len(self.buf)

    @property
    def unacked(self) -> int:
        """Bytes held (written but not yet acknowledged)."""
        return len(self.buf)

    @property
    def unsent(self) -> int:
        return self.end - self.next_off

    def write(self, data: bytes, fin: bool = False) -> None:
        if self.fin_off is not None:
            raise ValueError("write after FIN")
        if data:
            self.buf += data
        if fin:
            self.fin_off = self.end

    def has_pending(self) -> bool:
        if self.retx or self.next_off < self.base + len(self.buf):
            return True
        return self.fin_off is not None and (not self.fin_sent or self.fin_lost)

    def pop(self, max_len: int) -> tuple[int, bytes, bool] | None:
        """Next chunk of at most ``max_len`` bytes: (offset, data, fin)."""
        while self.retx:
            r = self.retx[0]
            if r[1] <= self.base:
                self.retx.pop(0)
                continue
            start = max(r[0], self.base)
            end = min(r[1], start + max_len)
            if end >= r[1]:
                self.retx.pop(0)
            else:
                r[0] = end
            data = bytes(self.buf[start - self.base:end - self.base])
            fin = self.fin_off is not None and end == self.fin_off and (
                self.fin_lost or not self.fin_sent)
            if fin:
                self.fin_sent = True
                self.fin_lost = False
            if data or fin:
                return start, data, fin
        start = self.next_off
        end = min(self.end, start + max_len)
        fin = self.fin_off is not None and end == self.fin_off and (
            not self.fin_sent or self.fin_lost)
        if end == start and not fin:
            return None
        self.next_off = end
        if fin:
            self.fin_sent = True
            self.fin_lost = False
        return start, bytes(self.buf[start - self.base:end - self.base]), fin

    def on_acked(self, offset: int, length: int, fin: bool) -> None:
        if fin:
            self.fin_acked = True
            self.fin_lost = False
        end = offset + length
        if end <= self.base or not length:
            return
        if offset <= self.base:
            self._advance(end)
            return
        self.acked = _add_range(self.acked, offset, end)

    def _advance(self, end: int) -> None:
        acked = self.acked
        while acked and acked[0][0] <= end:
            end = max(end, acked.pop(0)[1])
        n = end - self.base
        if n > 0:
            del self.buf[:n]
            self.base = end
            self.next_off = max(self.next_off, end)

    def on_lost(self, offset: int, length: int, fin: bool) -> None:
        if fin and not self.fin_acked:
            self.fin_lost = True
        end = offset + length
        if end <= self.base or not length:
            return
        self.retx = _add_range(self.retx, max(offset, self.base), end)

    def all_acked(self) -> bool:
        return not self.buf and (self.fin_off is None or self.fin_acked)


class _Pkt:
    """A packet being assembled (plaintext until the datagram is final)."""

    __slots__ = (
        "dcid",
        "eliciting",
        "key",
        "largest_ack",
        "overhead",
        "padded",
        "payload",
        "plen",
        "pn",
        "pn_len",
        "ptype",
        "records",
        "space",
    )

    def __init__(self, space: int, pn: int, pn_len: int, ptype: PacketType, overhead: int,
                 dcid: bytes) -> None:
        self.space = space
        self.pn = pn
        self.pn_len = pn_len
        self.ptype = ptype
        self.payload: list[bytes] = []
        self.records: list[tuple[Any, ...]] = []
        self.eliciting = False
        self.overhead = overhead
        self.dcid = dcid
        self.padded = False
        self.key: Any = None
        self.largest_ack = -1
        self.plen = 0  # payload bytes, PADDING included


def _ack_frame(pns: Any, now: float, exponent: int) -> tuple[bytes, int] | None:
    """The ACK frame of ``pns``'s received ranges (RFC 9000 §19.3, no ECN
    counts) with its ACK Delay scaled by ``exponent``, and the largest packet
    number it acknowledges; None when nothing was received."""
    ranges = pns.ranges
    if not ranges:
        return None
    delay = max(0, int((now - pns.largest_received_time) * 1e6) >> exponent)
    if len(ranges) == 1:  # no ACK Range after the first
        first, largest = ranges[0]
        return b"".join((b"\x02", encode_varint(largest), encode_varint(delay), b"\x00",
                         encode_varint(largest - first))), largest
    return fr.AckFrame(pns.ack_ranges(), delay).encode(), ranges[-1][1]


class OutQueue:
    """Frames waiting per space, and the packer."""

    def __init__(self) -> None:
        self.ctrl: list[deque[Any]] = [deque(), deque(), deque()]
        self.crypto: list[SendBuffer] = [SendBuffer(), SendBuffer(), SendBuffer()]
        self.dgrams: deque[bytes] = deque()
        self.dgram_bytes = 0
        self.probes = [0, 0, 0]  # PTO probe packets owed per space
        self.close_frame: fr.ConnectionCloseFrame | None = None
        self.close_spaces: tuple[int, ...] = ()
        self.close_pending = False
        self.cork = False  # MSG_MORE: hold stream data until uncorked
        self._burst_done = False  # the last _build_stream_burst run cannot go on
        # per space: (version, dcid, scid, token, type, first byte, header prefix)
        self._lh_cache: list[tuple[Any, ...] | None] = [None, None, None]

    # ----------------------------------------------------------- queueing
    def push_ctrl(self, space: int, frame: Any) -> None:
        self.ctrl[space].append(frame)

    def push_datagram(self, data: bytes) -> None:
        self.dgrams.append(data)
        self.dgram_bytes += len(data)

    def discard_space(self, space: int) -> None:
        self.ctrl[space].clear()
        self.crypto[space] = SendBuffer(self.crypto[space].end)
        self.probes[space] = 0

    def has_crypto_or_ctrl(self, space: int) -> bool:
        return bool(self.ctrl[space]) or self.crypto[space].has_pending()

    # ------------------------------------------------- loss and ack of records
    def on_lost(self, conn: Any, packet: SentPacket, space: int) -> None:
        for rec in packet.frames:
            kind = rec[0]
            if kind == REC_STREAM:
                conn._stream_lost(rec)
            elif kind == REC_CRYPTO:
                sp = rec[1]
                if not conn.spaces[sp].discarded:
                    self.crypto[sp].on_lost(rec[2], rec[3], False)
            elif kind == REC_CTRL:
                conn._ctrl_lost(rec[1], space)

    def on_acked(self, conn: Any, packet: SentPacket, space: int) -> None:
        for rec in packet.frames:
            self.ack_record(conn, rec, space)

    def ack_record(self, conn: Any, rec: tuple[Any, ...], space: int) -> None:
        """Act on the acknowledgement of one record of a sent packet."""
        kind = rec[0]
        if kind == REC_STREAM:
            conn._stream_acked(rec)
        elif kind == REC_ACK:
            conn.spaces[space].on_ack_of_ack(rec[1])
        elif kind == REC_CRYPTO:
            self.crypto[rec[1]].on_acked(rec[2], rec[3], False)
        elif kind == REC_CTRL:
            conn._ctrl_acked(rec[1])

    # -------------------------------------------------------------- packing
    def build_datagrams(self, conn: Any, now: float) -> list[bytes]:
        """Pack everything sendable now into datagrams for the active path."""
        out: list[bytes] = []
        paths = conn.paths
        fast = self._fast_ok(conn)
        while len(out) < _MAX_DATAGRAMS_PER_CALL:
            if fast and not self.dgrams and not self.probes[APP]:
                if not self.ctrl[APP]:
                    if not out and len(conn.streams._pending_send) == 1:
                        d = self._build_small(conn, now, paths.max_datagram_size())
                        if d is not None:
                            out.append(d)
                            if not conn.streams._pending_send:
                                break
                            continue
                    r = self._build_stream_burst(conn, now, paths.max_datagram_size(), out,
                                                 _MAX_DATAGRAMS_PER_CALL - len(out))
                    if r > 0 and not self._burst_done:
                        continue
                    if r >= 0:
                        break  # congestion window, pacer or nothing to send: done for now
                elif not conn.streams._pending_send:
                    d = self._build_ctrl_fast(conn, now, paths.max_datagram_size())
                    if d is not None:
                        out.append(d)
                        continue
            size_limit = paths.max_datagram_size()
            allowance = paths.send_allowance()
            if allowance is not None:
                if allowance <= 0:
                    break  # RFC 9000 §8.1: blocked until more bytes arrive
                size_limit = min(size_limit, allowance)
            dgram = self._build_one(conn, now, size_limit)
            if dgram is None:
                break
            paths.on_sent(len(dgram))
            out.append(dgram)
            if self.close_pending:
                break  # one CONNECTION_CLOSE datagram at a time
        return out

    def _fast_ok(self, conn: Any) -> bool:
        """The common bulk case, checked once per flush: only 1-RTT keys left
        (Initial and Handshake discarded), a validated path, no close, no
        cork, no CRYPTO data, no greasing and real packet protection."""
        keys = conn._send_keys
        return (keys[APP] is not None and keys[INITIAL] is None and keys[HANDSHAKE] is None
                and not conn.use_early and not conn.plaintext_1rtt and not self.cork
                and not self.close_pending and conn.paths.validated
                and not conn.remote_tp["grease_quic_bit"]
                and not self.crypto[APP].has_pending())

    def _build_stream_burst(self, conn: Any, now: float, size_limit: int, out: list[bytes],
                            max_count: int) -> int:
        """1-RTT datagrams, each holding one STREAM frame of the only stream
        with data, built and sealed in one loop (the bulk-transfer hot path),
        appended to ``out``.

        Returns how many were appended (> 0: the caller loops again, unless
        ``_burst_done`` says the window, the pacer or the stream stopped the
        run, when another call would build nothing); 0 when the congestion
        window or the pacer allow nothing now, or nothing is left to send
        (the general packer would send nothing either); -1 when
        the general packer must build the next datagram (an ACK that is not
        due to piggyback, several streams, a control frame ...).  Same wire
        format and bookkeeping as the general packer (``_on_packet_sent`` per
        packet, done inline); the STREAM frame is the last one of the packet,
        so it has no Length field (RFC 9000 §19.8)."""
        self._burst_done = False
        pns = conn.spaces[APP]
        pending = conn.streams._pending_send
        if not pending:
            # nothing but maybe an ACK (the bulk receiver's usual datagram)
            if not pns.ack_pending or not (pns.ack_needed or (
                    pns.ack_deadline is not None and now >= pns.ack_deadline)):
                return 0  # no ACK due: the general packer would build nothing
            d = self._build_ack_fast(conn, now, pns)
            if d is None:
                return -1
            out.append(d)
            return 1
        if len(pending) != 1:
            return -1
        for st in pending.values():
            break
        send = st.send
        if send is None or not send.has_data():
            del pending[st.id]  # as the scheduler does (QuicStreamTable.sendable)
            return 0 if not pns.ack_pending else -1
        cc = conn.cc
        cwnd = cc.congestion_window
        bif = cc.bytes_in_flight
        if bif + size_limit > cwnd:
            return 0  # RFC 9002 §7
        pacer = conn.pacer
        rate = pacer.rate
        tokens = 0.0
        if rate > 0:
            t = pacer.next_send_time(now)  # refills the bucket up to ``now``
            if t is not None and t > now + 1e-6:  # RFC 9002 §7.7
                conn.arm_pacing(t)
                return 0
            tokens = pacer.tokens
        largest = pns.largest_acked
        dcid = conn.dcid
        dlen = len(dcid)
        sid = st.id
        # fixed-width offset: wide enough for any offset next_chunk may return
        wo = send.write_offset
        owidth = 1 if wo < 0x40 else 2 if wo < 0x4000 else 4 if wo < 0x40000000 else 8
        oprefix = _VARINT_PREFIX[owidth]
        sid_enc = _SID_CACHE.get(sid)
        if sid_enc is None:
            sid_enc = encode_varint(sid)
            if len(_SID_CACHE) < 1024:
                _SID_CACHE[sid] = sid_enc
        pre = (bytes((0x0C,)) + sid_enc, bytes((0x0D,)) + sid_enc)  # STREAM with OFF, no LEN
        ack = b""
        largest_ack = -1
        if pns.ack_pending:
            # piggyback the ACK on the data (RFC 9000 §13.2.1), as the general
            # packer does when there is something ack-eliciting to send
            built = _ack_frame(pns, now, conn.local_ack_delay_exponent)
            if built is None or len(built[0]) > 256:
                return -1
            ack, largest_ack = built
        key = conn._send_keys[APP]
        encrypt = key._aead.encrypt
        iv = key._iv_int
        hp = key._hp_encryptor
        hp_update = hp.update if hp is not None else key.hp_mask
        phase_bits = 0x44 if conn.key_phase else 0x40
        fixed = 1 + dlen + _TAG_LEN + 1 + len(sid_enc) + owidth
        pmds = pacer.max_datagram_size
        pcap = -float(pacer.capacity)
        sent = pns.sent
        join = b"".join
        from_bytes = int.from_bytes
        n = 0
        pn = pns.next_pn
        sent_bytes = 0
        # the packet number length changes only when pn - base crosses a
        # power of two (RFC 9000 §17.1, as packet_number_length computes it)
        base = largest if largest >= 0 else -1
        pn_len = 0
        pn_lim = pn
        first = 0
        hdr = b""
        pn_mask = 0
        room0 = 0
        if send.state >= _S_RECVD:
            return -1
        # SendStream state kept in locals while new data goes out (written
        # back below); lost ranges and a bare FIN go through next_chunk
        wo = send.write_offset
        sent_end = send._sent_end
        lost = send._lost._starts
        chunks = send._chunks
        cstarts = send._cstarts
        c = send._cur
        ch = chunks[c] if c < len(chunks) else b""
        cs = cstarts[c] if c < len(chunks) else 0
        while n < max_count:
            if n:
                if bif + size_limit > cwnd:
                    self._burst_done = True
                    break  # RFC 9002 §7
                if rate > 0 and tokens < pmds:
                    t = now + (pmds - tokens) / rate  # Pacer.next_send_time
                    if t > now + 1e-6:  # RFC 9002 §7.7
                        conn.arm_pacing(t)
                        self._burst_done = True
                        break
            if pn >= pn_lim:
                pn_len = ((pn - base).bit_length() + 8) >> 3
                if pn_len < 2:
                    pn_len = 2
                elif pn_len > 4:
                    break
                pn_lim = base + (1 << (8 * pn_len - 1))
                first = phase_bits | (pn_len - 1)
                hdr = bytes((first,)) + dcid
                pn_mask = _PN_MASK[pn_len]
                room0 = size_limit - fixed - pn_len
            room = room0 - len(ack)
            if room < 1:
                break
            if lost or sent_end >= wo:
                send._sent_end = sent_end
                chunk = send.next_chunk(room)
                sent_end = send._sent_end
                if chunk is None:
                    break
                off, data, fin = chunk
                dl = len(data)
            else:
                # SendStream.next_chunk for new data, inlined
                off = sent_end
                end = off + room if wo - off > room else wo
                sent_end = end
                fin = False
                if end == wo and send._fin_pending:
                    fin = True
                    send._fin_pending = False
                dl = end - off
                # SendStream._slice, inlined for a range inside the chunk it used last
                a = off - cs
                if a >= 0 and a + dl <= len(ch):
                    data = ch[a:a + dl]
                else:
                    data = send._slice(off, end)
                    c = send._cur
                    ch = chunks[c]
                    cs = cstarts[c]
            tpn = pn & pn_mask
            ct = encrypt((iv ^ pn).to_bytes(12, "big"),
                         join((ack, pre[fin], (off | oprefix).to_bytes(owidth, "big"), data)),
                         hdr + tpn.to_bytes(pn_len, "big"))
            s = 4 - pn_len  # RFC 9001 §5.4.2 sample
            mask = hp_update(ct[s:s + _SAMPLE_LEN])
            dgram = join((_BYTE[first ^ (mask[0] & 0x1F)], dcid,
                          (tpn ^ from_bytes(mask[1:1 + pn_len], "big")).to_bytes(pn_len, "big"),
                          ct))
            out.append(dgram)
            size = len(dgram)
            if ack:
                pns.on_ack_sent()
                sent[pn] = SentPacket(pn, now, size, True, True,
                                      [(REC_ACK, largest_ack), (REC_STREAM, sid, off, dl, fin)],
                                      largest_ack)
                ack = b""
            else:
                sent[pn] = SentPacket(pn, now, size, True, True, [(REC_STREAM, sid, off, dl, fin)])
            # what pns.on_packet_sent, cc.on_packet_sent and pacer.on_packet_sent do
            pn += 1
            n += 1
            bif += size
            sent_bytes += size
            if rate > 0:
                tokens = max(tokens - size, pcap)
            if sent_end >= wo and not lost:
                # stream drained (a FIN still owed goes out on the next call)
                send._sent_end = sent_end
                if not send.has_data():
                    del pending[sid]  # as the scheduler does
                    self._burst_done = not pns.ack_pending
                break
        send._sent_end = sent_end
        if not n:
            if rate > 0:
                pacer.tokens = tokens
            return -1
        pns.next_pn = pn
        pns.bytes_in_flight += sent_bytes
        pns.eliciting_in_flight += n
        pns.last_ack_eliciting_time = now
        cc.bytes_in_flight = bif
        if rate > 0:
            pacer.tokens = tokens
        conn._on_eliciting_sent(now)
        return n

    def _build_small(self, conn: Any, now: float, size_limit: int) -> bytes | None:
        """The request/response datagram: everything the only stream with data
        has left is new and fits one packet, with the pending ACK piggybacked
        (RFC 9000 §13.2.1).  Built without the burst loop's setup; None, with
        nothing changed, when the window, the pacer or the sizes say otherwise
        (the burst packer decides then)."""
        pending = conn.streams._pending_send
        for st in pending.values():
            break
        send = st.send
        if send is None or send.state >= _S_RECVD or send._lost:
            return None
        off = send._sent_end
        end = send.write_offset
        dl = end - off
        if dl <= 0 or dl > _SMALL_MAX:
            return None
        cc = conn.cc
        if cc.bytes_in_flight + size_limit > cc.congestion_window:
            return None  # RFC 9002 §7
        pacer = conn.pacer
        if pacer.rate > 0 and pacer.tokens < pacer.max_datagram_size and \
                pacer.next_send_time(now) is not None:
            return None  # RFC 9002 §7.7: the burst packer arms the pacing timer
        pns = conn.spaces[APP]
        ack = b""
        largest_ack = -1
        records: list[tuple[Any, ...]] = []
        if pns.ack_pending:
            built = _ack_frame(pns, now, conn.local_ack_delay_exponent)
            if built is None:
                return None
            ack, largest_ack = built
            records.append((REC_ACK, largest_ack))
        sid = st.id
        fin = send._fin_pending
        # the last frame of the packet: STREAM without Length (RFC 9000 §19.8)
        frame = b"".join((_BYTE[0x0C | fin if off else 0x08 | fin],
                          _SID_CACHE.get(sid) or encode_varint(sid),
                          encode_varint(off) if off else b"", send._slice(off, end)))
        if 1 + len(conn.dcid) + 4 + len(ack) + len(frame) + _TAG_LEN > size_limit:
            return None
        send._sent_end = end
        send._fin_pending = False
        del pending[sid]  # nothing left to send: as the scheduler does
        records.append((REC_STREAM, sid, off, dl, fin))
        return self._seal_short(conn, now, pns, [ack, frame], records, True, largest_ack)

    def _build_ack_fast(self, conn: Any, now: float, pns: Any) -> bytes | None:
        """An ACK-only 1-RTT datagram (not ack-eliciting, not in flight,
        RFC 9002 §2), as the general packer would build it."""
        if pns.next_pn - max(pns.largest_acked, -1) >= 1 << 31:
            return None  # a 5-byte packet number: general packer
        built = _ack_frame(pns, now, conn.local_ack_delay_exponent)
        if built is None or len(built[0]) > 256:
            return None  # no ranges, or a long ACK: general packer
        ack, largest_ack = built
        return self._seal_short(conn, now, pns, [ack], [(REC_ACK, largest_ack)], False,
                                largest_ack)

    def _build_ctrl_fast(self, conn: Any, now: float, size_limit: int) -> bytes | None:
        """A 1-RTT datagram of control frames (flow-control updates: the bulk
        receiver's usual ack-eliciting packet), with the ACK in front when one
        is pending, as ``_build_packet`` + ``_fill`` would build it when no
        stream data, CRYPTO data, DATAGRAM or probe is waiting.  None (nothing
        changed) when the general packer must decide: window or pacer closed
        (it may still send the ACK alone), or an oversized ACK."""
        pns = conn.spaces[APP]
        pn = pns.next_pn
        largest = pns.largest_acked
        pn_len = ((pn + 1 if largest < 0 else pn - largest).bit_length() + 8) >> 3
        if pn_len < 2:
            pn_len = 2
        elif pn_len > 4:
            return None
        room = size_limit - (1 + len(conn.dcid) + pn_len + _TAG_LEN)
        if room < 32:
            return None
        cc = conn.cc
        if cc.bytes_in_flight + size_limit > cc.congestion_window:
            return None  # RFC 9002 §7: the general packer sends the ACK alone
        t = conn.pacer.next_send_time(now)
        if t is not None and t > now + 1e-6:  # RFC 9002 §7.7
            return None
        payload: list[bytes] = []
        records: list[tuple[Any, ...]] = []
        largest_ack = -1
        if pns.ack_pending:
            # an ACK goes with anything ack-eliciting (RFC 9000 §13.2.1)
            built = _ack_frame(pns, now, conn.local_ack_delay_exponent)
            if built is not None:
                enc, largest_ack = built
                if len(enc) > 256:
                    return None
                payload.append(enc)
                records.append((REC_ACK, largest_ack))
                room -= len(enc)
        n_ack = len(payload)
        _take_ctrl(self.ctrl[APP], payload, records, room)
        if len(payload) == n_ack:
            return None  # the first control frame does not fit: general packer
        return self._seal_short(conn, now, pns, payload, records, True, largest_ack)

    def _seal_short(self, conn: Any, now: float, pns: Any, payload: list[bytes],
                    records: list[tuple[Any, ...]], eliciting: bool,
                    largest_ack: int) -> bytes:
        """Protect a 1-RTT packet (RFC 9001 §5) with the next packet number of
        ``pns`` and record it as sent (in flight when ack-eliciting, RFC 9002 §2)."""
        pn = pns.next_pn
        largest = pns.largest_acked
        pn_len = max(((pn + 1 if largest < 0 else pn - largest).bit_length() + 8) >> 3, 2)
        plain = b"".join(payload)
        minp = 4 - pn_len + _SAMPLE_LEN - _TAG_LEN  # RFC 9001 §5.4.2 sample room
        if len(plain) < minp:
            plain += bytes(minp - len(plain))
        dcid = conn.dcid
        key = conn._send_keys[APP]
        first = 0x44 | pn_len - 1 if conn.key_phase else 0x40 | pn_len - 1
        tpn = pn & _PN_MASK[pn_len]
        header = b"".join((bytes((first,)), dcid, tpn.to_bytes(pn_len, "big")))
        ct = key._aead.encrypt((key._iv_int ^ pn).to_bytes(12, "big"), plain, header)
        s = 4 - pn_len
        hp = key._hp_encryptor
        mask = hp.update(ct[s:s + _SAMPLE_LEN]) if hp is not None else \
            key.hp_mask(ct[s:s + _SAMPLE_LEN])
        tpn ^= int.from_bytes(mask[1:1 + pn_len], "big")
        dgram = b"".join((bytes((first ^ (mask[0] & 0x1F),)), dcid,
                          tpn.to_bytes(pn_len, "big"), ct))
        pns.next_pn = pn + 1
        if largest_ack >= 0:
            pns.on_ack_sent()
        # what conn._on_packet_sent does for a 1-RTT packet, inline
        size = len(dgram)
        pns.sent[pn] = SentPacket(pn, now, size, eliciting, eliciting, records, largest_ack)
        if eliciting:  # RFC 9002 §2: in flight
            pns.bytes_in_flight += size
            pns.eliciting_in_flight += 1
            pns.last_ack_eliciting_time = now
            conn.cc.bytes_in_flight += size
            pacer = conn.pacer
            if pacer.rate > 0:  # Pacer.on_packet_sent
                last = pacer.last
                tokens = pacer.tokens
                if last is None or now > last:  # Pacer._refill
                    if last is not None:
                        tokens = min(float(pacer.capacity), tokens + (now - last) * pacer.rate)
                    pacer.last = now
                pacer.tokens = max(tokens - size, -float(pacer.capacity))
            conn._on_eliciting_sent(now)
        return dgram

    def _build_one(self, conn: Any, now: float, size_limit: int) -> bytes | None:
        """One datagram: a packet per space with something to send, coalesced
        in space order (RFC 9000 §12.2), then sealed."""
        pkts: list[_Pkt] = []
        remaining = size_limit
        pad_needed = False
        keys = conn._send_keys
        spaces = conn.spaces
        ctrl = self.ctrl
        crypto = self.crypto
        probes = self.probes
        close = self.close_pending
        for space in (INITIAL, HANDSHAKE, APP):
            key = keys[space]
            if key is None and (space != APP or not conn.use_early):
                continue
            if not close:
                # Cheap pre-check: when none of these holds, _build_packet
                # builds nothing and changes nothing.
                pns = spaces[space]
                if not (pns.ack_pending or probes[space] or ctrl[space]
                        or crypto[space].has_pending()
                        or (space == APP and (self.dgrams or conn.streams._pending_send))):
                    continue
            if key is None:
                key = conn.send_key(space)  # 0-RTT (the EARLY key)
            pkt = self._build_packet(conn, now, space, remaining, key)
            if pkt is None:
                continue
            pkts.append(pkt)
            remaining -= pkt.overhead + pkt.plen
            # RFC 9000 §14.1: a client's Initial, and a server's ack-eliciting
            # Initial, go in a datagram of at least 1200 bytes
            if space == INITIAL and (conn.is_client or pkt.eliciting):
                pad_needed = True
            if remaining < 64:
                break
        if not pkts:
            return None
        if pad_needed:
            total = size_limit - remaining
            if total < MIN_INITIAL_DATAGRAM:
                pad = min(MIN_INITIAL_DATAGRAM, size_limit) - total
                if pad > 0:
                    last = pkts[-1]
                    last.payload.append(bytes(pad))  # PADDING frames
                    last.plen += pad
                    last.padded = True
        return self._seal(conn, now, pkts)

    def _long_prefix(self, conn: Any, space: int, ptype: PacketType) -> tuple[int, bytes]:
        """The long header (RFC 9000 §17.2) of ``space`` without its first
        byte, Length and packet number: (type bits << 4 | 0xC0, the bytes).
        Cached per space; rebuilt when the version, a connection ID or the
        Initial token changed."""
        version = conn.version
        dcid = conn.dcid
        scid = conn.scid
        token = conn.initial_token if space == INITIAL else b""
        t = self._lh_cache[space]
        if t is not None and t[0] == version and t[1] is dcid and t[2] is scid and (
                t[3] is token) and t[4] is ptype:
            return t[5], t[6]
        first = 0xC0 | (long_type_bits(version, ptype) << 4)
        parts = [version.to_bytes(4, "big"), _BYTE[len(dcid)], dcid, _BYTE[len(scid)], scid]
        if ptype == PacketType.INITIAL:
            parts.append(encode_varint(len(token)))  # RFC 9000 §17.2.2
            parts.append(token)
        prefix = b"".join(parts)
        self._lh_cache[space] = (version, dcid, scid, token, ptype, first, prefix)
        return first, prefix

    def _build_packet(self, conn: Any, now: float, space: int, budget: int,
                      key: Any = None) -> _Pkt | None:
        pns = conn.spaces[space]
        pn = pns.next_pn
        largest = pns.largest_acked
        # RFC 9000 §17.1, App. A.2 (at least 2 bytes: keeps the header
        # protection sample in range cheaply)
        pn_len = ((pn + 1 if largest < 0 else pn - largest).bit_length() + 8) >> 3
        if pn_len < 2:
            pn_len = 2
        elif pn_len > 4:
            pn_len = packet_number_length(pn, largest)  # raises
        dcid = conn.dcid
        if space == APP and not conn.use_early:
            overhead = 1 + len(dcid) + pn_len + _TAG_LEN
            ptype = PacketType.ONE_RTT
        else:
            overhead = 9 + len(dcid) + len(conn.scid) + pn_len + _TAG_LEN
            if space == INITIAL:
                tok = conn.initial_token
                overhead += varint_size(len(tok)) + len(tok)
                ptype = PacketType.INITIAL
            else:
                ptype = PacketType.HANDSHAKE if space == HANDSHAKE else PacketType.ZERO_RTT
        room = budget - overhead
        if room < 32:
            return None
        pkt = _Pkt(space, pn, pn_len, ptype, overhead, dcid)
        pkt.key = key if key is not None else conn.send_key(space)
        payload = pkt.payload
        records = pkt.records

        # CONNECTION_CLOSE: alone, in every space we still have keys for.
        if self.close_pending:
            if space not in self.close_spaces or self.close_frame is None:
                return None
            cf = self.close_frame
            if space != APP and cf.application:
                # RFC 9000 §10.2.3: no application close before 1-RTT keys
                cf = fr.ConnectionCloseFrame(0x0C, 0, b"")
            enc = cf.encode()[:room]
            payload.append(enc)
            records.append((REC_CLOSE,))
            pkt.plen = len(enc)  # >= 3 bytes: room for the sample with pn_len >= 2
            return pkt

        plen = 0
        ack_sent = False
        if pns.ack_pending and (pns.ack_needed or (
                pns.ack_deadline is not None and now >= pns.ack_deadline)
                or self._has_eliciting_data(conn, space)):
            built = _ack_frame(pns, now, conn.local_ack_delay_exponent)
            if built is not None:
                enc, largest_ack = built
                if len(enc) <= room:
                    payload.append(enc)
                    records.append((REC_ACK, largest_ack))
                    pkt.largest_ack = largest_ack
                    room -= len(enc)
                    plen = len(enc)
                    ack_sent = True

        probe = self.probes[space] > 0
        cwnd_ok = probe or conn.cc.bytes_in_flight + budget <= conn.cc.congestion_window
        if space == APP and cwnd_ok and not probe and self._has_eliciting_data(conn, space):
            t = conn.pacing_delay(now)
            if t is not None and t > now + 1e-6:  # RFC 9002 §7.7
                conn.arm_pacing(t)
                cwnd_ok = False
        if cwnd_ok:
            room2 = self._fill(conn, now, space, pkt, room)
            plen += room - room2
            room = room2
        if probe and not pkt.eliciting:
            payload.append(b"\x01")  # PING, RFC 9002 §6.2.4
            records.append((REC_PING,))
            pkt.eliciting = True
            plen += 1
        if pkt.eliciting and probe:
            self.probes[space] -= 1
        if not payload:
            return None
        if ack_sent:
            pns.on_ack_sent()
        minp = 4 - pn_len + _SAMPLE_LEN - _TAG_LEN  # RFC 9001 §5.4.2 sample room
        if plen < minp:
            payload.append(bytes(minp - plen))
            plen = minp
        pkt.plen = plen
        return pkt

    def _has_eliciting_data(self, conn: Any, space: int) -> bool:
        if self.ctrl[space] or self.crypto[space].has_pending() or self.probes[space]:
            return True
        return space == APP and (bool(self.dgrams) or conn.has_stream_data())

    def _fill(self, conn: Any, now: float, space: int, pkt: _Pkt, room: int) -> int:
        """Append control, CRYPTO, DATAGRAM and STREAM frames within ``room``;
        returns the room left (every frame appended takes exactly its length
        off ``room``: ``_build_packet`` derives the payload length from it)."""
        payload = pkt.payload
        records = pkt.records
        ctrl = self.ctrl[space]
        if ctrl:
            n = len(payload)
            room = _take_ctrl(ctrl, payload, records, room)
            if len(payload) > n:
                pkt.eliciting = True
        # CRYPTO (RFC 9000 §19.6)
        buf = self.crypto[space]
        while room > 8 and buf.has_pending():
            off = buf.retx[0][0] if buf.retx else buf.next_off
            hdr = 1 + varint_size(off) + 2
            chunk = buf.pop(room - hdr)
            if chunk is None:
                break
            off, data, _ = chunk
            n = len(data)
            enc = b"".join((b"\x06", encode_varint(off), encode_varint(n), data))
            payload.append(enc)
            records.append((REC_CRYPTO, space, off, n))
            room -= len(enc)
            pkt.eliciting = True
        if space != APP:
            return room
        # DATAGRAM frames (RFC 9221): sent once, never retransmitted
        dgrams = self.dgrams
        while dgrams and room > 0:
            d = dgrams[0]
            need = 1 + varint_size(len(d)) + len(d)
            if need > room:
                if not payload:
                    dgrams.popleft()  # can never fit: drop
                    self.dgram_bytes -= len(d)
                    continue
                break
            dgrams.popleft()
            self.dgram_bytes -= len(d)
            payload.append(fr.DatagramFrame(d).encode())
            records.append((REC_DATAGRAM,))
            room -= need
            pkt.eliciting = True
        # STREAM frames
        if room > 16 and not self.cork:
            room = conn._fill_streams(pkt, room)
        return room

    def _seal(self, conn: Any, now: float, pkts: list[_Pkt]) -> bytes:
        """Protect each packet (RFC 9001 §5.3 AEAD, §5.4 header protection)
        in one AEAD call and one mask each, and record it as sent."""
        parts: list[bytes] = []
        join = b"".join
        from_bytes = int.from_bytes
        for pkt in pkts:
            space = pkt.space
            key = pkt.key
            pn = pkt.pn
            pn_len = pkt.pn_len
            plain = join(pkt.payload)
            tpn = pn & _PN_MASK[pn_len]
            if pkt.ptype is _ONE_RTT:
                # RFC 9000 §17.3.1
                first = 0x44 | pn_len - 1 if conn.key_phase else 0x40 | pn_len - 1
                if not conn.fixed_bit():
                    first &= 0xBF  # RFC 9287
                dcid = pkt.dcid
                if conn.plaintext_1rtt:
                    # disable_1rtt_encryption (kernel taglen 0)
                    data = join((_BYTE[first], dcid, tpn.to_bytes(pn_len, "big"), plain))
                else:
                    ct = key._aead.encrypt((key._iv_int ^ pn).to_bytes(12, "big"), plain,
                                           join((_BYTE[first], dcid,
                                                 tpn.to_bytes(pn_len, "big"))))
                    s = 4 - pn_len  # RFC 9001 §5.4.2 sample
                    mask = key.hp_mask(ct[s:s + _SAMPLE_LEN])
                    data = join((_BYTE[first ^ (mask[0] & 0x1F)], dcid,
                                 (tpn ^ from_bytes(mask[1:1 + pn_len], "big")).to_bytes(
                                     pn_len, "big"), ct))
            else:
                t = self._lh_cache[space]
                if t is not None and t[1] is conn.dcid and t[2] is conn.scid and (
                        t[0] == conn.version and t[4] is pkt.ptype and (
                            space != INITIAL or t[3] is conn.initial_token)):
                    first = t[5] | pn_len - 1
                    prefix = t[6]
                else:
                    first, prefix = self._long_prefix(conn, space, pkt.ptype)
                    first |= pn_len - 1
                if space == HANDSHAKE and not conn.fixed_bit():
                    first &= 0xBF  # RFC 9287
                # Length covers pn, payload and tag (RFC 9000 §17.2); a
                # fixed-size field lets the packer size packets up front
                length = pn_len + len(plain) + key.tag_len
                lenb = ((length | 0x4000).to_bytes(2, "big") if length < 0x4000
                        else (length | 0x80000000).to_bytes(4, "big"))
                ct = key._aead.encrypt((key._iv_int ^ pn).to_bytes(12, "big"), plain,
                                       join((_BYTE[first], prefix, lenb,
                                             tpn.to_bytes(pn_len, "big"))))
                s = 4 - pn_len  # RFC 9001 §5.4.2 sample
                mask = key.hp_mask(ct[s:s + _SAMPLE_LEN])
                data = join((_BYTE[first ^ (mask[0] & 0x0F)], prefix, lenb,
                             (tpn ^ from_bytes(mask[1:1 + pn_len], "big")).to_bytes(
                                 pn_len, "big"), ct))
            parts.append(data)
            conn.spaces[space].next_pn = pn + 1
            # RFC 9002 §2: in flight = ack-eliciting or padded
            eliciting = pkt.eliciting
            conn._on_packet_sent(space, SentPacket(pn, now, len(data), eliciting,
                                                   eliciting or pkt.padded, pkt.records,
                                                   pkt.largest_ack))
        return parts[0] if len(parts) == 1 else join(parts)


def _take_ctrl(ctrl: deque[Any], payload: list[bytes], records: list[tuple[Any, ...]],
               room: int) -> int:
    """Move the queued control frames that fit in ``room`` bytes into a packet,
    in order (the first that does not fit stops it); returns the room left."""
    while ctrl and room > 0:
        f = ctrl[0]
        enc = f.encode()
        if len(enc) > room:
            break
        ctrl.popleft()
        payload.append(enc)
        records.append((REC_CTRL, f))
        room -= len(enc)
    return room


def _add_range(ranges: list[list[int]], start: int, end: int) -> list[list[int]]:
    """``ranges`` (ascending, merged [start, end) pairs) with [start, end)
    inserted and overlapping or touching neighbours merged."""
    i = len(ranges)
    while i > 0 and ranges[i - 1][0] > start:
        i -= 1
    ranges.insert(i, [start, end])
    merged: list[list[int]] = []
    for r in ranges:
        if merged and r[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r[1])
        else:
            merged.append(r)
    return merged
