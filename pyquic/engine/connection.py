"""QuicConnection: the sans-I/O twin of the kernel's ``quic_sock`` (contracts §4).

It holds every per-socket setting and implements every SOL_QUIC option with
the kernel's semantics and errnos (``net/quic/socket.c``), and the protocol
engine behind them: packet protection and parsing, the handshake contract
(CRYPTO data per level in and out, secrets installed per level and
direction, transport parameter blobs), streams and flow control, ACKs, loss
detection and congestion control (RFC 9002), connection IDs, key update,
datagrams (RFC 9221) and connection close.  No sockets, threads or clocks:
``now`` (float seconds) is always passed in, and where the kernel would sleep
this raises ``OSError(EAGAIN)`` (or the kernel's errno) and lets the socket
layer wait.

Public API (contracts §4, stable)::

    QuicConnection(is_client, *, random=pyquic._rand.urandom)
    state: ConnState       # CLOSED, LISTENING, ESTABLISHING, ESTABLISHED, CLOSING, DRAINING
    inherit(listener); connect(remote, local, now); accept(datagram, remote, local, now)
    receive_datagram(data, remote, local, now); datagrams_to_send(now) -> [(bytes, addr)]
    next_timer() -> float | None; handle_timer(now); close(now); source_cids() -> set[bytes]
    send_handshake(level, data); set_crypto_secret(abi.CryptoSecret)
    get_transport_param_ext() -> bytes; set_transport_param_ext(data)
    recv(bufsize, peek=False) -> RecvItem | None; readable() -> bool
    send_stream(stream_id, data, flags, has_cmsg) -> int; send_datagram(data); writable()
    set_event/get_event, stream_open, stream_reset, stream_stop_sending,
    set_connection_id/get_connection_id, set_close_info/get_close_info, migrate,
    key_update, set_transport_param/get_transport_param, set_config/get_config,
    set_token/get_token, set_alpn/get_alpn, set_session_ticket/get_session_ticket
    local_addr, remote_addr

Extensions (documented deviations from contracts §4):

* ``close(now, errcode=None, app=True)``: optional arguments; also used by
  ``shutdown(SHUT_WR)``.  After ``close`` the connection is CLOSING and still
  emits the CONNECTION_CLOSE via ``datagrams_to_send``; the kernel's socket
  is CLOSED at once, so the socket layer should treat CLOSING and DRAINING
  as closed for the application.
* ``error: int`` - the errno the socket should report once the connection
  died (ETIMEDOUT on idle timeout, ECONNRESET on a peer close or stateless
  reset, EPROTO for a protocol error), 0 otherwise.
* ``is_closed`` (CLOSED/CLOSING/DRAINING), ``handshake_confirmed``,
  ``peer_transport_params`` (decoded, or None), ``rtt`` / ``cc`` (cong.py).
* ``send_stream`` also accepts ``MSG_MORE`` in ``flags`` (cork, as the kernel).
* ``migrate(local, now=None)`` and ``set_connection_id`` need ESTABLISHED.
* ``datagrams_to_send_from(now) -> [(bytes, dest addr, source addr)]``: the
  same datagrams with the local address each must leave from.  Calling it
  (instead of ``datagrams_to_send``) switches the connection to per-datagram
  addressing (``per_path_io``): ``migrate`` then probes the new local address
  (PATH_CHALLENGE from it, with an unused peer connection ID, EAGAIN if there
  is none) and only moves ``local_addr`` once PATH_RESPONSE arrives; path
  probes are answered from the address they came to; a server moves to its
  preferred address when the client sends non-probing packets there.
* ``early_data_rejected() -> int``: client; the TLS layer saw 0-RTT refused:
  unacknowledged 0-RTT packets are declared lost now and their stream data
  is resent in 1-RTT packets (otherwise loss detection recovers it later).
* ``static_key`` (32 bytes): seals NEW_TOKEN / Retry tokens and derives the
  stateless reset tokens of our connection IDs; ``inherit`` copies the
  listener's, so ``pyquic.engine.endpoint.stateless_response(datagram,
  remote, local, now, listener)`` recognises them for datagrams that match
  no connection (Retry, Version Negotiation, Stateless Reset).
* ``retry_scid``, ``token_validated``, ``original_version``, ``plaintext_1rtt``.
* Flush decisions and deferred work, for a socket layer that wants a short
  request/response path: ``receive_datagrams(datagrams, remote, local, now)``
  (a GRO batch); ``has_output(now)`` (a flush would send something or move
  a timer); ``output_due(now)`` (something must go out now, not merely with
  the application's next send: a due ACK, a control frame, a probe, a
  PATH_RESPONSE); ``read_output`` (bool: ``recv`` queued a flow-control
  update; the caller clears it when it flushes for it); ``settle() -> bool``:
  the fast receive path leaves the ACK of a packet carrying ACK + in-order
  STREAM unprocessed until the reply left (RTT sampled from its arrival);
  ``settle`` processes it and says whether that queued something to send (a
  loss, RFC 9002 §6.1).  It runs by itself before anything that reads the
  loss-recovery state (``next_timer``, which is then due at once if a
  retransmission was queued, ``handle_timer``, ``has_output``, the next
  receive, a full send buffer or window); a socket layer calls it after
  sending.
* Version Negotiation restart (client): ``hold_initial_after_vn`` (bool, set
  by a VN-aware TLS driver before ``connect``): after a VN the stale
  ClientHello is dropped instead of resent and ``initial_restart_pending``
  becomes True; ``version_negotiated`` (bool); ``restart_initial(data)``
  replaces the Initial CRYPTO stream with a new ClientHello built on a fresh
  ``get_transport_param_ext()`` (which now names the new version).
* Close info (``get_close_info``) is filled as the kernel does: the peer's
  CONNECTION_CLOSE (code, frame type as u8, phrase); a local transport error
  (code, frame type, and - unlike the kernel, which sends no phrase - the
  reason text we send); close during the handshake records
  APPLICATION_ERROR.  Idle timeout (0, 0, "idle timeout"), stateless reset
  (CRYPTO_ERROR, 0, "stateless reset") and a VN without common version
  (VERSION_NEGOTIATION_ERROR, 0, "no common version") set a phrase the kernel
  does not, so callers can print a reason.

Stream events (inqueue.c / frame.c): RECV_RECV on a stream's first data,
RECV_SIZE_KNOWN only for a FIN that arrives out of order, RECV_RECVD once all
data is queued, RECV_RESET_RECVD on RESET_STREAM (the stream's unread data is
purged from the receive queue); SEND_RECVD (no final size, as the kernel),
SEND_RESET_SENT only on a peer STOP_SENDING, SEND_RESET_RECVD on the ACK of
our RESET_STREAM.  After STOP_SENDING, arriving data of that stream is
discarded (its credit returned) and raises no RECV_RECVD, as the kernel
(frame.c skips STREAM frames once ``recv.stop_sent``); data queued before
stays readable.  Old 1-RTT receive keys are dropped 3 PTO after the peer's
key phase change (RFC 9001 §6.5); AEAD limits (§6.6) are not enforced.
``key_update`` fails with EINVAL (kernel crypto.c ``key_pending``) after any
key update, ours or the peer's, until a packet in the new phase arrives at
least 2 PTO after our first packet under the new keys;
``key_update_pending`` (bool) tells whether it would fail now.

Address validation (RFC 9000 §8.1): the endpoint helper sends Retry when the
listener has ``validate_peer_address``; ``accept`` opens the token of the
client's Initial (a Retry token restores the original DCID for the
transport parameters and makes the Retry's SCID ours; a valid NEW_TOKEN or
Retry token lifts the anti-amplification limit).  The client follows one
Retry (integrity tag checked, v1 and v2), restarts its Initial with the
token under keys from the new DCID, and checks original/retry source CIDs
(§7.3).  NEW_TOKEN carries a sealed token bound to the client's host.

Versions: CONFIG.version picks the client's first version; both sides send
version_information (RFC 9368).  A server whose CONFIG.version is another
compatible version the client offers upgrades to it when it gets the
client's parameters before handing out its own (FakeHandshake / libquic
order); the client follows an Initial of an offered version once it
decrypts, at any time while it has Initial keys (the server may have ACKed
the ClientHello in the old version first; kernel packet.c), once.  A client drops the attempt with EPROTONOSUPPORT on a Version
Negotiation with no common version, or restarts its Initial in a common one
(downgrade checked against the server's version_information).

Other: grease_quic_bit (RFC 9287) both ways; DPLPMTUD with PING+PADDING
probes (binary search between the current size and the peers' max UDP
payload, 3 tries per size, lost probes no congestion signal, new search
after 30 probe intervals) when plpmtud_probe_interval is set; persistent
congestion (RFC 9002 §7.6); disable_1rtt_encryption as the kernel does it
(both sides set it: 1-RTT packets in clear, no header protection); peer
address changes: new path amplification limited until validated, congestion
state kept on a NAT rebinding (same host), reset otherwise, fresh peer CID
when the peer moved to a new CID, back to the old path if the new one fails
validation; the client moves to the server's
preferred_address after confirmation (probe, then switch), picking it by
``family`` (the socket's AF_INET / AF_INET6, set by the socket layer before
connect; kernel family.c: AF_INET6 takes the IPv6 address, else the IPv4
one; AF_INET the IPv4 one; None: the current remote's family only).  A new
path is probed with PATH_CHALLENGE every max(2 PTO, 1.5 s), 4 times at most
(kernel timer.c), and a PATH_RESPONSE to any of those challenges validates
it.

Behaviour notes: the default datagram size is 1452 bytes (``path.DEFAULT_PMTU``;
the kernel uses the route MTU), which makes the kernel's datagram limit hold
(max_datagram_frame_size 1400 -> 1368-byte payloads).  0-RTT: an EARLY send
secret on the client makes stream data go out in 0-RTT packets; the server
holds 0-RTT stream data until its APP receive key is in (kernel early_list).
Local migration (``migrate`` after the handshake) switches ``local_addr`` at
once and validates the path with PATH_CHALLENGE; a peer's address change on
its highest-numbered non-probing 1-RTT packet (RFC 9000 §9.3) is followed and
validated, except, on a client that moved to the preferred address, the
server's original address (the server sends from it until it sees the client
there, §9.6.3); both raise CONNECTION_MIGRATION when PATH_RESPONSE arrives.
A server expects its TLS driver to install the APP receive secret after the
client's Finished (as libquic does): it then confirms the handshake, stops
sending Handshake packets and sends NEW_TOKEN and HANDSHAKE_DONE.

Fast paths (performance; same behaviour as the general code, which they
fall back to for anything unusual): a 1-RTT datagram with one STREAM frame
of the only stream with data (plus a piggybacked ACK) is built and sealed in
``OutQueue._build_stream_burst`` (a run of them per call, with the sent-packet,
window and pacer bookkeeping inline); an ACK plus control frames (flow-control
updates) in ``OutQueue._build_ctrl_fast``; a GRO batch of datagrams enters
through ``receive_datagrams``; a 1-RTT packet on the current path and key
phase whose payload is one in-order STREAM frame (optionally after an ACK)
goes straight to the receive queue (``_receive_short_fast``; an
out-of-order one is buffered by its stream there too, and an ACK-only packet
is handled there as well); after such a
packet the flow-control updates, ACK timer and idle timer are brought up to
date once per batch by ``_flush_rx`` (run by ``datagrams_to_send``,
``next_timer`` and ``handle_timer``); ``datagrams_to_send`` returns at once
when nothing can be sent; an ACK-only 1-RTT datagram is built by
``OutQueue._build_ack_fast``; ACKed STREAM ranges of consecutive packets are
acknowledged as one range.

Peer error codes are 62-bit, the kernel ABI's errcode fields u32: events and
the close info carry the code truncated to 32 bits (frame.c assigns the u64
to the u32 field).  RETIRE_CONNECTION_ID frames waiting to be sent are
bounded (RFC 9000 §5.1.2): more than 4x our active_connection_id_limit
queued closes with CONNECTION_ID_LIMIT_ERROR.

Not implemented: ECN; retransmitting 0-RTT in the original
version after a compatible upgrade; without ``hold_initial_after_vn`` the
ClientHello is resent as is after Version Negotiation (as the kernel does;
its version_information names the old version, so an RFC 9368 server
refuses it).
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import socket as _socket_consts  # AF_* constants only (sans-I/O)
import weakref
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidTag

from .. import abi
from .._hmac import HmacKey
from .._rand import urandom
from ..abi import CryptoLevel, EventType, StreamState
from . import frame as fr
from .common import Buffer, BufferReadError, decode_varint
from .cong import Pacer, RttEstimator, new_congestion_control
from .connid import RESET_TOKEN_LEN, DestConnIdSet, SourceConnIdSet
from .crypto import PacketKey, hash_for_cipher, initial_keys
from .endpoint import TOKEN_NEW, TOKEN_RETRY, make_token, open_token, reset_token_key
from .errors import (
    APPLICATION_ERROR,
    CONNECTION_ID_LIMIT_ERROR,
    CONNECTION_REFUSED,
    CRYPTO_BUFFER_EXCEEDED,
    CRYPTO_ERROR,
    INTERNAL_ERROR,
    KEY_UPDATE_ERROR,
    NO_ERROR,
    PROTOCOL_VIOLATION,
    TRANSPORT_PARAMETER_ERROR,
    VERSION_NEGOTIATION_ERROR,
    CryptoError,
    QuicError,
)
from .inqueue import MSG_EOR, MSG_QUIC_NOTIFICATION, InQueue, RecvItem
from .outqueue import (
    _PN_MASK,
    APP,
    HANDSHAKE,
    INITIAL,
    REC_CTRL,
    REC_PING,
    REC_STREAM,
    OutQueue,
    SendBuffer,
)
from .packet import (
    SUPPORTED_VERSIONS,
    PacketError,
    PacketType,
    decode_packet_number,
    decrypt_payload,
    encode_short_header,
    parse_header,
    protect,
    remove_header_protection,
    verify_retry,
)
from .path import Addr, AltState, Path, PathGroup
from .pnspace import PnSpace, SentPacket
from .stream import _R_RECV, _S_SEND, _S_SENT, QuicStreamTable
from .timer import TimerKind, Timers
from .transport_param import PreferredAddress, TransportParameters, VersionInformation

__all__ = ["ConnState", "QuicConnection", "RecvItem"]

REC_PMTU = REC_PING  # a PMTU probe carries only PING + PADDING

MSG_MORE = 0x8000
MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000
MSG_WAITALL = 0x100
MSG_BATCH = 0x40000
_NEW, _FIN, _UNI, _STREAM_DONTWAIT, _SNDBLOCK = 0x400, 0x200, 0x800, 0x10000, 0x2000
_STREAM_FLAGS = _NEW | _FIN | _UNI | _STREAM_DONTWAIT | _SNDBLOCK
_DATAGRAM = 0x1000
_SEND_FLAGS = (_STREAM_FLAGS | MSG_BATCH | MSG_MORE | MSG_DONTWAIT | MSG_NOSIGNAL
               | MSG_WAITALL | _DATAGRAM)

# kernel defaults (protocol.c quic_default_param, common.h, timer.h ...)
DEF_MAX_UDP_PAYLOAD = 65527
DEF_ACK_DELAY_EXPONENT = 3
DEF_MAX_ACK_DELAY = 25000  # us
DEF_ACTIVE_CID_LIMIT = 7
DEF_IDLE_TIMEOUT = 30_000_000  # us
DEF_MAX_DATA = 65535 * 32
DEF_MAX_STREAM_DATA = 65535 * 16
DEF_STREAMS = 100
MAX_STREAMS = 4096
MIN_UDP_PAYLOAD = 1200
MAX_UDP_PAYLOAD = 65527
MAX_ACK_DELAY_EXPONENT = 20
MAX_ACK_DELAY = 16384 * 1000
CONN_ID_LEAST, CONN_ID_LIMIT = 2, 8
MIN_IDLE_TIMEOUT = 1_000_000
MIN_PMTU = 1200
RTT_INIT, RTT_MIN, RTT_MAX = 333_000, 1000, 6_000_000
MIN_PROBE_TIMEOUT = 5_000_000
MIN_PATH_TIMEOUT = 1_500_000
PMTUD_RAISE_TIMER_FACTOR = 30
ALPN_MAX_LEN = 128
TOKEN_MAX_LEN = 120
TICKET_MIN_LEN, TICKET_MAX_LEN = 64, 4096
TP_EXT_MAX_LEN = 512
S32_MAX = 0x7FFFFFFF
_U32 = 0xFFFFFFFF
_VARINT_MASK = (0, 0x3F, 0x3FFF, 0, 0x3FFFFFFF, 0, 0, 0, 0x3FFFFFFFFFFFFFFF)  # the kernel ABI's error code fields are u32 (frame.c truncates)
# RFC 9000 §5.1.2: RETIRE_CONNECTION_ID frames waiting to be sent, at most this
# many times our active_connection_id_limit (then CONNECTION_ID_LIMIT_ERROR)
RETIRE_PENDING_FACTOR = 4
CRYPTO_RECV_LIMIT = 64 * 1024  # per level, before CRYPTO_BUFFER_EXCEEDED
CID_LEN = 8
SNDBUF_MIN = 64 * 1024
BACKLOG_MAX = 128
MAX_PATH_RETRIES = 3  # PATH_CHALLENGE resends on a new path (kernel QUIC_MAX_ALT_PROBES)
TICKET_KEY_LEN = 64

_PROBING_FRAMES = frozenset((fr.PaddingFrame, fr.PathChallengeFrame, fr.PathResponseFrame,
                             fr.NewConnectionIdFrame))
_LEVEL_SPACE: dict[int, int] = {CryptoLevel.INITIAL: INITIAL, CryptoLevel.HANDSHAKE: HANDSHAKE,
                CryptoLevel.APP: APP, CryptoLevel.EARLY: APP}
_SPACE_LEVEL = (CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP)
# enum members as module constants for the handshake paths (a class
# attribute load of an Enum costs several times a global load on 3.11)
_PT_INITIAL, _PT_HANDSHAKE = PacketType.INITIAL, PacketType.HANDSHAKE
_PT_ZERO_RTT, _PT_ONE_RTT = PacketType.ZERO_RTT, PacketType.ONE_RTT
_LV_EARLY = CryptoLevel.EARLY
_SEND_LEVELS = (CryptoLevel.INITIAL, CryptoLevel.HANDSHAKE, CryptoLevel.APP)
_SECRET_LEVELS = (CryptoLevel.APP, CryptoLevel.EARLY, CryptoLevel.HANDSHAKE)
_PTYPE_SPACE = {PacketType.INITIAL: INITIAL, PacketType.HANDSHAKE: HANDSHAKE,
                PacketType.ZERO_RTT: APP, PacketType.ONE_RTT: APP}


class ConnState(IntEnum):
    CLOSED = 0
    LISTENING = 1
    ESTABLISHING = 2
    ESTABLISHED = 3
    CLOSING = 4
    DRAINING = 5


_CLOSED_STATES = (ConnState.CLOSED, ConnState.CLOSING, ConnState.DRAINING)
_NO_RECEIVE_STATES = (ConnState.CLOSED, ConnState.LISTENING, ConnState.DRAINING)
_ENDED_STATES = (ConnState.CLOSED, ConnState.DRAINING)
_CLOSED, _LISTENING, _ESTABLISHING = ConnState.CLOSED, ConnState.LISTENING, ConnState.ESTABLISHING
_ESTABLISHED, _CLOSING, _DRAINING = ConnState.ESTABLISHED, ConnState.CLOSING, ConnState.DRAINING


def _weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (bound) as a callable that does not keep its object alive: a
    part of the connection calling back into it then forms no reference cycle,
    so a closed connection is freed at once rather than by the cyclic GC."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        return ref()(*args)  # type: ignore[misc]

    return call


def _oserr(code: int, msg: str = "") -> OSError:
    return OSError(code, msg or os.strerror(code))


class _CryptoRecv:
    """Reassembly of one level's CRYPTO stream."""

    __slots__ = ("frags", "offset")

    def __init__(self) -> None:
        self.offset = 0
        self.frags: dict[int, bytes] = {}

    def push(self, offset: int, data: bytes) -> bytes:
        """Add a fragment; return newly in-order bytes."""
        end = offset + len(data)
        if end <= self.offset:
            return b""
        if end - self.offset > CRYPTO_RECV_LIMIT:
            raise QuicError(CRYPTO_BUFFER_EXCEEDED, 0x06, "crypto buffer exceeded")
        if offset > self.offset:
            old = self.frags.get(offset)
            if old is None or len(old) < len(data):
                self.frags[offset] = data
            return b""
        out = [data[self.offset - offset:]]
        self.offset = end
        while self.frags:
            progressed = False
            for off in sorted(self.frags):
                if off > self.offset:
                    break
                d = self.frags.pop(off)
                e = off + len(d)
                if e > self.offset:
                    out.append(d[self.offset - off:])
                    self.offset = e
                progressed = True
            if not progressed:
                break
        return b"".join(out)


class QuicConnection:
    """One QUIC connection with the socket-level semantics of the kernel."""

    def __init__(self, is_client: bool, *, random: Callable[[int], bytes] = urandom) -> None:
        self.is_client = is_client
        self._random = random
        self.state = _CLOSED
        self.error = 0
        # --- settings (CONFIG option)
        self.version = int(abi.Version.V1)
        self.cfg_version = 0
        self.plpmtud_interval = 0
        self.initial_srtt = RTT_INIT
        self.payload_cipher_type = 0
        self.cong_algo = int(abi.CongAlgo.RENO)
        self.validate_peer_address = 0
        self.stream_data_nodelay = 0
        self.receive_session_ticket = 0
        self.certificate_request = 0
        self.keepalive_interval = 0
        # --- transport parameters (TRANSPORT_PARAM option), kernel units (us)
        self.local_tp: dict[str, int] = {
            "disable_active_migration": 0, "grease_quic_bit": 0, "stateless_reset": 0,
            "disable_1rtt_encryption": 0, "disable_compatible_version": 0,
            "active_connection_id_limit": DEF_ACTIVE_CID_LIMIT,
            "ack_delay_exponent": DEF_ACK_DELAY_EXPONENT,
            "max_datagram_frame_size": 0, "max_udp_payload_size": DEF_MAX_UDP_PAYLOAD,
            "max_idle_timeout": DEF_IDLE_TIMEOUT, "max_ack_delay": DEF_MAX_ACK_DELAY,
            "max_streams_bidi": DEF_STREAMS, "max_streams_uni": DEF_STREAMS,
            "max_data": DEF_MAX_DATA, "max_stream_data_bidi_local": DEF_MAX_STREAM_DATA,
            "max_stream_data_bidi_remote": DEF_MAX_STREAM_DATA,
            "max_stream_data_uni": DEF_MAX_STREAM_DATA,
        }
        self.remote_tp: dict[str, int] = {k: 0 for k in self.local_tp}
        self.peer_transport_params: TransportParameters | None = None
        self.alpn = b""
        self.token = b""  # client: token for the next Initial / received NEW_TOKEN
        self.ticket = b""
        self.ticket_ready = False
        self.token_pending = False
        self.close_errcode = 0
        self.close_frame = 0
        self.close_phrase = b""
        # --- protocol state
        self.streams = QuicStreamTable(is_client)
        self._apply_local_stream_params()
        self.spaces = [PnSpace(INITIAL, immediate=True), PnSpace(HANDSHAKE, immediate=True),
                       PnSpace(APP)]
        self._send_keys: list[PacketKey | None] = [None, None, None]
        self._recv_keys: list[PacketKey | None] = [None, None, None]
        self._early_send: PacketKey | None = None
        self._early_recv: PacketKey | None = None
        self._crypto_recv = [_CryptoRecv(), _CryptoRecv(), _CryptoRecv()]
        self.key_phase = 0
        self._key_pending = False
        self._next_recv_key: PacketKey | None = None
        self._prev_recv_key: PacketKey | None = None
        self._prev_key_until = 0.0  # RFC 9001 §6.5: old receive keys kept until then
        self._key_phase_start_pn = -1  # first PN received in the current phase
        self._key_update_sent_pn = -1
        # kernel crypto.c key_pending: after any key update (ours or the
        # peer's) a new local one is refused until a packet in the new phase
        # arrives 2 PTO after our first packet under the new keys
        self._ku_hold = False
        self._ku_sent_at: float | None = None
        self.use_early = False
        self.outq = OutQueue()
        self.inq = InQueue()
        self.timers = Timers()
        self.paths = PathGroup(random)
        self.rtt = RttEstimator(self.initial_srtt / 1e6)
        self.cc = new_congestion_control(self.cong_algo, self.paths.max_datagram_size())
        self.pacer = Pacer(self.paths.max_datagram_size())
        self.pto_count = 0
        # static secret: address-validation tokens and stateless reset tokens
        # (endpoint.py); a listener's is inherited by its accepted connections
        self.static_key = random(32)
        # (static key, its reset-token HMAC key), built on first use
        self._reset_hk: tuple[bytes, HmacKey] | None = None
        self.source = SourceConnIdSet(random, CID_LEN,
                                      token_for=_weak_method(self._reset_token_for))
        self.dest = DestConnIdSet(DEF_ACTIVE_CID_LIMIT)
        self.scid = b""
        self.dcid = b""
        self.orig_dcid = b""
        self.peer_initial_scid: bytes | None = None
        self.initial_token = b""
        self.handshake_confirmed = False
        self._handshake_done_pending = False
        self._backlog: list[tuple[bytes, Addr, Addr]] = []
        self._replaying = False  # replaying _backlog: bytes already counted
        self._idle_timeout = DEF_IDLE_TIMEOUT / 1e6
        self._last_activity = 0.0
        self._eliciting_since_recv = False
        self._close_sent_at = -1.0
        self._close_recv_count = 0
        self._now = 0.0
        self._send_cork = False
        self.local_ack_delay_exponent = DEF_ACK_DELAY_EXPONENT
        self._ticket_secret = random(32)
        self._migration_local = -1  # pending migration: 1 local, 0 peer
        # address validation and version negotiation state
        self.retry_scid: bytes | None = None  # SCID of the Retry (both sides)
        self._initial_dcid = b""  # DCID the Initial keys derive from
        self._vn_done = False  # client reacted to a Version Negotiation
        # client: after a VN, drop the old ClientHello and wait for
        # restart_initial() instead of resending it (set by a VN-aware driver)
        self.hold_initial_after_vn = False
        self.initial_restart_pending = False
        self.original_version = 0  # version of the client's first Initial
        self._version_followed = False  # client: followed a compatible upgrade
        self._old_initial: tuple[int, PacketKey] | None = None  # server after upgrade
        self.token_validated = False  # server: the client's token proved its address
        self._grease_pool = 0
        # DPLPMTUD (RFC 8899, RFC 9000 §14.3): search between the confirmed
        # size and the largest the peer and we accept
        self._pmtu_low = 0
        self._pmtu_high = 0
        self._pmtu_probe_size = 0  # size of the probe in flight, 0 if none
        self._pmtu_fails = 0
        self._pmtu_pending = False  # a probe should go out now
        self._pmtu_retry_size = 0
        # migration with per-datagram addresses (datagrams_to_send_from)
        self.per_path_io = False
        # the socket's address family (AF_INET / AF_INET6), set by the socket
        # layer before connect: it picks the server's preferred address as
        # the kernel does (family.c); None = the current remote's family
        self.family: int | None = None
        self._rx_addr: tuple[Addr, Addr] = (None, None)
        self._rx_nonprobing = False
        self._peer_last_dcid = b""  # DCID of the peer's last non-probing packet
        self._path_kind = ""  # probe on path 1: "local", "preferred"
        self._path_responses: list[tuple[bytes, Addr, Addr]] = []
        self._probe_out: list[tuple[bytes, Addr, Addr]] = []
        self._pref_cid: Any = None  # server: the ConnectionId of preferred_address
        self.plaintext_1rtt = False  # disable_1rtt_encryption negotiated
        self._pref_local: Addr = None  # server: our preferred address
        # client: the server address it left for the preferred address, until
        # the server's packets come from the new one (RFC 9000 §9.6.3)
        self._left_remote: Addr = None
        self._tp_given = False  # our transport parameters were handed out
        self._fallback: tuple[Addr, Addr] | None = None
        self._early_pns: set[int] = set()  # 0-RTT packets sent (client)
        self._retire_queued = 0  # RETIRE_CONNECTION_ID frames ever queued
        self._rx_dirty = False  # the fast receive path deferred work (_flush_rx)
        # loss/ACK timers to re-arm before they are next read (_rearm_timers):
        # once per flush, after the datagrams went out, not once per ACK
        self._timers_stale = False
        self._idle_stale = False  # the idle timer too (from _last_activity)
        # the peer's ACK of a request/response packet, processed once the
        # reply left (settle): (frame, arrival time)
        self._ack_later: tuple[fr.AckFrame, float] | None = None
        self._losses = 0  # ACK-driven loss detections that found lost packets
        #: set when ``recv`` queued a flow-control update (MAX_STREAM_DATA,
        #: MAX_DATA) to send; the socket layer clears it when it flushes for it
        self.read_output = False
        self._rx_dcid_seq: int | None = None  # seq of the DCID of the packet in hand

    # ================================================================ helpers
    @property
    def local_addr(self) -> Addr:
        return self.paths.local

    @property
    def remote_addr(self) -> Addr:
        return self.paths.remote

    @property
    def is_closed(self) -> bool:
        return self.state in _CLOSED_STATES

    def send_key(self, space: int) -> PacketKey | None:
        """Key used to send in ``space`` (0-RTT uses the EARLY key)."""
        key = self._send_keys[space]
        if key is None and space == APP and self.use_early:
            return self._early_send
        return key

    def bytes_in_flight(self) -> int:
        return self.cc.bytes_in_flight

    def pacing_delay(self, now: float) -> float | None:
        return self.pacer.next_send_time(now)

    def arm_pacing(self, when: float) -> None:
        self.timers.set(TimerKind.PACE, when)

    def has_stream_data(self) -> bool:
        return self.streams.has_sendable()

    def fixed_bit(self) -> int:
        """The QUIC bit for our next packet: random once the peer advertised
        grease_quic_bit (RFC 9287 §3), else 1."""
        if not self.remote_tp["grease_quic_bit"]:
            return 1
        pool = self._grease_pool
        if pool <= 1:
            pool = int.from_bytes(self._random(8), "big") | (1 << 64)
        self._grease_pool = pool >> 1
        return pool & 1

    def _event(self, ev: Any) -> None:
        etype = int(ev.TYPE)
        if self.inq.events & (1 << etype):  # packed only when enabled
            self.inq.push_event(etype, ev.pack())

    def _apply_local_stream_params(self) -> None:
        tp = self.local_tp
        self.streams.set_params(
            False, max_data=tp["max_data"],
            max_stream_data_bidi_local=tp["max_stream_data_bidi_local"],
            max_stream_data_bidi_remote=tp["max_stream_data_bidi_remote"],
            max_stream_data_uni=tp["max_stream_data_uni"],
            max_streams_bidi=tp["max_streams_bidi"], max_streams_uni=tp["max_streams_uni"])
        self.local_ack_delay_exponent = tp["ack_delay_exponent"]
        for sp in self.spaces if hasattr(self, "spaces") else ():
            if sp.level == APP:
                sp.max_ack_delay = tp["max_ack_delay"] / 1e6
        if hasattr(self, "dest"):
            self.dest.max_count = tp["active_connection_id_limit"]

    # ============================================================ lifecycle
    def listen(self) -> None:
        """Mark this connection object as a listener's settings holder."""
        self.state = _LISTENING

    def inherit(self, listener: QuicConnection) -> None:
        """Copy config, transport parameters, ALPN and events (accept)."""
        self.set_config(listener.get_config())
        self.local_tp = dict(listener.local_tp)
        self._apply_local_stream_params()
        self.alpn = listener.alpn
        self.inq.events = listener.inq.events
        self.ticket = listener.ticket
        self._ticket_secret = listener._ticket_secret
        self.static_key = listener.static_key

    def connect(self, remote: Addr, local: Addr, now: float) -> None:
        """Client: pick connection IDs, install the Initial keys (socket.c quic_connect)."""
        if self.state != _CLOSED or not self.is_client:
            raise _oserr(errno.EINVAL)
        self._now = now
        self.paths.set_addresses(0, local, remote)
        self.paths.validate()  # a client is never amplification limited
        self.dcid = self._random(CID_LEN)
        self.orig_dcid = self.dcid
        self.dest.add(self.dcid, 0)
        self.scid = self._random(CID_LEN)
        self.source.add(self.scid, 0)
        if self.cfg_version:
            self.version = self.cfg_version
        self.original_version = self.version
        self._install_initial(self.orig_dcid)
        self.initial_token = self.token
        self.state = _ESTABLISHING
        self._start_timers(now)

    def accept(self, datagram: bytes, remote: Addr, local: Addr, now: float) -> None:
        """Server: set up from a client's first Initial, then process it."""
        if self.is_client or self.state not in (_CLOSED, _LISTENING):
            raise _oserr(errno.EINVAL)
        try:
            hdr = parse_header(datagram, 0, CID_LEN)
        except PacketError as e:
            raise _oserr(errno.EINVAL, f"not a QUIC Initial: {e}") from None
        if hdr.packet_type != PacketType.INITIAL:
            raise _oserr(errno.EINVAL, "not a QUIC Initial")
        self._now = now
        self.paths.set_addresses(0, local, remote)
        self.version = self.original_version = hdr.version
        self.orig_dcid = hdr.dcid
        if hdr.token:
            # RFC 9000 §8.1.3: a valid token validates the address; an
            # invalid one is ignored (the endpoint helper sends Retry first)
            opened = open_token(self.static_key, hdr.token, remote, now)
            if opened is not None:
                kind, odcid = opened
                if kind == TOKEN_RETRY:
                    self.orig_dcid = odcid
                    self.retry_scid = hdr.dcid
                self.token_validated = True
                self.paths.validate()
        # after a Retry the client already uses the Retry's SCID: keep it
        self.scid = hdr.dcid if self.retry_scid else self._random(CID_LEN)
        self.source.add(self.scid, 0)
        self.dcid = hdr.scid
        self.dest.add(self.dcid, 0)
        self.peer_initial_scid = hdr.scid
        self._install_initial(hdr.dcid)
        self.state = _ESTABLISHING
        self._start_timers(now)
        self.receive_datagram(datagram, remote, local, now)

    def _install_initial(self, dcid: bytes) -> None:
        self._initial_dcid = dcid
        send, recv = initial_keys(self.version, dcid, self.is_client)
        self._send_keys[INITIAL] = send
        self._recv_keys[INITIAL] = recv

    def _start_timers(self, now: float) -> None:
        self._last_activity = now
        self.timers.set(TimerKind.IDLE, now + self._idle_timeout)
        if self.keepalive_interval:
            self.timers.set(TimerKind.KEEPALIVE, now + self.keepalive_interval / 1e6)

    def source_cids(self) -> set[bytes]:
        """Our connection IDs, for the endpoint's demultiplexer."""
        return self.source.cids() | ({self.orig_dcid} if not self.is_client and
                                     self.orig_dcid else set())

    # =========================================================== handshake
    def send_handshake(self, level: int, data: bytes) -> None:
        """Queue a TLS handshake message at ``level`` (sendmsg + HANDSHAKE_INFO)."""
        if self.state in (_CLOSED, _LISTENING) or self.is_closed:
            raise _oserr(errno.EPIPE)
        if level not in _SEND_LEVELS:
            raise _oserr(errno.EINVAL, "bad crypto level")
        space = _LEVEL_SPACE[level]  # (keys are IntEnum: an int finds them)
        if self._send_keys[space] is None:
            raise _oserr(errno.EINVAL, "crypto keys not ready")
        if not data:
            raise _oserr(errno.EMSGSIZE)
        self.outq.crypto[space].write(bytes(data))

    def set_crypto_secret(self, secret: abi.CryptoSecret) -> None:
        """Install one traffic secret (QUIC_SOCKOPT_CRYPTO_SECRET)."""
        if self.state != _ESTABLISHING:
            raise _oserr(errno.EINVAL)
        level = secret.level
        if level not in _SECRET_LEVELS:
            raise _oserr(errno.EINVAL, "bad crypto level")
        try:
            hlen = 48 if hash_for_cipher(secret.type) == "sha384" else 32
            key = PacketKey(secret.type, bytes(secret.secret[:hlen]), self.version)
        except (ValueError, KeyError):
            raise _oserr(errno.EINVAL, "bad cipher") from None
        if level == _LV_EARLY:
            if secret.send:
                self._early_send = key
                # stream data may now go out as 0-RTT (socket.c data_level)
                self.use_early = self.is_client and self._send_keys[APP] is None
            else:
                self._early_recv = key
                self._replay_backlog()
            return
        space = _LEVEL_SPACE[level]  # (keys are IntEnum: an int finds them)
        if secret.send:
            self._send_keys[space] = key
            if space == APP:
                self.use_early = False
        else:
            self._recv_keys[space] = key
            if space == APP:
                self._next_recv_key = key.next_phase()
                self.inq.release_early()
        if space == HANDSHAKE:
            if not secret.send:
                self._replay_backlog()
            return
        if not secret.send:
            self._replay_backlog()
            if self.is_closed:
                raise _oserr(errno.EPIPE)
        if self._send_keys[APP] is not None and self._recv_keys[APP] is not None:
            self._on_established()

    def _on_established(self) -> None:
        self.state = _ESTABLISHED
        self.use_early = False
        if not self.is_client:
            # RFC 9001 §4.9.2: the server's handshake is confirmed now.
            self.handshake_confirmed = True
            self._drop_space(HANDSHAKE, keep_recv=True)
            self.outq.push_ctrl(APP, fr.NewTokenFrame(self._new_token()))
            self.outq.push_ctrl(APP, fr.HandshakeDoneFrame())
            self._pmtu_start(self._now)
        self._issue_cids()

    def _new_token(self) -> bytes:
        """A NEW_TOKEN token bound to the client's address (endpoint.py)."""
        return make_token(self.static_key, TOKEN_NEW, self.paths.remote, self._now,
                          random=self._random)

    def _reset_token_for(self, cid: bytes) -> bytes:
        # == reset_token(self.static_key, cid), with the HMAC key set up once
        # per connection (about seven tokens per handshake)
        hk = self._reset_hk
        if hk is None or hk[0] is not self.static_key:
            hk = self._reset_hk = (self.static_key, reset_token_key(self.static_key))
        return hk[1].digest(cid)[:RESET_TOKEN_LEN]

    def _issue_cids(self) -> None:
        for c in self.source.issue():
            self.outq.push_ctrl(APP, fr.NewConnectionIdFrame(
                c.seq, c.retire_prior_to, c.cid, c.token))

    def _drop_space(self, space: int, keep_recv: bool = False) -> None:
        """Discard a space's keys and recovery state (RFC 9001 §4.9, RFC 9002 §6.4)."""
        pns = self.spaces[space]
        for p in pns.discard():
            if p.in_flight:
                self.cc.on_packet_discarded(p.size)
        self._send_keys[space] = None
        if not keep_recv:
            self._recv_keys[space] = None
        self.outq.discard_space(space)
        self.pto_count = 0
        self._set_loss_timer()

    def _replay_backlog(self) -> None:
        backlog, self._backlog = self._backlog, []
        self._replaying = True  # these bytes were counted when they arrived (RFC 9000 §8.1)
        try:
            for data, remote, local in backlog:
                self.receive_datagram(data, remote, local, self._now)
        finally:
            self._replaying = False

    # -------------------------------------------------- transport parameters
    def get_transport_param_ext(self) -> bytes:
        """Our transport parameters extension, encoded (RFC 9000 §18)."""
        if self.state != _ESTABLISHING:
            raise _oserr(errno.EINVAL)
        tp = self.local_tp
        p = TransportParameters(
            max_idle_timeout=tp["max_idle_timeout"] // 1000,
            max_udp_payload_size=tp["max_udp_payload_size"],
            initial_max_data=tp["max_data"],
            initial_max_stream_data_bidi_local=tp["max_stream_data_bidi_local"],
            initial_max_stream_data_bidi_remote=tp["max_stream_data_bidi_remote"],
            initial_max_stream_data_uni=tp["max_stream_data_uni"],
            initial_max_streams_bidi=tp["max_streams_bidi"],
            initial_max_streams_uni=tp["max_streams_uni"],
            ack_delay_exponent=tp["ack_delay_exponent"],
            max_ack_delay=tp["max_ack_delay"] // 1000,
            disable_active_migration=bool(tp["disable_active_migration"]),
            active_connection_id_limit=tp["active_connection_id_limit"],
            initial_source_connection_id=self.scid,
            max_datagram_frame_size=tp["max_datagram_frame_size"],
            grease_quic_bit=bool(tp["grease_quic_bit"]),
            disable_1rtt_encryption=bool(tp["disable_1rtt_encryption"]),
            version_information=VersionInformation(
                self.version, [self.version] + [v for v in SUPPORTED_VERSIONS
                                                if v != self.version]),
        )
        if not self.is_client:
            p.original_destination_connection_id = self.orig_dcid
            p.retry_source_connection_id = self.retry_scid
            if self.paths.pref_addr:
                p.preferred_address = self._preferred_address_param()
            if tp["stateless_reset"]:
                p.stateless_reset_token = self.source.active.token or None
        data = p.encode()
        if len(data) > TP_EXT_MAX_LEN:
            raise _oserr(errno.EINVAL)
        self._tp_given = True
        return data

    def _preferred_address_param(self) -> PreferredAddress | None:
        """Our preferred_address (RFC 9000 §9.6, §18.2) with connection ID seq 1."""
        addr = self.paths.paths[1].local
        if not isinstance(addr, tuple) or len(addr) < 2:
            return None
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return None
        if self._pref_cid is None:
            self._pref_cid = self.source.add(self._random(CID_LEN), 1)
        c = self._pref_cid
        v4 = ip.packed if ip.version == 4 else bytes(4)
        v6 = ip.packed if ip.version == 6 else bytes(16)
        return PreferredAddress(v4, addr[1] if ip.version == 4 else 0, v6,
                                addr[1] if ip.version == 6 else 0, c.cid, c.token)

    def _pick_preferred_address(self, pa: PreferredAddress, remote: tuple) -> Addr:
        """The preferred address our socket family takes (kernel family.c):
        AF_INET the IPv4 one; AF_INET6 the IPv6 one, else the IPv4 one.
        Unset ``family``: only the current remote's family."""
        v4: Addr = None
        if pa.ipv4_port and any(pa.ipv4_address):
            ip4 = ipaddress.IPv4Address(pa.ipv4_address)
            if not ip4.is_multicast:
                v4 = (str(ip4), pa.ipv4_port)
        v6: Addr = None
        if pa.ipv6_port:
            ip6 = ipaddress.IPv6Address(pa.ipv6_address)
            if not (ip6.is_unspecified or ip6.is_multicast or ip6.ipv4_mapped):
                scope = remote[3] if len(remote) == 4 and ip6.is_link_local else 0
                v6 = (str(ip6), pa.ipv6_port, 0, scope)
        fam = self.family
        if fam is None:
            return v4 if len(remote) == 2 else v6
        if fam == _socket_consts.AF_INET6:
            return v6 if v6 is not None else v4
        return v4

    def _use_preferred_address(self, now: float) -> None:
        """Client: probe the server's preferred address after confirmation
        and move there once validated (RFC 9000 §9.6.1)."""
        p = self.peer_transport_params
        pa = p.preferred_address if p is not None else None
        remote = self.paths.remote
        if pa is None or not isinstance(remote, tuple) or self.paths.challenge is not None:
            return
        target = self._pick_preferred_address(pa, remote)
        if target is None:
            return
        if target == remote:
            return
        if self.dest.find(1) is None:
            self.dest.add(pa.connection_id, 1, pa.stateless_reset_token)
        self.dest.alt = self.dest.find(1)
        self._start_path_probe(self.paths.local, target, now, "preferred")

    def set_transport_param_ext(self, data: bytes) -> None:
        """Decode, validate and apply the peer's transport parameters."""
        if self.state != _ESTABLISHING or len(data) > TP_EXT_MAX_LEN:
            raise _oserr(errno.EINVAL)
        try:
            p = TransportParameters.decode(bytes(data), self.is_client)
            self._check_peer_cids(p)
            self._negotiate_version(p)
        except QuicError as e:
            self._close_transport(e.error_code or TRANSPORT_PARAMETER_ERROR, 0, e.reason)
            raise _oserr(errno.EINVAL, e.reason) from None
        self.peer_transport_params = p
        self._apply_peer_params(p)

    def _check_peer_cids(self, p: TransportParameters) -> None:
        # RFC 9000 §7.3: authenticate the connection IDs of the handshake.
        if p.initial_source_connection_id is None:
            raise QuicError(TRANSPORT_PARAMETER_ERROR, None, "missing initial_source_cid")
        if self.peer_initial_scid is not None and \
                p.initial_source_connection_id != self.peer_initial_scid:
            raise QuicError(TRANSPORT_PARAMETER_ERROR, None, "initial_source_cid mismatch")
        if self.is_client:
            if p.original_destination_connection_id != self.orig_dcid:
                raise QuicError(TRANSPORT_PARAMETER_ERROR, None, "original_dcid mismatch")
            # RFC 9000 §7.3: retry_source_connection_id iff we processed a Retry
            if p.retry_source_connection_id != self.retry_scid:
                raise QuicError(TRANSPORT_PARAMETER_ERROR, None, "retry_source_cid mismatch")

    def _negotiate_version(self, p: TransportParameters) -> None:
        """Compatible version negotiation (RFC 9368 §4, kernel select_version)."""
        info = p.version_information
        if not self.is_client:
            if info is None:
                return
            # §4: the client's Chosen Version must be the one it used
            if info.chosen_version != self.version:
                raise QuicError(VERSION_NEGOTIATION_ERROR, None, "chosen version mismatch")
            pref = self.cfg_version
            # only before our parameters (whose Chosen Version is the version
            # in use) were handed out: libquic's order; otherwise stay put
            if pref and pref != self.version and pref in SUPPORTED_VERSIONS and \
                    pref in info.available_versions and not self._tp_given:
                self._change_version(pref)
            return
        if info is None:
            if self._vn_done:  # §4: downgrade protection needs the information
                raise QuicError(VERSION_NEGOTIATION_ERROR, None, "no version_information")
            return
        if info.chosen_version != self.version:
            raise QuicError(VERSION_NEGOTIATION_ERROR, None, "server chosen version mismatch")
        if self._vn_done:
            # §4: after a VN, the client would have picked the same version
            common = [v for v in info.available_versions if v in SUPPORTED_VERSIONS]
            if not common or self._pick_version(common) != info.chosen_version:
                raise QuicError(VERSION_NEGOTIATION_ERROR, None, "version downgrade")

    def _pick_version(self, offered: list[int]) -> int:
        """Our choice among ``offered``: the configured one, else the highest."""
        if self.cfg_version in offered and self.cfg_version in SUPPORTED_VERSIONS:
            return self.cfg_version
        return max(v for v in offered if v in SUPPORTED_VERSIONS)

    def _change_version(self, version: int) -> None:
        """Switch to a compatible version: new Initial keys from the same DCID."""
        old = self._recv_keys[INITIAL]
        if old is not None and not self.is_client:
            # the client keeps sending the original version until it sees ours
            self._old_initial = (self.version, old)
        self.version = version
        self._install_initial(self._initial_dcid)

    def _apply_peer_params(self, p: TransportParameters) -> None:
        r = self.remote_tp
        r["max_idle_timeout"] = p.max_idle_timeout * 1000
        r["max_udp_payload_size"] = p.max_udp_payload_size
        r["max_data"] = p.initial_max_data
        r["max_stream_data_bidi_local"] = p.initial_max_stream_data_bidi_local
        r["max_stream_data_bidi_remote"] = p.initial_max_stream_data_bidi_remote
        r["max_stream_data_uni"] = p.initial_max_stream_data_uni
        r["max_streams_bidi"] = min(p.initial_max_streams_bidi, MAX_STREAMS)
        r["max_streams_uni"] = min(p.initial_max_streams_uni, MAX_STREAMS)
        r["ack_delay_exponent"] = p.ack_delay_exponent
        r["max_ack_delay"] = p.max_ack_delay * 1000
        r["disable_active_migration"] = int(p.disable_active_migration)
        r["active_connection_id_limit"] = p.active_connection_id_limit
        r["max_datagram_frame_size"] = p.max_datagram_frame_size
        r["grease_quic_bit"] = int(p.grease_quic_bit)
        r["disable_1rtt_encryption"] = int(p.disable_1rtt_encryption)
        r["stateless_reset"] = int(p.stateless_reset_token is not None)
        # kernel (inqueue.c): both sides asked for it -> cleartext 1-RTT packets
        self.plaintext_1rtt = bool(self.local_tp["disable_1rtt_encryption"]
                                   and p.disable_1rtt_encryption)
        self._apply_remote_tp()
        if p.stateless_reset_token is not None and self.is_client:
            self.dest.set_token(0, p.stateless_reset_token)

    def _apply_remote_tp(self) -> None:
        r = self.remote_tp
        self.streams.set_params(
            True, max_data=r["max_data"],
            max_stream_data_bidi_local=r["max_stream_data_bidi_local"],
            max_stream_data_bidi_remote=r["max_stream_data_bidi_remote"],
            max_stream_data_uni=r["max_stream_data_uni"],
            max_streams_bidi=r["max_streams_bidi"], max_streams_uni=r["max_streams_uni"])
        self.rtt.max_ack_delay = r["max_ack_delay"] / 1e6
        self.source.max_count = max(CONN_ID_LEAST, min(r["active_connection_id_limit"] or 2,
                                                       CONN_ID_LIMIT))
        if r["max_udp_payload_size"]:
            self.paths.peer_max_udp_payload = r["max_udp_payload_size"]
        self.paths.disable_local_migration = bool(r["disable_active_migration"])
        local = self.local_tp["max_idle_timeout"]
        peer = r["max_idle_timeout"]
        # RFC 9000 §10.1: the smaller of the two non-zero values
        eff = min(x for x in (local, peer) if x) if (local or peer) else 0
        self._idle_timeout = eff / 1e6 if eff else 0.0
        if self._idle_timeout and self.timers.get(TimerKind.IDLE) is not None:
            self.timers.set(TimerKind.IDLE, self._last_activity + self._idle_deadline_span())
        elif not self._idle_timeout:
            self.timers.stop(TimerKind.IDLE)

    def _idle_deadline_span(self) -> float:
        return max(self._idle_timeout, 3 * self.rtt.pto())

    # ============================================================ receiving
    def receive_datagram(self, data: bytes, remote: Addr, local: Addr, now: float) -> None:
        """Process one UDP datagram from ``remote`` received on ``local``."""
        self._now = now
        if self._receive_fast(data, remote, local, now):
            return
        if self._ack_later is not None:
            self.settle()
        if self.state in _NO_RECEIVE_STATES:
            return
        if self.state == _CLOSING:
            self._closing_receive(now)
            return
        if not self._replaying:
            self.paths.on_received(len(data))
        off = 0
        n = len(data)
        dcid_len = len(self.scid) or CID_LEN
        processed = False
        short_ok = False
        self._rx_addr = (remote, local)
        self._rx_nonprobing = False
        short_dcid = b""
        short_newest = False
        grease = bool(self.local_tp["grease_quic_bit"])  # RFC 9287 §3
        while off < n:
            try:
                hdr = parse_header(data, off, dcid_len, allow_zero_fixed_bit=grease)
            except PacketError:
                break
            end = hdr.packet_end
            if hdr.packet_type == _PT_INITIAL and not self.is_client and n < 1200:
                break  # RFC 9000 §14.1: undersized Initial datagram
            largest = self.spaces[APP].largest_received
            try:
                if self._receive_packet(data, hdr, remote, local, now):
                    processed = True
                    if not hdr.is_long:
                        short_ok = True
                        short_dcid = hdr.dcid
                        short_newest = self.spaces[APP].largest_received > largest
            except QuicError as e:
                self._close_transport(e.error_code, e.frame_type or 0, e.reason)
                return
            except (ValueError, LookupError) as e:  # defensive: never crash the caller
                self._close_transport(PROTOCOL_VIOLATION, 0, f"malformed: {e}")
                return
            if self.state in _ENDED_STATES:
                return
            off = end
            if not hdr.is_long:
                break
        if not processed and n >= 21 and not data[0] & 0x80 and \
                self.dest.is_stateless_reset(bytes(data[-16:])):
            self._on_stateless_reset(now)  # RFC 9000 §10.3.1
            return
        if short_ok and self._rx_nonprobing:
            # Only the highest-numbered non-probing packet moves us to the
            # peer's new address (RFC 9000 §9.3: a late packet from the old
            # path does not move us back).  A client that moved to the
            # preferred address ignores the server's original one: the
            # server keeps sending from it until our non-probing packets
            # reach its preferred address (§9.6.3); following it would take
            # the client back, the server after it, and so on.  A change of
            # our own address only counts on a server whose client moved to
            # its preferred address.
            left = self._left_remote
            if left is not None and short_newest and remote == self.paths.remote:
                self._left_remote = left = None  # the server moved as well
            if short_newest and remote != left and \
                    self.state == _ESTABLISHED and remote is not None and \
                    self.paths.remote is not None and (
                        remote != self.paths.remote or (
                            self.per_path_io and local is not None and not self.is_client
                            and local != self.paths.local and local == self._pref_local)):
                self._on_peer_migration(remote, local, now, n, short_dcid)
            self._peer_last_dcid = short_dcid
        if processed:
            self._last_activity = now
            self._eliciting_since_recv = False
            if self._idle_timeout:
                self.timers.set(TimerKind.IDLE, now + self._idle_deadline_span())
        self._queue_flow_updates()
        self._set_ack_timer()

    def settle(self) -> bool:
        """Process the ACK that the fast receive path left for after the reply
        (a request/response packet's ACK): the data reaches the application
        and the reply leaves first; the RTT sample still counts from the
        packet's arrival (RFC 9002 §5.1).  Runs before anything that reads the
        loss-recovery state (timers, the next receive, a full send buffer or
        window).  True when it queued something to send: a CONNECTION_CLOSE,
        or the retransmission of a packet the ACK shows lost (RFC 9002 §6.1)."""
        later = self._ack_later
        if later is None:
            return False
        self._ack_later = None
        if self.state is not _ESTABLISHED:
            return False
        losses = self._losses
        try:
            self._on_ack(APP, later[0], later[1])
        except QuicError as e:
            self._close_transport(e.error_code, e.frame_type or 0, e.reason)
            return True
        return self._losses != losses

    def receive_datagrams(self, datagrams: Sequence[bytes], remote: Addr, local: Addr,
                          now: float) -> None:
        """``receive_datagram`` for each of ``datagrams``, in order: several
        datagrams from one peer to one local address (a GRO batch).  The same
        per-datagram checks pick the 1-RTT fast path, with one call per
        datagram fewer."""
        self._now = now
        fast = self._receive_fast
        for data in datagrams:
            if not fast(data, remote, local, now):
                self.receive_datagram(data, remote, local, now)

    def _receive_fast(self, data: bytes, remote: Addr, local: Addr, now: float) -> bool:
        """``_receive_short_fast`` where its preconditions hold (established, a
        1-RTT packet on the current path, not while a left server address is
        watched); True when the datagram was handled, the connection closed by
        an error in it included."""
        if self.state is not _ESTABLISHED or not data or data[0] & 0xC0 != 0x40 \
                or self._key_phase_start_pn < 0 or self.plaintext_1rtt \
                or self._left_remote is not None:
            return False
        active = self.paths.paths[0]
        if remote == active.remote and (not self.per_path_io or local == active.local):
            try:
                return self._receive_short_fast(data, remote, local, now)
            except QuicError as e:
                self._close_transport(e.error_code, e.frame_type or 0, e.reason)
                return True
            except (ValueError, LookupError) as e:  # defensive: never crash the caller
                self._close_transport(PROTOCOL_VIOLATION, 0, f"malformed: {e}")
                return True
        return False

    def _receive_short_fast(self, data: bytes, remote: Addr, local: Addr, now: float) -> bool:
        """A 1-RTT packet on the current path in the current key phase: header
        protection and AEAD removed inline, and a payload that is one in-order
        STREAM frame goes straight to the receive queue.  Returns False, with
        nothing changed, whenever the general path must handle the datagram
        (unknown DCID, key phase change, late packet, failed decryption,
        duplicate ...).  Flow-control updates, the ACK timer and the idle
        timer are brought up to date once per batch, by ``_flush_rx`` (called
        from ``datagrams_to_send``, ``next_timer`` and ``handle_timer``)."""
        dlen = len(self.scid) or CID_LEN
        pn_off = 1 + dlen
        n = len(data)
        if n < pn_off + 20:
            return False
        dcid = bytes(data[1:pn_off])
        entry = self.source._by_cid.get(dcid)
        key = self._recv_keys[APP]
        if entry is None or key is None:
            return False
        sample = data[pn_off + 4:pn_off + 20]  # RFC 9001 §5.4.2
        hp = key._hp_encryptor
        mask = hp.update(sample) if hp is not None else key.hp_mask(bytes(sample))
        first = data[0] ^ (mask[0] & 0x1F)
        phase = self.key_phase ^ 1 if self._key_pending else self.key_phase
        if (first >> 2) & 1 != phase or first & 0x18:
            return False  # key update or reserved bits: the general path decides
        pn_len = (first & 3) + 1
        pn_end = pn_off + pn_len
        trunc = int.from_bytes(data[pn_off:pn_end], "big") ^ int.from_bytes(
            mask[1:1 + pn_len], "big")
        pns = self.spaces[APP]
        nxt = pns.largest_received + 1
        # the next packet in order: what RFC 9000 A.3's decoding gives then
        pn = nxt if trunc == nxt & _PN_MASK[pn_len] else decode_packet_number(
            trunc, pn_len, nxt - 1)
        if pn < self._key_phase_start_pn:
            return False
        aad = b"".join((bytes((first,)), dcid, trunc.to_bytes(pn_len, "big")))
        try:
            payload = key._aead.decrypt((key._iv_int ^ pn).to_bytes(12, "big"),
                                        data[pn_end:], aad)
        except InvalidTag:
            return False
        if pn != nxt and pns.is_duplicate(pn):
            return False
        # --- authenticated: from here on the packet is processed
        if self._ack_later is not None:
            self.settle()  # ACKs in arrival order
            if self.state is not _ESTABLISHED:
                return True
        if self._ku_hold and not self._key_pending:
            self._ku_check(now)
        paths = self.paths
        if not paths.validated:
            paths.on_received(n)
        self._rx_dcid_seq = entry.seq
        self._rx_addr = (remote, local)
        ft = payload[0] if payload else 0
        ack = None
        start = 0
        if ft == 0x02:  # ACK then (maybe) STREAM: request/response traffic
            ack, start = _parse_ack(payload)
            ft = payload[start] if ack is not None and start < len(payload) else 0
        if 0x08 <= ft <= 0x0F and self._stream_fast(payload, ft, start):
            eliciting = True
            self._rx_nonprobing = True
            if ack is not None:
                if ack.largest >= pns.next_pn:
                    raise QuicError(PROTOCOL_VIOLATION, ack.type, "ACK of an unsent packet")
                # the request's data goes to the application, and its reply
                # out, before the ACK's bookkeeping runs (settle)
                self._ack_later = (ack, now)
        elif ack is not None and (start == len(payload) or not any(payload[start:])):
            # ACK only (maybe padded): the bulk sender's usual packet
            eliciting = False
            self._rx_nonprobing = True
            self._on_ack(APP, ack, now)
            if self.state in (_CLOSED, _DRAINING):
                return True
        else:
            self._rx_nonprobing = False
            frames = fr.parse_frames(payload, int(PacketType.ONE_RTT))
            eliciting = self._process_frames(APP, frames, now, PacketType.ONE_RTT)
            if self.state in (_CLOSED, _DRAINING):
                return True
        pns.on_packet_received(pn, now, eliciting)
        if self._rx_nonprobing:
            self._peer_last_dcid = dcid
        self._last_activity = now
        self._eliciting_since_recv = False
        self._rx_dirty = True
        return True

    def _stream_fast(self, payload: bytes, ft: int, start: int = 0) -> bool:
        """Deliver a payload that is exactly one STREAM frame continuing an
        open stream in order (RFC 9000 §19.8); False (nothing changed) for
        anything else: new stream, FIN, gaps, flow-control excess ..."""
        end_all = len(payload)
        pos = start + 1
        if end_all <= pos:
            return False
        w = 1 << (payload[pos] >> 6)
        sid = int.from_bytes(payload[pos:pos + w], "big") & _VARINT_MASK[w]
        pos += w
        offset = 0
        if ft & 0x04:
            if pos >= end_all:
                return False
            w = 1 << (payload[pos] >> 6)
            offset = int.from_bytes(payload[pos:pos + w], "big") & _VARINT_MASK[w]
            pos += w
        if ft & 0x02:
            if pos >= end_all:
                return False
            w = 1 << (payload[pos] >> 6)
            length = int.from_bytes(payload[pos:pos + w], "big") & _VARINT_MASK[w]
            pos += w
            if pos > end_all or pos + length != end_all:
                return False  # more frames follow (or truncated): general path
        else:
            length = end_all - pos
        if ft & 0x01 or not length or pos > end_all:
            return False
        st = self.streams.streams.get(sid)
        if st is None:
            return False
        recv = st.recv
        if recv is None or recv.state != _R_RECV or recv.stop_sent \
                or recv._ready or not recv.highest:
            return False
        end = offset + length
        streams = self.streams
        if offset != recv._contig or recv._starts:
            return self._stream_fast_ooo(recv, sid, offset, end, payload, pos)
        grow = end - recv.highest
        if end > recv.max_data or grow > streams.recv_max_data - streams.recv_highest:
            return False  # the general path raises FLOW_CONTROL_ERROR
        # what on_data + read(consume=False) + push_stream do for in-order data
        recv.highest = end
        streams.recv_highest += grow
        recv._contig = end
        recv.read_offset = end
        self.inq.push_stream(sid, payload[pos:] if pos else payload, False)
        return True

    def _stream_fast_ooo(self, recv: Any, sid: int, offset: int, end: int,
                         payload: bytes, pos: int) -> bool:
        """``_stream_fast`` for data out of order, or filling a gap (a lost
        packet): buffered by the stream, then whatever became contiguous goes
        to the receive queue, as ``_on_stream_frame`` does."""
        streams = self.streams
        grow = max(end - recv.highest, 0)
        if end > recv.max_data or grow > streams.recv_max_data - streams.recv_highest:
            return False  # the general path raises FLOW_CONTROL_ERROR
        recv.on_data(offset, memoryview(payload)[pos:], False, None)
        streams.recv_highest += grow
        if recv._ready:
            data, _fin = recv.read(-1, False)
            self.inq.push_stream(sid, data, False)
        return True

    def _flush_rx(self) -> None:
        """Work deferred by the fast receive path, once per batch of datagrams:
        flow-control updates, the ACK timer and the idle timer (RFC 9000 §10.1)."""
        if self._rx_idle_timer():
            self._queue_flow_updates()
            self._set_ack_timer()

    def _rx_idle_timer(self) -> bool:
        """The idle timer after what the fast receive path took (RFC 9000
        §10.1), clearing ``_rx_dirty``; False on a closed connection."""
        self._rx_dirty = False
        if self.is_closed:
            return False
        self._idle_stale = self._timers_stale = True  # set by _rearm_timers
        return True

    def _receive_packet(self, data: bytes, hdr: Any, remote: Addr, local: Addr,
                        now: float) -> bool:
        ptype = hdr.packet_type
        if ptype not in _PTYPE_SPACE:
            if self.is_client and ptype == PacketType.RETRY:
                self._on_retry(data, hdr, now)
            elif self.is_client and ptype == PacketType.VERSION_NEGOTIATION:
                self._on_version_negotiation(hdr, now)
            return False
        key = None
        upgrade = 0
        if hdr.is_long and hdr.version != self.version:
            old = self._old_initial
            if old is not None and ptype == _PT_INITIAL and hdr.version == old[0]:
                key = old[1]  # server: the client's Initial in the original version
            elif self.is_client and ptype == _PT_INITIAL and \
                    self._recv_keys[INITIAL] is not None and \
                    hdr.version in SUPPORTED_VERSIONS and \
                    not self._version_followed:
                # RFC 9368 §2.3: the server upgraded compatibly; follow it
                # once a packet of the new version authenticates - at any
                # time while Initial keys live, as the kernel (packet.c):
                # the server may have ACKed our Initial in the old version
                key = initial_keys(hdr.version, self._initial_dcid, True)[1]
                upgrade = hdr.version
            else:
                return False
        space = _PTYPE_SPACE[ptype]
        if key is not None:
            pass
        elif ptype == _PT_ZERO_RTT:
            key = self._early_recv
        else:
            key = self._recv_keys[space]
        if key is None:
            if len(self._backlog) < BACKLOG_MAX and not self.spaces[space].discarded \
                    and self.state == _ESTABLISHING:
                self._backlog.append((bytes(data[hdr.offset:hdr.packet_end]), remote, local))
            return False
        dcid_entry = self.source.lookup(hdr.dcid)
        if dcid_entry is None and hdr.dcid != self.orig_dcid:
            return False
        self._rx_dcid_seq = dcid_entry.seq if dcid_entry is not None else None
        pns = self.spaces[space]
        if ptype == _PT_ONE_RTT and self.plaintext_1rtt:
            return self._receive_plaintext(data, hdr, pns, now)
        try:
            um = remove_header_protection(key, data, hdr)
        except PacketError:
            return False
        pn = decode_packet_number(um.truncated_pn, um.pn_len, pns.largest_received)
        phase_change = False
        if ptype == _PT_ONE_RTT and um.key_phase != self.key_phase_recv:
            if pn < self._key_phase_start_pn:
                # a late packet of the previous phase: its keys are kept for
                # 3 PTO after the update, then discarded (RFC 9001 §6.5)
                if self._prev_recv_key is not None and now >= self._prev_key_until:
                    self._prev_recv_key = None
                if self._prev_recv_key is None:
                    return False
                key = self._prev_recv_key
            elif self._next_recv_key is not None:
                key = self._next_recv_key
                phase_change = True
        try:
            payload = decrypt_payload(key, data, hdr, um, pn)
        except CryptoError:
            return False
        if pns.is_duplicate(pn):
            return False
        if upgrade:
            self._version_followed = True  # once: late old-version Initials are dropped
            self._change_version(upgrade)
        if phase_change:
            self._on_peer_key_phase(pn, now)
        elif ptype == _PT_ONE_RTT and self._key_phase_start_pn < 0:
            self._key_phase_start_pn = pn
        if self._ku_hold and ptype == _PT_ONE_RTT and not self._key_pending \
                and key is self._recv_keys[APP]:
            self._ku_check(now)
        # first packet from the server: switch to its chosen CID (RFC 9000 §7.2)
        if self.is_client and ptype == _PT_INITIAL and self.peer_initial_scid is None:
            self.peer_initial_scid = hdr.scid
            self.dcid = hdr.scid
            self.dest = DestConnIdSet(self.local_tp["active_connection_id_limit"])
            self.dest.add(hdr.scid, 0)
        if not self.is_client and ptype == _PT_HANDSHAKE:
            # RFC 9000 §8.1: a Handshake packet validates the client's address;
            # RFC 9001 §4.9.1: the server discards Initial keys now.
            self.paths.validate()
            if self._send_keys[INITIAL] is not None:
                self._drop_space(INITIAL)
        frames = fr.parse_frames(payload, int(ptype))
        eliciting = self._process_frames(space, frames, now, ptype)
        if self.state in _ENDED_STATES:
            return True
        pns.on_packet_received(pn, now, eliciting)
        return True

    def _receive_plaintext(self, data: bytes, hdr: Any, pns: PnSpace, now: float) -> bool:
        """A cleartext 1-RTT packet (disable_1rtt_encryption negotiated, as the
        kernel does it: no header protection, no AEAD)."""
        off = hdr.pn_offset
        pn_len = (data[hdr.offset] & 0x03) + 1
        end = hdr.packet_end
        if off + pn_len >= end:
            return False
        pn = decode_packet_number(int.from_bytes(data[off:off + pn_len], "big"), pn_len,
                                  pns.largest_received)
        if pns.is_duplicate(pn):
            return False
        frames = fr.parse_frames(bytes(data[off + pn_len:end]), int(PacketType.ONE_RTT))
        eliciting = self._process_frames(APP, frames, now, PacketType.ONE_RTT)
        if self.state in (_CLOSED, _DRAINING):
            return True
        pns.on_packet_received(pn, now, eliciting)
        return True

    @property
    def key_phase_recv(self) -> int:
        return self.key_phase if not self._key_pending else self.key_phase ^ 1

    def _on_peer_key_phase(self, pn: int, now: float) -> None:
        """The peer's packets switched key phase (RFC 9001 §6.2, §6.3)."""
        assert self._next_recv_key is not None
        self._prev_recv_key = self._recv_keys[APP]
        self._prev_key_until = now + 3 * self.rtt.pto()
        self._recv_keys[APP] = self._next_recv_key
        self._next_recv_key = self._next_recv_key.next_phase()
        self._key_phase_start_pn = pn
        if self._key_pending:
            self._key_pending = False  # our update was answered
            return
        # peer-initiated: respond by updating our send key
        key = self._send_keys[APP]
        if key is not None:
            self._send_keys[APP] = key.next_phase()
        self.key_phase ^= 1
        self._ku_hold = True
        self._ku_sent_at = None
        self._event(abi.KeyUpdateEvent(self.key_phase))

    def _process_frames(self, space: int, frames: list[Any], now: float,
                        ptype: int) -> bool:
        eliciting = False
        for f in frames:
            t = type(f)
            if t not in _PROBING_FRAMES:
                self._rx_nonprobing = True  # RFC 9000 §9.1
            if t is fr.StreamFrame:
                eliciting = True
                self._on_stream_frame(f, ptype)
            elif t is fr.AckFrame:
                self._on_ack(space, f, now)
            elif t is fr.PaddingFrame:
                pass
            elif t is fr.CryptoFrame:
                eliciting = True
                self._on_crypto(space, f)
            elif t is fr.PingFrame:
                eliciting = True
            elif t is fr.ConnectionCloseFrame:
                self._on_close_frame(f, now)
                return eliciting
            else:
                eliciting = True
                self._on_other_frame(f, now)
        return eliciting

    def _on_crypto(self, space: int, f: fr.CryptoFrame) -> None:
        data = self._crypto_recv[space].push(f.offset, f.data)
        if not data:
            return
        if space != APP:
            self.inq.push_handshake(int(_SPACE_LEVEL[space]), data)
            return
        # 1-RTT CRYPTO: the TLS NewSessionTicket (inqueue.c ticket handling)
        if not self.is_client or self.ticket_ready:
            return
        if len(self.ticket) + len(data) > TICKET_MAX_LEN:
            return
        self.ticket += data
        if len(self.ticket) >= 4 and len(self.ticket) >= 4 + int.from_bytes(
                self.ticket[1:4], "big"):
            self.ticket_ready = True
            self._event(abi.NewSessionTicketEvent(self.ticket))

    def _on_stream_frame(self, f: fr.StreamFrame, ptype: int) -> None:
        ftype = f.type
        streams = self.streams
        before = streams.streams.get(f.stream_id)
        rs = before.recv if before is not None else None
        # (highest, state) before the frame, for the kernel's receive events
        prev = (rs.highest, rs.state) if rs is not None else (0, StreamState.RECV_RECV)
        st = streams.on_stream_frame(f.stream_id, f.offset, f.data, f.fin, ftype)
        if st is None:
            return
        recv = st.recv
        if recv is not None and prev[1] == StreamState.RECV_RECV and \
                self.inq.event_enabled(EventType.STREAM_UPDATE):
            # inqueue.c quic_inq_stream_recv: RECV on the first data of a
            # stream (highest was 0), SIZE_KNOWN for a FIN that arrives out
            # of order; RECVD follows once the FIN is delivered in order.
            if prev[0] == 0 and (f.fin or f.offset + len(f.data) > 0):
                self._event(abi.StreamUpdateEvent(st.id, int(StreamState.RECV_RECV), 0, 0))
            if f.fin and recv.state == StreamState.RECV_SIZE_KNOWN:
                self._event(abi.StreamUpdateEvent(st.id, int(StreamState.RECV_SIZE_KNOWN), 0,
                                                  recv.final_size or 0))
        self._deliver_stream(st.id, ptype == PacketType.ZERO_RTT and
                             self._recv_keys[APP] is None)

    def _deliver_stream(self, sid: int, early: bool = False) -> None:
        st = self.streams.get(sid)
        if st is None or st.recv is None:
            return
        if not st.recv.readable() and not (st.recv.final_size is not None and
                                           st.recv.state == StreamState.RECV_RECVD):
            return
        data, fin = self.streams.read(sid, -1, consume=False)
        if data or fin:
            self.inq.push_stream(sid, data, fin, early)
            if fin:
                self._event(abi.StreamUpdateEvent(sid, int(StreamState.RECV_RECVD), 0,
                                                  st.recv.final_size or 0))

    def _on_other_frame(self, f: Any, now: float) -> None:
        t = type(f)
        streams = self.streams
        if t is fr.MaxDataFrame:
            streams.on_max_data(f.max_data)
        elif t is fr.MaxStreamDataFrame:
            if streams.on_max_stream_data(f.stream_id, f.max_data, f.type):
                self._event(abi.StreamMaxDataEvent(f.stream_id, f.max_data))
        elif t is fr.MaxStreamsFrame:
            new = streams.on_max_streams(f.uni, f.max_streams, f.type)
            if new is not None:
                self._event(abi.StreamMaxStreamEvent(new))
        elif t is fr.ResetStreamFrame:
            st = streams.on_reset_stream(f.stream_id, f.error_code, f.final_size, f.type)
            if st is not None:
                # frame.c quic_frame_reset_stream_process: the stream's unread
                # data is purged (its flow-control credit was returned above)
                self.inq.drop_stream(f.stream_id)
                self._event(abi.StreamUpdateEvent(f.stream_id, int(StreamState.RECV_RESET_RECVD),
                                                  f.error_code & _U32, f.final_size))
        elif t is fr.StopSendingFrame:
            final = streams.on_stop_sending(f.stream_id, f.error_code, f.type)
            if final is not None:
                self.outq.push_ctrl(APP, fr.ResetStreamFrame(f.stream_id, f.error_code, final))
                self._event(abi.StreamUpdateEvent(f.stream_id, int(StreamState.SEND_RESET_SENT),
                                                  f.error_code & _U32, final))
        elif t is fr.DataBlockedFrame:
            v = streams.on_data_blocked(f.limit)
            if v is not None:
                self.outq.push_ctrl(APP, fr.MaxDataFrame(v))
        elif t is fr.StreamDataBlockedFrame:
            v = streams.on_stream_data_blocked(f.stream_id, f.limit, f.type)
            if v is not None:
                self.outq.push_ctrl(APP, fr.MaxStreamDataFrame(f.stream_id, v))
        elif t is fr.StreamsBlockedFrame:
            v = streams.on_streams_blocked(f.uni, f.limit, f.type)
            if v is not None:
                self.outq.push_ctrl(APP, fr.MaxStreamsFrame(v, f.uni))
        elif t is fr.NewConnectionIdFrame:
            for seq in self.dest.on_new_connection_id(
                    f.seq, f.retire_prior_to, f.connection_id, f.stateless_reset_token, f.type):
                self._queue_retire(seq)
            self.dcid = self.dest.active.cid
            if self._retire_queued > RETIRE_PENDING_FACTOR * self.dest.max_count and sum(
                    1 for x in self.outq.ctrl[APP]
                    if type(x) is fr.RetireConnectionIdFrame) > \
                    RETIRE_PENDING_FACTOR * self.dest.max_count:
                # RFC 9000 §5.1.2 (cf. quic-go CVE-2024-22189): a peer that
                # makes us retire IDs faster than we can send the frames
                # (it withholds ACKs, so the congestion window stays full)
                raise QuicError(CONNECTION_ID_LIMIT_ERROR, f.type,
                                "too many RETIRE_CONNECTION_ID queued")
        elif t is fr.RetireConnectionIdFrame:
            before = self.source.first_number
            for c in self.source.on_retire(f.seq, self._rx_dcid_seq, f.type):
                self.outq.push_ctrl(APP, fr.NewConnectionIdFrame(
                    c.seq, c.retire_prior_to, c.cid, c.token))
            if self.source.first_number != before:
                self._event(abi.ConnectionIdEvent(0, self.source.active_seq,
                                                  self.source.first_number))
        elif t is fr.PathChallengeFrame:
            remote, local = self._rx_addr
            if remote is None or (remote == self.paths.remote and
                                  (local is None or local == self.paths.local)):
                self.outq.push_ctrl(APP, fr.PathResponseFrame(f.data))
            elif len(self._path_responses) < 8:
                # RFC 9000 §8.2.2: answer on the path the challenge came on
                self._path_responses.append((f.data, remote, local))
        elif t is fr.PathResponseFrame:
            idx = self.paths.on_response(f.data)
            if idx == 1:
                self._complete_path_switch(now)
            elif idx == 0:
                self.paths.validate()  # RFC 9000 §8.2.3 / §9.3
                self.timers.stop(TimerKind.PATH)
                self.paths.alt_state = AltState.NONE
                if self._migration_local >= 0:
                    self._event(abi.ConnectionMigrationEvent(bool(self._migration_local)))
                    self._migration_local = -1
        elif t is fr.NewTokenFrame:
            if not self.is_client:
                raise QuicError(PROTOCOL_VIOLATION, f.type, "NEW_TOKEN from a client")
            self.token = f.token
            self._event(abi.NewTokenEvent(f.token))
        elif t is fr.HandshakeDoneFrame:
            if not self.is_client:
                raise QuicError(PROTOCOL_VIOLATION, f.type, "HANDSHAKE_DONE from a client")
            if not self.handshake_confirmed:
                self.handshake_confirmed = True  # RFC 9001 §4.1.2
                self._drop_space(HANDSHAKE)
                self._pmtu_start(now)
                self._use_preferred_address(now)
        elif t is fr.DatagramFrame:
            if not self.local_tp["max_datagram_frame_size"]:
                raise QuicError(PROTOCOL_VIOLATION, f.type, "DATAGRAM not negotiated")
            self.inq.push_datagram(f.data)

    def _queue_retire(self, seq: int) -> None:
        """Send RETIRE_CONNECTION_ID for ``seq``; tracked until acknowledged."""
        self._retire_queued += 1
        self.outq.push_ctrl(APP, fr.RetireConnectionIdFrame(seq))

    def _first_flight_only(self) -> bool:
        """Client still waits for the server's first packet (Retry / VN allowed)."""
        return (self.state == _ESTABLISHING and self.peer_initial_scid is None
                and self.retry_scid is None and not self._vn_done
                and self._recv_keys[HANDSHAKE] is None)

    def _on_retry(self, data: bytes, hdr: Any, now: float) -> None:
        """Client: a Retry (RFC 9000 §17.2.5.2): restart with its token and SCID."""
        if not self._first_flight_only() or hdr.version != self.version:
            return
        if hdr.scid == self.dcid or not hdr.token:
            return  # §17.2.5.2: discard
        if not verify_retry(self.version, self.orig_dcid, data, hdr):
            return
        self.retry_scid = hdr.scid
        self.initial_token = hdr.token
        self._switch_initial_dcid(hdr.scid)
        self._restart_first_flight()

    def _on_version_negotiation(self, hdr: Any, now: float) -> None:
        """Client: a Version Negotiation packet (RFC 9000 §6.2, RFC 9368 §2.1)."""
        if not self._first_flight_only():
            return
        if hdr.dcid != self.scid or hdr.scid != self.dcid:
            return  # not an answer to our Initial
        offered = hdr.supported_versions
        if self.version in offered:
            return  # §6.2: a VN listing our version is discarded
        common = [v for v in offered if v in SUPPORTED_VERSIONS]
        if not common:
            # no version in common: the connection attempt fails
            self._set_close_info(VERSION_NEGOTIATION_ERROR, 0, b"no common version")
            self._event(abi.ConnectionCloseEvent(VERSION_NEGOTIATION_ERROR, 0, b""))
            self.error = errno.EPROTONOSUPPORT
            self.state = _CLOSED
            self.timers.stop_all()
            return
        self._vn_done = True
        self.version = self._pick_version(common)
        self._install_initial(self._initial_dcid)
        self._restart_first_flight()
        if self.hold_initial_after_vn:
            # the old ClientHello names the old version in version_information
            # (RFC 9368 §4): a new one must replace it, see restart_initial()
            self._discard_initial_flight()
            self.initial_restart_pending = True

    @property
    def version_negotiated(self) -> bool:
        """Client: a Version Negotiation packet made us switch versions."""
        return self._vn_done

    def restart_initial(self, data: bytes) -> None:
        """Client, after a Version Negotiation and before any server packet:
        replace the Initial CRYPTO stream with ``data`` (a new ClientHello
        whose transport parameters come from a fresh
        ``get_transport_param_ext()``), from offset 0.  EINVAL otherwise."""
        if not (self.is_client and self._vn_done and self.state == _ESTABLISHING
                and self.peer_initial_scid is None and self._send_keys[INITIAL] is not None):
            raise _oserr(errno.EINVAL, "no Version Negotiation restart possible")
        if not data:
            raise _oserr(errno.EMSGSIZE)
        self._discard_initial_flight()
        self.outq.crypto[INITIAL].write(bytes(data))
        self.initial_restart_pending = False

    def _discard_initial_flight(self) -> None:
        """Forget the Initial packets in flight and the Initial CRYPTO data."""
        pns = self.spaces[INITIAL]
        for p in pns.sent.values():
            if p.in_flight:
                self.cc.on_packet_discarded(p.size)
        pns.sent.clear()
        pns.bytes_in_flight = 0
        pns.eliciting_in_flight = 0
        pns.loss_time = None
        pns.last_ack_eliciting_time = None
        self.outq.crypto[INITIAL] = SendBuffer()
        self._set_loss_timer()

    def _switch_initial_dcid(self, dcid: bytes) -> None:
        self.dcid = dcid
        self.dest = DestConnIdSet(self.local_tp["active_connection_id_limit"])
        self.dest.add(dcid, 0)
        self._install_initial(dcid)

    def _restart_first_flight(self) -> None:
        """Resend the Initial CRYPTO data (and 0-RTT data) under the new keys;
        packet numbers keep increasing (RFC 9000 §17.2.5.3)."""
        for space in (INITIAL, APP):
            pns = self.spaces[space]
            packets = list(pns.sent.values())
            pns.sent.clear()
            pns.bytes_in_flight = 0
            pns.eliciting_in_flight = 0
            pns.loss_time = None
            pns.last_ack_eliciting_time = None
            for p in packets:
                if p.in_flight:
                    self.cc.on_packet_discarded(p.size)
                if p.frames:
                    self.outq.on_lost(self, p, space)
        self.pto_count = 0
        self._set_loss_timer()

    def _on_stateless_reset(self, now: float) -> None:
        # packet.c: the close event carries CRYPTO_ERROR (0x100)
        self._set_close_info(CRYPTO_ERROR, 0, b"stateless reset")
        self._event(abi.ConnectionCloseEvent(CRYPTO_ERROR, 0, b""))
        self.error = errno.ECONNRESET
        self.state = _CLOSED
        self.timers.stop_all()

    def _on_peer_migration(self, remote: Addr, local: Addr, now: float, nbytes: int,
                           dcid: bytes) -> None:
        """A non-probing packet came on a new path (RFC 9000 §9.3): switch to
        it and validate the peer's new address; until then the new path is
        amplification limited (§8.1, §9.3.1)."""
        paths = self.paths
        old_local, old_remote = paths.local, paths.remote
        local = local if local is not None else old_local
        if remote == old_remote:
            # only our local address changed (the client moved to our
            # preferred address): the peer's address is already validated
            paths.set_addresses(0, local, remote)
            return
        nat = _same_host(remote, old_remote)  # NAT rebinding: only the port changed
        if paths.validated:
            self._fallback = (old_local, old_remote)  # §9.3.2: last validated path
        paths.set_addresses(0, local, remote)
        paths.validated = False
        paths.ampl_received = nbytes
        paths.ampl_sent = 0
        if not nat:
            self._reset_path_state()  # RFC 9000 §9.4
        # §9.5: a peer that moved to a new CID gets a new CID from us as well
        last = self._peer_last_dcid or self.scid
        if dcid and dcid != last and self.dest.select_alt():
            alt = self.dest.alt
            old = self.dest.active
            if alt is not None and alt is not old:
                self.dest.swap_active()
                self.dcid = self.dest.active.cid
                if self.dest.retire(old.seq):
                    self._queue_retire(old.seq)
            self.dest.clear_alt()
        data = paths.start_challenge(0, now, self._path_timeout())
        self._migration_local = 0
        self.outq.push_ctrl(APP, fr.PathChallengeFrame(data))
        self.timers.set(TimerKind.PATH, now + self._path_timeout())

    def _path_timeout(self) -> float:
        # RFC 9000 §8.2.4: at least 3 PTOs
        return 3 * self.rtt.pto()

    def _reset_path_state(self) -> None:
        """New path: fresh congestion controller and RTT (RFC 9000 §9.4)."""
        inflight = self.cc.bytes_in_flight
        self.cc = new_congestion_control(self.cong_algo, self.paths.max_datagram_size())
        self.cc.bytes_in_flight = inflight
        mad = self.rtt.max_ack_delay
        self.rtt = RttEstimator(self.initial_srtt / 1e6, mad)
        self.pacer = Pacer(self.paths.max_datagram_size())

    # ------------------------------------------------ probing a new path
    def _start_path_probe(self, local: Addr, remote: Addr, now: float, kind: str) -> None:
        """Validate path 1 (``local`` -> ``remote``) with PATH_CHALLENGE before
        using it (RFC 9000 §8.2, §9.2)."""
        paths = self.paths
        paths.set_addresses(1, local, remote)
        paths.alt_probes = 0
        self._path_kind = kind
        self._send_path_challenge(now, False)

    def _probe_timeout(self) -> float:
        # kernel (outqueue.c, timer.c): max(2 PTO, 1.5 s) per PATH_CHALLENGE on
        # a new path; RFC 9000 §8.2.4 likewise floors it with the initial-RTT
        # PTO, as the new path's RTT is unknown (a busy peer answers late)
        return max(2 * self.rtt.pto(), MIN_PATH_TIMEOUT / 1e6)

    def _send_path_challenge(self, now: float, again: bool = True) -> None:
        paths = self.paths
        data = paths.start_challenge(1, now, self._probe_timeout(), again)
        alt = self.dest.alt
        dcid = alt.cid if alt is not None else self.dcid
        p1 = paths.paths[1]
        # §8.2.1: a datagram with PATH_CHALLENGE is expanded to 1200 bytes
        probe = self._build_probe(now, dcid, fr.PathChallengeFrame(data).encode(), MIN_PMTU)
        if probe is not None:
            self._probe_out.append((probe, p1.remote, p1.local))
        self.timers.set(TimerKind.PATH, now + self._probe_timeout())

    def _complete_path_switch(self, now: float) -> None:
        """PATH_RESPONSE on path 1: move to it (client migration / preferred address)."""
        paths = self.paths
        self.timers.stop(TimerKind.PATH)
        paths.alt_state = AltState.NONE
        old_remote = paths.remote
        paths.swap()
        paths.paths[1] = Path()
        paths.validate()
        dest = self.dest
        old = dest.active
        if dest.alt is not None and dest.alt is not old:
            dest.swap_active()
            self.dcid = dest.active.cid
            if dest.retire(old.seq):
                self._queue_retire(old.seq)
        dest.clear_alt()
        if not _same_host(paths.remote, old_remote):
            self._reset_path_state()
        kind, self._path_kind = self._path_kind, ""
        if kind == "preferred":
            self._left_remote = old_remote
        self._event(abi.ConnectionMigrationEvent(kind == "local"))
        self._migration_local = -1

    def _path_timer(self, now: float) -> None:
        paths = self.paths
        if paths.challenge is None:
            return
        if paths.challenge_path == 1 and paths.alt_probes <= MAX_PATH_RETRIES:
            self._send_path_challenge(now)  # another PATH_CHALLENGE (§8.2.1)
            return
        peer_failed = paths.challenge_path == 0 and self._migration_local == 0
        paths.abandon_challenge()  # RFC 9000 §8.2.4
        self.dest.clear_alt()
        self._path_kind = ""
        self._migration_local = -1
        if peer_failed and self._fallback is not None:
            # RFC 9000 §9.3.2: the new peer address did not validate: go back
            # to the last validated one
            paths.set_addresses(0, *self._fallback)
            paths.validate()
            self._fallback = None

    def _build_probe(self, now: float, dcid: bytes, frames: bytes, size: int) -> bytes | None:
        """A 1-RTT datagram with ``frames`` padded to ``size`` bytes (path
        probes, PMTU probes); never retransmitted."""
        key = self._send_keys[APP]
        if key is None:
            return None
        pns = self.spaces[APP]
        pn = pns.next_pn
        header = encode_short_header(dcid, pn, 4, key_phase=self.key_phase,
                                     fixed_bit=self.fixed_bit())
        if self.plaintext_1rtt:
            plen = max(len(frames), size - len(header))
            data = header + frames + bytes(plen - len(frames))
        else:
            plen = max(len(frames), size - len(header) - key.tag_len, 4)
            data = protect(key, header, frames + bytes(plen - len(frames)), pn)
        pns.next_pn = pn + 1
        self._on_packet_sent(APP, SentPacket(pn, now, len(data), True, True, [(REC_PMTU,)]))
        return data

    def _on_close_frame(self, f: fr.ConnectionCloseFrame, now: float) -> None:
        """Peer closed: enter draining (RFC 9000 §10.2.2)."""
        # frame.c quic_frame_connection_close_process: the event and the
        # close info carry the peer's code, frame type (u8) and phrase
        phrase = bytes(f.reason[:63]).split(b"\0", 1)[0]
        # (the kernel's errcode fields are u32: a 62-bit code is truncated)
        ftype = 0 if f.application else f.frame_type & 0xFF
        code = f.error_code & _U32
        self._set_close_info(code, ftype, phrase)
        self._event(abi.ConnectionCloseEvent(code, ftype, phrase))
        self.error = errno.ECONNRESET
        self.state = _DRAINING
        self.timers.stop_all()
        self.timers.set(TimerKind.CLOSE, now + 3 * self.rtt.pto())

    # ----------------------------------------------------------------- ACKs
    def _on_ack(self, space: int, f: fr.AckFrame, now: float) -> None:
        pns = self.spaces[space]
        largest = f.largest
        if largest >= pns.next_pn:
            raise QuicError(PROTOCOL_VIOLATION, f.type, "ACK of an unsent packet")
        acked = pns.on_ack_received(f.ranges)
        if not acked:
            return
        rtt = self.rtt
        newest = acked[-1]
        if newest.pn == largest and any(p.ack_eliciting for p in acked):
            delay = 0.0
            if space == APP:
                delay = (f.ack_delay << self.remote_tp["ack_delay_exponent"]) / 1e6
            rtt.update(now - newest.sent_time, delay, self.handshake_confirmed, now)
        cc = self.cc
        ack_record = self.outq.ack_record
        # RFC 9002 §7.3: the window grows per acknowledged in-flight packet;
        # one call for the whole ACK unless a PMTU probe (which changes the
        # datagram size the window counts in) is among them (with no probe
        # outstanding, _pmtu_on_probe_acked does nothing)
        batch_cc = not self._pmtu_probe_size or not any(p.is_pmtu_probe for p in acked)
        if batch_cc:
            cc.on_packets_acked(acked, now, rtt)
        # consecutive STREAM records of one stream (bulk data) are acknowledged
        # as one range: one SendStream.on_acked call instead of one per packet
        run_sid = -1
        run_off = run_end = 0
        for p in acked:
            if not batch_cc:
                if p.is_pmtu_probe:
                    self._pmtu_on_probe_acked(p.size, now)
                if p.in_flight:
                    cc.on_packet_acked(p.size, p.sent_time, now, rtt)
            for rec in p.frames:
                if rec[0] == REC_STREAM and not rec[4]:
                    if rec[1] == run_sid and rec[2] == run_end:
                        run_end += rec[3]
                        continue
                    if run_sid >= 0:
                        self._stream_acked((REC_STREAM, run_sid, run_off, run_end - run_off,
                                            False))
                    run_sid, run_off, run_end = rec[1], rec[2], rec[2] + rec[3]
                    continue
                if run_sid >= 0:
                    self._stream_acked((REC_STREAM, run_sid, run_off, run_end - run_off, False))
                    run_sid = -1
                ack_record(self, rec, space)
        if run_sid >= 0:
            self._stream_acked((REC_STREAM, run_sid, run_off, run_end - run_off, False))
        self._detect_and_handle_loss(space, now)
        self.pto_count = 0
        self.pacer.update(cc.congestion_window, rtt.smoothed_rtt)
        self._timers_stale = True

    def _detect_and_handle_loss(self, space: int, now: float) -> None:
        pns = self.spaces[space]
        lost = pns.detect_lost(now, self.rtt.latest_rtt, self.rtt.smoothed_rtt)
        if not lost:
            return
        self._losses += 1
        lost_bytes = 0
        largest_time = 0.0
        for p in lost:
            if p.is_pmtu_probe:
                # RFC 9000 §14.4: a lost probe is no congestion signal
                self.cc.on_packet_discarded(p.size)
                self._pmtu_on_probe_lost(p.size, now)
                continue
            if p.in_flight:
                lost_bytes += p.size
                largest_time = max(largest_time, p.sent_time)
            if p.frames:
                self.outq.on_lost(self, p, space)
        if lost_bytes:
            self.cc.on_packets_lost(lost_bytes, largest_time, now)
            self._check_persistent_congestion(lost, now)

    # ------------------------------------------------------------- DPLPMTUD
    PMTU_STEP = 32  # search granularity in bytes
    PMTU_MAX_PROBES = 3  # RFC 8899 MAX_PROBES

    def _pmtu_start(self, now: float) -> None:
        """Begin (or restart) the search when plpmtud_probe_interval is set."""
        if not self.plpmtud_interval or self.state != _ESTABLISHED:
            return
        paths = self.paths
        high = min(self.remote_tp["max_udp_payload_size"] or MAX_UDP_PAYLOAD,
                   self.local_tp["max_udp_payload_size"], MAX_UDP_PAYLOAD)
        self._pmtu_low = max(paths.mtu, MIN_PMTU)
        self._pmtu_high = high
        self._pmtu_fails = 0
        self._pmtu_probe_size = 0
        self._pmtu_pending = high - self._pmtu_low >= self.PMTU_STEP
        self.timers.stop(TimerKind.PMTU)

    def _pmtu_next(self, now: float) -> None:
        if self._pmtu_high - self._pmtu_low >= self.PMTU_STEP:
            self._pmtu_pending = True
        else:
            # search done: raise again much later (kernel PMTUD_RAISE_TIMER_FACTOR)
            self._pmtu_pending = False
            self.timers.set(TimerKind.PMTU, now + self.plpmtud_interval / 1e6
                            * PMTUD_RAISE_TIMER_FACTOR)

    def _pmtu_on_probe_acked(self, size: int, now: float) -> None:
        if size != self._pmtu_probe_size:
            return
        self._pmtu_probe_size = 0
        self._pmtu_fails = 0
        self._pmtu_low = size
        self.paths.mtu = size  # RFC 8899 §5.2: the probed size is confirmed
        mds = self.paths.max_datagram_size()
        self.cc.max_datagram_size = mds
        self.pacer.max_datagram_size = mds
        self._pmtu_next(now)

    def _pmtu_on_probe_lost(self, size: int, now: float) -> None:
        if size != self._pmtu_probe_size:
            return
        self._pmtu_probe_size = 0
        self._pmtu_fails += 1
        if self._pmtu_fails >= self.PMTU_MAX_PROBES:
            self._pmtu_high = size - 1  # this size does not get through
            self._pmtu_fails = 0
            self._pmtu_next(now)
            return
        # retry the same size after the probe interval
        self._pmtu_pending = False
        self._pmtu_retry_size = size
        self.timers.set(TimerKind.PMTU, now + min(self.plpmtud_interval / 1e6,
                                                   max(self.rtt.pto(), 0.05)))

    def _build_pmtu_probe(self, now: float) -> bytes | None:
        """A PING + PADDING 1-RTT datagram of the next size to try."""
        key = self._send_keys[APP]
        if key is None or self._pmtu_probe_size or not self.dcid:
            return None
        lo, hi = self._pmtu_low, self._pmtu_high
        size = self._pmtu_retry_size or (lo + hi + 1) // 2
        self._pmtu_retry_size = 0
        size = max(lo + 1, min(size, hi))
        pns = self.spaces[APP]
        data = self._build_probe(now, self.dcid, b"\x01", size)
        if data is None:
            return None
        pns.sent[pns.next_pn - 1].is_pmtu_probe = True
        self.paths.on_sent(len(data))
        self._pmtu_probe_size = len(data)
        self._pmtu_pending = False
        return data

    def _check_persistent_congestion(self, lost: list[SentPacket], now: float) -> None:
        """RFC 9002 §7.6: ack-eliciting losses spanning the persistent
        congestion duration with no ACK between them collapse the window."""
        rtt = self.rtt
        if not rtt.has_sample:
            return
        first_sample = rtt.first_sample_time or 0.0
        # §7.6.2: only packets sent after the first RTT sample; the run must be
        # contiguous in packet numbers (nothing between them was acknowledged)
        run = sorted((p for p in lost if p.ack_eliciting and not p.is_pmtu_probe
                      and p.sent_time > first_sample), key=lambda p: p.pn)
        if len(run) < 2:
            return
        lost_pns = {p.pn for p in lost}
        start = run[0]
        duration = rtt.persistent_congestion_duration()
        prev = start.pn
        for p in run[1:]:
            if any(n not in lost_pns for n in range(prev + 1, p.pn)):
                start = p
            elif p.sent_time - start.sent_time > duration:
                self.cc.on_persistent_congestion(now)
                return
            prev = p.pn

    # --------------------------------------------------- record callbacks
    def _stream_lost(self, rec: tuple[Any, ...]) -> None:
        self.streams.on_stream_lost(rec[1], rec[2], rec[3], rec[4])

    def _stream_acked(self, rec: tuple[Any, ...]) -> None:
        sid = rec[1]
        if self.streams.on_stream_acked(sid, rec[2], rec[3], rec[4]):
            # frame.c quic_frame_stream_ack: only id and state are set
            self._event(abi.StreamUpdateEvent(sid, int(StreamState.SEND_RECVD), 0, 0))

    def _ctrl_lost(self, f: Any, space: int) -> None:
        t = type(f)
        if t is fr.MaxDataFrame:
            self.outq.push_ctrl(space, fr.MaxDataFrame(self.streams.recv_max_data))
        elif t is fr.MaxStreamDataFrame:
            st = self.streams.get(f.stream_id)
            if st is not None and st.recv is not None and \
                    st.recv.state < StreamState.RECV_RECVD:
                self.outq.push_ctrl(space, fr.MaxStreamDataFrame(f.stream_id, st.recv.max_data))
        elif t in (fr.PathChallengeFrame, fr.PathResponseFrame):
            return  # RFC 9000 §13.3: not retransmitted
        elif t is fr.ResetStreamFrame:
            st = self.streams.get(f.stream_id)
            if st is not None:
                self.outq.push_ctrl(space, f)
        else:
            self.outq.push_ctrl(space, f)

    def _ctrl_acked(self, f: Any) -> None:
        t = type(f)
        if t is fr.ResetStreamFrame:
            if self.streams.on_reset_acked(f.stream_id):
                self._event(abi.StreamUpdateEvent(f.stream_id, int(StreamState.SEND_RESET_RECVD),
                                                  f.error_code & _U32, f.final_size))
        elif t is fr.StreamsBlockedFrame:
            self.streams.on_streams_blocked_acked(f.uni)
        elif t is fr.NewTokenFrame:
            self.token_pending = False

    # ============================================================== sending
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        """Everything that may be sent now, as (datagram, destination address)."""
        return [(d, r) for d, r, _l in self._collect(now)]

    def datagrams_to_send_from(self, now: float) -> list[tuple[bytes, Addr, Addr]]:
        """Like ``datagrams_to_send`` with the source address of each datagram:
        ``(datagram, destination, source)``.  A socket layer that sends each
        datagram from its source address calls this instead; it enables
        probing a new local address before migrating to it (RFC 9000 §9.2)
        and answering path probes on the address they came to."""
        self.per_path_io = True
        return self._collect(now)

    def _collect(self, now: float) -> list[tuple[bytes, Addr, Addr]]:
        self._now = now
        if self._rx_dirty:
            # only the idle timer: the flow-control updates and the ACK timer
            # of _flush_rx are what every flush below does anyway
            self._rx_idle_timer()
        state = self.state
        if state is not _ESTABLISHED:
            if state in (_CLOSED, _LISTENING, _DRAINING):
                return []
            if state == _CLOSING and self._close_sent_at >= 0:
                return []
        if self._ack_later is not None and \
                self.cc.bytes_in_flight + 2 * self.paths.max_datagram_size() > \
                self.cc.congestion_window:
            self.settle()  # the deferred ACK may open the window (RFC 9002 §7)
        self._queue_flow_updates()  # _prepare_output, _rx_dirty being cleared
        if self.paths.pending_responses:
            self._queue_path_responses()
        outq = self.outq
        if self.state is _ESTABLISHED and len(self.streams._pending_send) == 1 \
                and not (outq.dgrams or outq.probes[APP] or outq.ctrl[APP] or self._pmtu_pending
                         or self._path_responses or self._probe_out) and outq._fast_ok(self):
            # a request or reply: what build_datagrams' first step builds, and
            # everything below would then add nothing to it
            paths = self.paths
            d = outq._build_small(self, now, paths.max_datagram_size())
            if d is not None:
                if self._ku_hold and self._ku_sent_at is None:
                    self._ku_sent_at = now
                self._timers_stale = True
                active = paths.paths[0]
                return [(d, active.remote, active.local)]
        if self.state is _ESTABLISHED and self._nothing_to_send(now):
            self._timers_stale = True
            return []
        dgrams = self.outq.build_datagrams(self, now)
        if self.state == _CLOSING and dgrams:
            self._close_sent_at = now
        elif self._pmtu_pending and self.state == _ESTABLISHED:
            probe = self._build_pmtu_probe(now)
            if probe is not None:
                dgrams.append(probe)
        active = self.paths.paths[0]
        remote, local = active.remote, active.local
        out = [(d, remote, local) for d in dgrams]
        if self._path_responses or self._probe_out:
            if self.state == _ESTABLISHED:
                for data, r, lo in self._path_responses:
                    resp = self._build_probe(now, self.dcid,
                                             fr.PathResponseFrame(data).encode(), MIN_PMTU)
                    if resp is not None:
                        out.append((resp, r, lo if lo is not None else local))
                out.extend(self._probe_out)
            self._path_responses.clear()
            self._probe_out.clear()
        if self._ku_hold and self._ku_sent_at is None and out:
            self._ku_sent_at = now  # first packets under the new keys
        self._timers_stale = True
        return out

    def _prepare_output(self) -> None:
        """Queue the frames that wait for the next flush: the deferred work of
        the fast receive path, flow-control updates, PATH_RESPONSEs."""
        if self._rx_dirty:
            self._flush_rx()  # queues the flow-control updates too
        else:
            self._queue_flow_updates()
        self._queue_path_responses()

    def _nothing_to_send(self, now: float) -> bool:
        """Cheap check that the packer would build nothing now (empty flushes
        are frequent: the socket layer flushes after every batch and send)."""
        outq = self.outq
        # (also before the handshake is confirmed, e.g. a client between its
        # Finished and HANDSHAKE_DONE: every space with keys is checked below)
        if outq.close_pending or outq.dgrams or self._pmtu_pending or self._path_responses \
                or self._probe_out:
            return False
        if self.streams._pending_send and not outq.cork:
            return False
        probes = outq.probes
        ctrl = outq.ctrl
        spaces = self.spaces
        keys = self._send_keys
        for i in (INITIAL, HANDSHAKE, APP):
            if probes[i] or ctrl[i]:
                return False
            if keys[i] is None:
                continue
            if outq.crypto[i].has_pending():
                return False
            sp = spaces[i]
            if sp.ack_pending and (sp.ack_needed or (sp.ack_deadline is not None
                                                     and now >= sp.ack_deadline)):
                return False
        return True

    def _queue_path_responses(self) -> None:
        pend = self.paths.pending_responses
        if pend:
            for data, _idx in pend:
                self.outq.push_ctrl(APP, fr.PathResponseFrame(data))
            pend.clear()

    def _on_packet_sent(self, space: int, p: SentPacket) -> None:
        pns = self.spaces[space]
        pns.on_packet_sent(p)
        if space == APP and self.use_early:
            self._early_pns.add(p.pn)
        if p.in_flight:
            self.cc.on_packet_sent(p.size, p.sent_time)
            self.pacer.on_packet_sent(p.size, p.sent_time)
        if p.ack_eliciting:
            self._on_eliciting_sent(p.sent_time)
        if space == HANDSHAKE and self.is_client and self._send_keys[INITIAL] is not None:
            self._drop_space(INITIAL)  # RFC 9001 §4.9.1

    def _on_eliciting_sent(self, now: float) -> None:
        """Timers moved by sending an ack-eliciting packet at ``now`` (also
        called once per burst by ``OutQueue._build_stream_burst``)."""
        if not self._eliciting_since_recv:
            # RFC 9000 §10.1: restart the idle timer on the first
            # ack-eliciting packet sent after receiving (set by _rearm_timers)
            self._eliciting_since_recv = True
            self._last_activity = now
            self._idle_stale = self._timers_stale = True
        if self.keepalive_interval:
            self.timers.set(TimerKind.KEEPALIVE, now + self.keepalive_interval / 1e6)

    def _fill_streams(self, pkt: Any, room: int) -> int:
        """Append STREAM frames for the scheduler's streams (round robin)."""
        payload = pkt.payload
        records = pkt.records
        for st in self.streams.sendable():
            if room < 24:
                break
            sid = st.id
            hdr = 1 + _vsize(sid) + 8 + 2
            send = st.send
            if send is None:
                continue
            chunk = send.next_chunk(room - hdr)
            if chunk is None:
                continue
            off, data, fin = chunk
            enc = fr.StreamFrame(sid, off, data, fin).encode()
            payload.append(enc)
            records.append((REC_STREAM, sid, off, len(data), fin))
            room -= len(enc)
            pkt.eliciting = True
        return room

    def _queue_flow_updates(self) -> None:
        streams = self.streams
        if self.state != _ESTABLISHED and self._send_keys[APP] is None:
            return
        v = streams.should_send_max_data()
        if v is not None:
            self.outq.push_ctrl(APP, fr.MaxDataFrame(v))
        pending = streams._recv.pending  # (cheap checks: this runs every flush)
        if pending[0] or pending[1]:
            uni, bidi = streams.max_streams_update()
            if uni is not None:
                self.outq.push_ctrl(APP, fr.MaxStreamsFrame(uni, True))
            if bidi is not None:
                self.outq.push_ctrl(APP, fr.MaxStreamsFrame(bidi, False))
        if streams._streams_blocked:
            for uni_b, limit in streams.take_streams_blocked():
                self.outq.push_ctrl(APP, fr.StreamsBlockedFrame(limit, uni_b))

    # =============================================================== timers
    def next_timer(self) -> float | None:
        """The earliest deadline at which ``handle_timer`` must run (now,
        when the deferred ACK processing just queued a retransmission)."""
        if self._ack_later is not None and self.settle():
            return self._now
        if self._rx_dirty:
            self._flush_rx()
        if self._timers_stale:
            self._rearm_timers()
        return self.timers.next()

    def _rearm_timers(self) -> None:
        self._timers_stale = False
        self._set_loss_timer()
        self._set_ack_timer()
        if self._idle_stale:
            self._idle_stale = False
            if self._idle_timeout and not self.is_closed:
                # RFC 9000 §10.1: from the last receipt or first ack-eliciting send
                self.timers.set(TimerKind.IDLE, self._last_activity + self._idle_deadline_span())

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline has passed."""
        self._now = now
        if self._ack_later is not None:
            self.settle()
        if self._rx_dirty:
            self._flush_rx()
        if self._timers_stale:
            self._rearm_timers()
        timers = self.timers
        for kind in timers.expired(now):
            timers.stop(kind)
            if kind == TimerKind.CLOSE:
                self.state = _CLOSED
                timers.stop_all()
                return
            if kind == TimerKind.IDLE:
                self._on_idle_timeout()
                return
            if kind == TimerKind.LOSS:
                self._on_loss_timeout(now)
            elif kind == TimerKind.ACK:
                for sp in self.spaces:  # due now: the next datagrams_to_send has it
                    if sp.ack_deadline is not None and sp.ack_deadline <= now:
                        sp.ack_needed = True
                        sp.ack_deadline = None
            elif kind == TimerKind.KEEPALIVE:
                if self.state == _ESTABLISHED:
                    self.outq.push_ctrl(APP, fr.PingFrame())
                if self.keepalive_interval:
                    timers.set(TimerKind.KEEPALIVE, now + self.keepalive_interval / 1e6)
            elif kind == TimerKind.PMTU:
                if self._pmtu_retry_size:
                    self._pmtu_pending = True
                else:
                    self._pmtu_start(now)
            elif kind == TimerKind.PATH:
                self._path_timer(now)
        self._set_ack_timer()

    def _on_idle_timeout(self) -> None:
        """RFC 9000 §10.1: silently close; the kernel raises a close event."""
        self._set_close_info(0, 0, b"idle timeout")
        self._event(abi.ConnectionCloseEvent(0, 0, b""))
        self.error = errno.ETIMEDOUT
        self.state = _CLOSED
        self.timers.stop_all()

    def _on_loss_timeout(self, now: float) -> None:
        """RFC 9002 §6.2 / App. A.9: time-threshold loss or PTO."""
        best: int | None = None
        best_t = 0.0
        for i, sp in enumerate(self.spaces):
            if sp.loss_time is not None and (best is None or sp.loss_time < best_t):
                best, best_t = i, sp.loss_time
        if best is not None:
            self._detect_and_handle_loss(best, now)
            self._set_loss_timer()
            return
        space = self._pto_space()
        self.pto_count += 1
        if space is None:
            # client anti-deadlock probe (RFC 9002 §6.2.2.1)
            space = HANDSHAKE if self._send_keys[HANDSHAKE] is not None else INITIAL
        pns = self.spaces[space]
        if space != APP:
            # re-send unacknowledged CRYPTO data in the probe
            buf = self.outq.crypto[space]
            for p in pns.sent.values():
                for rec in p.frames:
                    if rec[0] == 1:
                        buf.on_lost(rec[2], rec[3], False)
        else:
            for p in list(pns.sent.values())[:2]:
                for rec in p.frames:
                    if rec[0] == REC_STREAM:
                        self.streams.on_stream_lost(rec[1], rec[2], rec[3], rec[4])
                    elif rec[0] == REC_CTRL and type(rec[1]) not in (
                            fr.PathChallengeFrame, fr.PathResponseFrame):
                        self._ctrl_lost(rec[1], APP)
        self.outq.probes[space] = 2
        self._set_loss_timer()

    def _pto_space(self) -> int | None:
        best: int | None = None
        best_t = 0.0
        for i, sp in enumerate(self.spaces):
            if sp.eliciting_in_flight == 0 or sp.last_ack_eliciting_time is None:
                continue
            if i == APP and not self.handshake_confirmed:
                continue
            t = sp.last_ack_eliciting_time
            if best is None or t < best_t:
                best, best_t = i, t
        return best

    def _set_loss_timer(self) -> None:
        timers = self.timers
        if self.is_closed:
            timers.stop(TimerKind.LOSS)
            return
        earliest: float | None = None
        for sp in self.spaces:
            if sp.loss_time is not None and (earliest is None or sp.loss_time < earliest):
                earliest = sp.loss_time
        if earliest is not None:
            timers.set(TimerKind.LOSS, earliest)
            return
        allowance = self.paths.send_allowance()
        if allowance is not None and allowance <= 0:
            timers.stop(TimerKind.LOSS)  # RFC 9002 §6.2.2.1: amplification blocked
            return
        backoff = 1 << min(self.pto_count, 16)
        pto_time: float | None = None
        in_flight = False
        for i, sp in enumerate(self.spaces):
            if sp.eliciting_in_flight == 0 or sp.last_ack_eliciting_time is None:
                continue
            in_flight = True
            if i == APP and not self.handshake_confirmed:
                continue
            t = sp.last_ack_eliciting_time + self.rtt.pto(i == APP) * backoff
            if pto_time is None or t < pto_time:
                pto_time = t
        if pto_time is None and self.is_client and not self.handshake_confirmed \
                and self.state == _ESTABLISHING and not in_flight:
            # RFC 9002 §6.2.2.1: the server may be amplification-blocked
            pto_time = self._now + self.rtt.pto(False) * backoff
        timers.set(TimerKind.LOSS, pto_time)

    def _set_ack_timer(self) -> None:
        t: float | None = None
        for sp in self.spaces:
            if sp.ack_pending and not sp.ack_needed and sp.ack_deadline is not None:
                t = sp.ack_deadline if t is None else min(t, sp.ack_deadline)
        self.timers.set(TimerKind.ACK, t)

    # ================================================================ close
    def close(self, now: float, errcode: int | None = None, app: bool = True) -> None:
        """Send CONNECTION_CLOSE with the close info (quic_outq_transmit_app_close)."""
        self._now = now
        if self.state in (_CLOSED, _LISTENING):
            self.state = _CLOSED
            return
        if self.is_closed:
            return
        if errcode is not None:
            self.close_errcode = errcode
        if self.state == _ESTABLISHING:
            # RFC 9000 §10.2.3: no application close before 1-RTT keys
            # (quic_outq_transmit_app_close records APPLICATION_ERROR)
            self.close_errcode = APPLICATION_ERROR
            f = fr.ConnectionCloseFrame(APPLICATION_ERROR, 0, b"")
        else:
            f = fr.ConnectionCloseFrame(self.close_errcode, 0, self.close_phrase,
                                        application=app)
        self._enter_closing(f, now)

    def _close_transport(self, code: int, ftype: int, reason: str) -> None:
        """A local transport error: close with a transport CONNECTION_CLOSE."""
        if self.is_closed:
            return
        # outqueue.c quic_outq_transmit_close: event and close info carry the
        # code and frame type; the close info also keeps the phrase we send
        phrase = reason.encode()[:63]
        self._set_close_info(code & _U32, ftype & 0xFF, phrase)
        self._event(abi.ConnectionCloseEvent(code & _U32, ftype & 0xFF, b""))
        self.error = errno.EPROTO
        f = fr.ConnectionCloseFrame(code, ftype, phrase)
        self._enter_closing(f, self._now)

    def _enter_closing(self, f: fr.ConnectionCloseFrame, now: float) -> None:
        outq = self.outq
        outq.close_frame = f
        outq.close_pending = True
        outq.close_spaces = tuple(i for i in (INITIAL, HANDSHAKE, APP)
                                  if self._send_keys[i] is not None)
        if APP in outq.close_spaces and HANDSHAKE in outq.close_spaces and \
                self.state == _ESTABLISHED:
            outq.close_spaces = (APP,)
        self.state = _CLOSING
        self._close_sent_at = -1.0
        self.timers.stop_all()
        self.timers.set(TimerKind.CLOSE, now + 3 * self.rtt.pto())

    def _closing_receive(self, now: float) -> None:
        # RFC 9000 §10.2.1: answer incoming packets with the close, rate-limited
        self._close_recv_count += 1
        if self._close_recv_count & (self._close_recv_count - 1) == 0:
            self._close_sent_at = -1.0

    # ========================================================= receive API
    def recv(self, bufsize: int, peek: bool = False) -> RecvItem | None:
        """Take the next item of the receive queue (recvmsg)."""
        item, freed = self.inq.recv(bufsize, peek)
        if freed and item is not None and item.stream_id is not None:
            recv = self.streams.consume(item.stream_id, freed)
            if recv is not None:
                v = recv.should_send_max_stream_data()
                if v is not None:
                    self.read_output = True
                    self.outq.push_ctrl(APP, fr.MaxStreamDataFrame(item.stream_id, v))
            if self.state == _ESTABLISHED:
                v2 = self.streams.should_send_max_data()
                if v2 is not None:
                    self.read_output = True
                    self.outq.push_ctrl(APP, fr.MaxDataFrame(v2))
        return item

    def readable(self) -> bool:
        return self.inq.readable()

    def has_output(self, now: float) -> bool:
        """Whether ``datagrams_to_send`` might send something or move a timer
        now (due flow-control updates are queued first). False lets the socket
        layer skip the flush after a call that rarely queues frames, such as a
        stream read."""
        if self.state is not _ESTABLISHED:
            return True
        if self._ack_later is not None:
            self.settle()
        self._prepare_output()
        return not self._nothing_to_send(now)

    def output_due(self, now: float) -> bool:
        """Whether something must be sent now, not merely with the application's
        next send: an ACK that is due (RFC 9000 §13.2.1, §13.2.2), a queued
        control frame, probe or PATH_RESPONSE.  Cheaper than ``has_output``:
        the fast receive path's deferred timer work is left to the next flush
        or ``next_timer``, which the caller must run before it sleeps."""
        if self.state is not _ESTABLISHED:
            return True
        return bool(self.paths.pending_responses) or not self._nothing_to_send(now)

    # ============================================================ send API
    def _sndbuf(self) -> int:
        return max(SNDBUF_MIN, 4 * self.cc.congestion_window)

    def _buffered(self) -> int:
        total = 0
        for st in self.streams.streams.values():
            if st.send is not None:
                total += st.send.bytes_in_flight_or_buffered
        return total

    def writable(self) -> bool:
        """Room in the send buffer and connection-level credit (poll POLLOUT)."""
        if self.state != _ESTABLISHED:
            return False
        if self._ack_later is not None:
            self.settle()
        if self.streams.max_data_peer <= self.streams.data_sent:
            return False
        return self._buffered() < self._sndbuf()

    def send_stream(self, stream_id: int, data: bytes, flags: int, has_cmsg: bool) -> int:
        """Queue stream data (sendmsg); returns bytes accepted.

        ``stream_id`` -1 uses the active stream or opens the next one.  Errors
        as the kernel: EINVAL (bad flags/stream), EPIPE (closed), EMSGSIZE
        (empty without FIN), EAGAIN (buffer full / stream limit), ENOSPC (flow
        control with a STREAM_INFO cmsg), ENOSTR (closed stream id).
        """
        if not flags and self.state is _ESTABLISHED:
            n = self._send_stream_fast(stream_id, data)
            if n:
                return n
        if flags & ~_SEND_FLAGS:
            raise _oserr(errno.EINVAL, "unsupported flags")
        if self.state in (_CLOSED, _LISTENING) or self.is_closed:
            raise _oserr(errno.EPIPE)
        sflags = flags & _STREAM_FLAGS
        st = None
        if stream_id >= 0 and not sflags & _NEW:
            # an open stream of ours (the usual send): no kernel-rule lookup
            st = self.streams.streams.get(stream_id)
            if st is not None and (st.send is None or st.send.state >= StreamState.SEND_SENT):
                st = None  # send_stream below raises as the kernel does
        if st is None:
            sid = self.streams.resolve_send_id(stream_id, sflags)
            st = self.streams.send_stream(sid, sflags, self._send_keys[APP] is not None)
        fin = bool(sflags & _FIN)
        n = len(data)
        if not n and not fin:
            raise _oserr(errno.EMSGSIZE)
        self._send_cork = bool(flags & MSG_MORE)
        self.outq.cork = self._send_cork
        space = self._sndbuf() - self._buffered()
        if space < n and self._ack_later is not None:
            self.settle()  # acknowledged data leaves the send buffer
            space = self._sndbuf() - self._buffered()
        if n:
            credit = self.streams.send_credit(st)
            take = min(n, credit, max(space, 0))
            if take <= 0:
                if space > 0 and credit <= 0:
                    # flow control stall (socket.c quic_wait_for_stream_send)
                    self._queue_blocked(st, sflags)
                    raise _oserr(errno.ENOSPC if has_cmsg else errno.EAGAIN)
                raise _oserr(errno.EAGAIN)
            if take < n:
                self._queue_blocked(st, sflags)
                fin = False
            accepted = self.streams.write(st, data if take == n else data[:take], fin)
            if sflags & _SNDBLOCK and accepted < n:
                self._queue_blocked(st, sflags)
            return accepted
        self.streams.write(st, b"", True)
        return 0

    def _send_stream_fast(self, stream_id: int, data: bytes) -> int:
        """``send_stream`` without flags on an open stream of ours when all of
        ``data`` fits the stream and connection credit and the send buffer:
        what ``Streams.write`` does then, inline; 0 (nothing changed) for
        anything else, which the general path handles."""
        st = self.streams.streams.get(stream_id)
        if st is None or type(data) is not bytes:
            return 0
        send = st.send
        n = len(data)
        if send is None or send.state >= _S_SENT or not n:
            return 0
        streams = self.streams
        if n > send.max_data - send.write_offset or \
                n > streams.max_data_peer - streams.data_sent or \
                n > self._sndbuf() - self._buffered():
            return 0  # blocked, partly or fully: the general path decides
        send._append(data)
        send.write_offset += n
        send.state = _S_SEND
        streams.data_sent += n
        streams._pending_send[stream_id] = st  # as the stream's notifier
        self._send_cork = self.outq.cork = False
        return n

    def _queue_blocked(self, st: Any, sflags: int) -> None:
        if not sflags & _SNDBLOCK:
            return
        v = self.streams.take_data_blocked()
        if v is not None:
            self.outq.push_ctrl(APP, fr.DataBlockedFrame(v))
        if st.send is not None:
            w = st.send.take_data_blocked()
            if w is not None:
                self.outq.push_ctrl(APP, fr.StreamDataBlockedFrame(st.id, w))

    def max_datagram_payload(self) -> int:
        """Largest datagram send_datagram accepts (kernel MSS_DGRAM rule)."""
        peer = self.remote_tp["max_datagram_frame_size"]
        limit = min(peer, self.paths.max_datagram_size())
        overhead = 1 + len(self.dcid) + 4 + 16 + 1 + 2
        return max(0, limit - overhead)

    def send_datagram(self, data: bytes) -> None:
        """Queue an unreliable DATAGRAM frame (RFC 9221)."""
        if self.state in (_CLOSED, _LISTENING) or self.is_closed:
            raise _oserr(errno.EPIPE)
        if not self.remote_tp["max_datagram_frame_size"]:
            raise _oserr(errno.EINVAL, "peer does not accept datagrams")
        if not data or len(data) > self.max_datagram_payload():
            raise _oserr(errno.EMSGSIZE)
        if self.outq.dgram_bytes + len(data) > self._sndbuf():
            raise _oserr(errno.EAGAIN)
        self.outq.push_datagram(bytes(data))

    # ============================================================== options
    def set_event(self, type: int, on: bool) -> None:
        if not 0 < type < len(EventType):
            raise _oserr(errno.EINVAL)
        if on:
            self.inq.events |= 1 << type
        else:
            self.inq.events &= ~(1 << type)

    def get_event(self, type: int) -> bool:
        if not 0 < type < len(EventType):
            raise _oserr(errno.EINVAL)
        return bool(self.inq.events & (1 << type))

    def stream_open(self, stream_id: int, flags: int) -> int:
        if self.state in (_CLOSED, _LISTENING) or self.is_closed:
            raise _oserr(errno.EPIPE)
        return self.streams.stream_open(stream_id, flags, self._send_keys[APP] is not None)

    def stream_reset(self, stream_id: int, errcode: int) -> None:
        if self.state != _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        final = self.streams.reset_stream(stream_id, errcode)
        self.outq.push_ctrl(APP, fr.ResetStreamFrame(stream_id, errcode, final))

    def stream_stop_sending(self, stream_id: int, errcode: int) -> None:
        if self.state != _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        self.streams.stop_sending(stream_id, errcode)
        self.outq.push_ctrl(APP, fr.StopSendingFrame(stream_id, errcode))

    def set_connection_id(self, info: abi.ConnectionIdInfo) -> None:
        if self.state != _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        if info.dest:
            for seq in self.dest.set_connection_id(info.prior_to, info.active):
                self._queue_retire(seq)
            self.dcid = self.dest.active.cid
            if info.prior_to:
                self._event(abi.ConnectionIdEvent(1, self.dest.active_seq,
                                                  self.dest.first_number))
        else:
            for c in self.source.set_connection_id(info.prior_to, info.active):
                self.outq.push_ctrl(APP, fr.NewConnectionIdFrame(
                    c.seq, c.retire_prior_to, c.cid, c.token))

    def get_connection_id(self, dest: bool) -> abi.ConnectionIdInfo:
        if self.state != _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        s = self.dest if dest else self.source
        active, first = s.get_connection_id()
        return abi.ConnectionIdInfo(dest=int(dest), active=active, prior_to=first)

    def set_close_info(self, info: abi.ConnectionClose) -> None:
        phrase = bytes(info.phrase).split(b"\0", 1)[0]
        self.close_errcode = info.errcode
        self.close_frame = 0  # the kernel ignores the frame field
        self.close_phrase = phrase

    def _set_close_info(self, errcode: int, frame: int, phrase: bytes) -> None:
        self.close_errcode = errcode
        self.close_frame = frame
        self.close_phrase = phrase

    def get_close_info(self) -> abi.ConnectionClose:
        return abi.ConnectionClose(errcode=self.close_errcode, frame=self.close_frame,
                                   phrase=self.close_phrase[:63])

    def migrate(self, local: Addr, now: float | None = None) -> None:
        """CONNECTION_MIGRATION: preferred address (server, pre-handshake) or
        migrate the local address (hook: path validation is started, the
        socket layer must bind ``local``)."""
        if self.state in (_CLOSED, _LISTENING) or self.is_closed:
            raise _oserr(errno.EPIPE)
        if local == self.paths.local:
            raise _oserr(errno.EINVAL)
        if self.state == _ESTABLISHING:
            if self.is_client or self.paths.disable_local_migration:
                raise _oserr(errno.EINVAL)
            self.paths.pref_addr = True
            self.paths.set_addresses(1, local, None)
            self._pref_local = local
            return
        old = self.paths.local
        if isinstance(old, tuple) and isinstance(local, tuple) and len(old) != len(local):
            raise _oserr(errno.EINVAL, "migration needs the same address family")
        if self.paths.challenge is not None or self.paths.pref_addr:
            raise _oserr(errno.EAGAIN)
        t = self._now if now is None else now
        if self.per_path_io:
            # probe the new local address first; switch on PATH_RESPONSE
            # (RFC 9000 §9.2), with a connection ID not used before (§9.5)
            if self.remote_tp["disable_active_migration"]:
                raise _oserr(errno.EINVAL)  # RFC 9000 §18.2
            if not self.dest.select_alt() or self.dest.alt is self.dest.active:
                self.dest.clear_alt()
                raise _oserr(errno.EAGAIN, "no spare connection ID")
            self._start_path_probe(local, self.paths.remote, t, "local")
            return
        # Simplification: the new local address is used at once (the socket
        # layer rebinds to ``local_addr``); the event comes with validation.
        self.paths.set_addresses(0, local, self.paths.remote)
        data = self.paths.start_challenge(0, t, 3 * self.rtt.pto())
        self._migration_local = 1
        self.outq.push_ctrl(APP, fr.PathChallengeFrame(data))
        self.timers.set(TimerKind.PATH, t + 3 * self.rtt.pto())

    def early_data_rejected(self) -> int:
        """Client: the server refused 0-RTT (the TLS layer saw no early_data in
        EncryptedExtensions).  Every 0-RTT packet still unacknowledged is
        treated as lost at once, so its stream data goes again in 1-RTT
        packets (RFC 9001 §4.6.2); returns how many packets that was.  Without
        this call the data is recovered by loss detection, only later."""
        pns = self.spaces[APP]
        n = 0
        for pn in sorted(self._early_pns):
            p = pns.sent.pop(pn, None)
            if p is None:
                continue
            n += 1
            if p.in_flight:
                pns.bytes_in_flight -= p.size
                if p.ack_eliciting:
                    pns.eliciting_in_flight -= 1
                self.cc.on_packet_discarded(p.size)
            if p.frames:
                self.outq.on_lost(self, p, APP)
        self._early_pns.clear()
        self.use_early = False
        self._early_send = None
        self._set_loss_timer()
        return n

    def key_update(self) -> None:
        """Start a key update (RFC 9001 §6); EINVAL while one is pending."""
        if self.state != _ESTABLISHED:
            raise _oserr(errno.EPIPE)
        if self._key_pending or self._ku_hold:
            raise _oserr(errno.EINVAL, "key update pending")
        key = self._send_keys[APP]
        if key is None:
            raise _oserr(errno.EINVAL)
        self._send_keys[APP] = key.next_phase()
        self.key_phase ^= 1
        self._key_pending = True
        self._key_update_sent_pn = self.spaces[APP].next_pn
        self._ku_hold = True
        self._ku_sent_at = None

    @property
    def key_update_pending(self) -> bool:
        """``key_update`` would fail with EINVAL now (kernel key_pending)."""
        return self._key_pending or self._ku_hold

    def _ku_check(self, now: float) -> None:
        """A packet in the current key phase arrived: lift the hold on a new
        key update 2 PTO after we first sent under the new keys (crypto.c;
        RFC 9001 §6.5 asks to wait for the peer to have the new keys)."""
        t = self._ku_sent_at
        if t is not None and now - t >= 2 * self.rtt.pto():
            self._ku_hold = False
            self._ku_sent_at = None

    def set_transport_param(self, p: abi.TransportParam) -> None:
        """TRANSPORT_PARAM: validate and copy the non-zero fields (socket.c)."""
        if self.state == _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        if p.remote and self.state != _ESTABLISHING:
            raise _oserr(errno.EINVAL)
        remote = bool(p.remote)
        tp = dict(self.remote_tp if remote else self.local_tp)

        def bad() -> OSError:
            return _oserr(errno.EINVAL)

        if p.max_udp_payload_size:
            if not MIN_UDP_PAYLOAD <= p.max_udp_payload_size <= MAX_UDP_PAYLOAD:
                raise bad()
            tp["max_udp_payload_size"] = p.max_udp_payload_size
        if p.ack_delay_exponent:
            if p.ack_delay_exponent > MAX_ACK_DELAY_EXPONENT:
                raise bad()
            tp["ack_delay_exponent"] = p.ack_delay_exponent
        if p.max_ack_delay:
            if p.max_ack_delay >= MAX_ACK_DELAY:
                raise bad()
            tp["max_ack_delay"] = p.max_ack_delay
        if p.active_connection_id_limit:
            if not CONN_ID_LEAST <= p.active_connection_id_limit <= CONN_ID_LIMIT:
                raise bad()
            tp["active_connection_id_limit"] = p.active_connection_id_limit
        if p.max_idle_timeout:
            if p.max_idle_timeout < MIN_IDLE_TIMEOUT:
                raise bad()
            tp["max_idle_timeout"] = p.max_idle_timeout
        if p.max_datagram_frame_size:
            if p.max_datagram_frame_size < MIN_PMTU:
                raise bad()
            tp["max_datagram_frame_size"] = p.max_datagram_frame_size
        if p.max_data:
            if p.max_data < MIN_PMTU or (not remote and p.max_data > S32_MAX // 4):
                raise bad()
            tp["max_data"] = p.max_data
        for name in ("max_stream_data_bidi_local", "max_stream_data_bidi_remote",
                     "max_stream_data_uni"):
            v = getattr(p, name)
            if v:
                if v < MIN_PMTU or (not remote and v > S32_MAX // 8):
                    raise bad()
                tp[name] = v
        for name in ("max_streams_bidi", "max_streams_uni"):
            v = getattr(p, name)
            if v:
                if v > MAX_STREAMS:
                    if not remote:
                        raise bad()
                    v = MAX_STREAMS
                tp[name] = v
        for name in ("disable_active_migration", "disable_1rtt_encryption",
                     "disable_compatible_version", "grease_quic_bit", "stateless_reset"):
            if getattr(p, name):
                tp[name] = getattr(p, name)
        if remote:
            self.remote_tp = tp
            self._apply_remote_tp()
        else:
            self.local_tp = tp
            self._apply_local_stream_params()
            self._idle_timeout = tp["max_idle_timeout"] / 1e6

    def get_transport_param(self, remote: bool) -> abi.TransportParam:
        tp = self.remote_tp if remote else self.local_tp
        return abi.TransportParam(remote=int(remote), **tp)

    def set_config(self, c: abi.Config) -> None:
        """CONFIG: validate and copy the non-zero fields (socket.c)."""
        if self.state == _ESTABLISHED:
            raise _oserr(errno.EINVAL)
        if c.payload_cipher_type and c.payload_cipher_type not in (51, 52, 53, 54):
            raise _oserr(errno.EINVAL)
        if c.initial_smoothed_rtt and not RTT_MIN <= c.initial_smoothed_rtt <= RTT_MAX:
            raise _oserr(errno.EINVAL)
        if c.congestion_control_algo and c.congestion_control_algo >= len(abi.CongAlgo):
            raise _oserr(errno.EINVAL)
        if c.plpmtud_probe_interval and not (
                MIN_PROBE_TIMEOUT <= c.plpmtud_probe_interval
                <= 0xFFFFFFFF // PMTUD_RAISE_TIMER_FACTOR):
            raise _oserr(errno.EINVAL)
        if c.keepalive_probe_interval and c.keepalive_probe_interval < MIN_PATH_TIMEOUT:
            raise _oserr(errno.EINVAL)
        if c.receive_session_ticket:
            self.receive_session_ticket = c.receive_session_ticket
        if c.validate_peer_address:
            self.validate_peer_address = 1
        if c.certificate_request:
            self.certificate_request = c.certificate_request
        if c.stream_data_nodelay:
            self.stream_data_nodelay = 1
        if c.payload_cipher_type:
            self.payload_cipher_type = c.payload_cipher_type
        if c.version:
            self.cfg_version = c.version
        if c.initial_smoothed_rtt:
            self.initial_srtt = c.initial_smoothed_rtt
            if not self.rtt.has_sample:
                self.rtt = RttEstimator(self.initial_srtt / 1e6, self.rtt.max_ack_delay)
        if c.congestion_control_algo:
            self.cong_algo = c.congestion_control_algo
            inflight = self.cc.bytes_in_flight
            self.cc = new_congestion_control(self.cong_algo, self.paths.max_datagram_size())
            self.cc.bytes_in_flight = inflight
        if c.plpmtud_probe_interval:
            self.plpmtud_interval = c.plpmtud_probe_interval
        if c.keepalive_probe_interval:
            self.keepalive_interval = c.keepalive_probe_interval

    def get_config(self) -> abi.Config:
        return abi.Config(
            version=self.cfg_version, plpmtud_probe_interval=self.plpmtud_interval,
            initial_smoothed_rtt=self.initial_srtt, payload_cipher_type=self.payload_cipher_type,
            congestion_control_algo=self.cong_algo,
            validate_peer_address=self.validate_peer_address,
            stream_data_nodelay=self.stream_data_nodelay,
            receive_session_ticket=self.receive_session_ticket,
            certificate_request=self.certificate_request,
            keepalive_probe_interval=self.keepalive_interval)

    def set_token(self, token: bytes) -> None:
        if not self.is_client:
            if self.state != _ESTABLISHED:
                raise _oserr(errno.EINVAL)
            if self.token_pending:
                raise _oserr(errno.EAGAIN)
            self.token_pending = True
            self.outq.push_ctrl(APP, fr.NewTokenFrame(self._new_token()))
            return
        if not token or len(token) > TOKEN_MAX_LEN:
            raise _oserr(errno.EINVAL)
        self.token = bytes(token)

    def get_token(self) -> bytes:
        if not self.is_client:
            raise _oserr(errno.EINVAL)
        return self.token

    def set_alpn(self, alpn: str) -> None:
        raw = alpn.encode() if isinstance(alpn, str) else bytes(alpn)
        if not raw or len(raw) > ALPN_MAX_LEN or self.state == _LISTENING:
            raise _oserr(errno.EINVAL)
        parts = [p.strip() for p in raw.split(b",")]
        if any(not p or len(p) > 255 for p in parts):
            raise _oserr(errno.EINVAL)
        self.alpn = b",".join(parts)

    def get_alpn(self) -> str:
        return self.alpn.decode()

    def set_session_ticket(self, data: bytes) -> None:
        if not TICKET_MIN_LEN <= len(data) <= TICKET_MAX_LEN:
            raise _oserr(errno.EINVAL)
        self.ticket = bytes(data)

    def get_session_ticket(self) -> bytes:
        if self.state == _LISTENING:
            raise _oserr(errno.EPIPE)
        if self.is_client:
            if self.state != _ESTABLISHING and not self.ticket_ready:
                return b""
            return self.ticket
        if self.state == _CLOSED:
            raise _oserr(errno.EPIPE)
        if self.ticket:
            return self.ticket
        # server: a ticket key derived from the peer's IP address (not its
        # port) and the listener's secret, as the kernel does
        host = self.paths.remote[0] if isinstance(self.paths.remote, tuple) else ""
        return hmac.new(self._ticket_secret, b"session_ticket" + str(host).encode(),
                        "sha512").digest()[:TICKET_KEY_LEN]


def _same_host(a: Addr, b: Addr) -> bool:
    return isinstance(a, tuple) and isinstance(b, tuple) and bool(a) and bool(b) \
        and a[0] == b[0]


def _parse_ack(payload: bytes) -> tuple[fr.AckFrame | None, int]:
    """An ACK frame (type 0x02) at the start of ``payload`` and the position
    after it; (None, 0) if it does not parse (the general parser reports it)."""
    # RFC 9000 §19.3: Largest Acknowledged, ACK Delay, ACK Range Count and
    # First ACK Range read directly; several ranges go to the frame parser
    try:
        largest, pos = decode_varint(payload, 1)
        delay, pos = decode_varint(payload, pos)
        count, pos = decode_varint(payload, pos)
        first, pos = decode_varint(payload, pos)
    except BufferReadError:
        return None, 0
    if count or first > largest:
        b = Buffer(payload, 1)
        try:
            f = fr._p_ack(b, 0x02)
        except (QuicError, ValueError):
            return None, 0
        return f, b.pos  # type: ignore[return-value]
    return fr.AckFrame([(largest - first, largest)], delay), pos


def _vsize(v: int) -> int:
    return 1 if v < 0x40 else 2 if v < 0x4000 else 4 if v < 0x40000000 else 8


_unused = (CONNECTION_REFUSED, INTERNAL_ERROR, KEY_UPDATE_ERROR, NO_ERROR, MSG_EOR,
           MSG_QUIC_NOTIFICATION)
