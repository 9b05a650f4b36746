"""UDP endpoints of the user backend: one UDP socket per bound local address.

Every user-backend QUIC socket bound to the same address and port shares one
:class:`Endpoint` (as the kernel shares one UDP tunnel socket per address,
net/quic/path.c). Incoming datagrams are demultiplexed by their Destination
Connection ID to the connection whose ``source_cids()`` contain it (or whose
original DCID it is, for a client's Initials sent before it heard from the
server). A client Initial for an unknown DCID opens a *request* on a listener:
the listener is picked by the ALPN list of the ClientHello when any listener on
the endpoint has ALPNs set (net/quic/socket.c ``quic_listen_sock_lookup``), and
the request (with every later datagram of the same DCID and peer) waits in the
listener's accept queue until ``accept()``. A full queue refuses the connection
with an Initial CONNECTION_CLOSE(CONNECTION_REFUSED) (RFC 9000 §5.2.2).

Datagrams that match no connection and no waiting request go through the
engine's stateless logic (``pyquic.engine.endpoint.stateless_response``, the
kernel's ``quic_packet_listen_process``) with the listener picked by ALPN for
an Initial, or any listener of the port otherwise: it answers Retry when the
listener's CONFIG has ``validate_peer_address`` (RFC 9000 §8.1.2), Version
Negotiation for an unknown version (§6.1) and a Stateless Reset for a packet
of a connection we no longer know (§10.3); a request is only created when it
says ``accept``. A short-header datagram matching no connection ID whose last
16 bytes are a peer's stateless reset token (§10.3.1) goes to that connection.

I/O batching: with UDP GSO (``UDP_SEGMENT``) a run of same-size datagrams to
one peer leaves in one ``sendmsg`` (up to 64 segments, one iovec each, so
they are not joined first); with ``UDP_GRO`` a receive may return several
coalesced datagrams, split by the segment size in the cmsg, and a run of
short-header ones for one connection is handed over in one call
(``Member._io_datagrams`` when the member has it). Both fall back to one
datagram per system call where unsupported.

All methods run with :data:`pyquic.user.loop.LOOP.lock` held.
"""

from __future__ import annotations

import array
import errno
import fcntl
import socket
import struct
import termios
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyquic.engine import endpoint as _stateless
from pyquic.user import alpn as _alpn
from pyquic.user.loop import LOOP

__all__ = ["Addr", "Endpoint", "Listener", "Member", "Request", "acquire", "normalize_addr"]

Addr = tuple  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

_MIN_INITIAL = 1200  # RFC 9000 §14.1
_MAX_REQUEST_DATAGRAMS = 64
_RECV_BATCH = 256
_DEFAULT_CID_LEN = 8
_RESET_TOKEN_LEN = 16
_MIN_RESET = 21  # RFC 9000 §10.3: the smallest stateless reset
_SOL_UDP = 17
_UDP_SEGMENT = 103  # linux/udp.h: GSO segment size (cmsg or option)
_UDP_GRO = 104  # linux/udp.h: coalesced receive, segment size in a cmsg
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000  # the whole GSO send must fit one UDP datagram's size field
_RECV_SIZE = 65535
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_SEG_CMSG = {n: struct.pack("=H", n) for n in range(1200, 1501)}  # usual GSO sizes
_GSO_OFF_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP,
                   errno.EMSGSIZE)


class Member(Protocol):
    """A connection served by an endpoint."""

    def _io_cids(self) -> set[bytes]: ...

    def _io_datagram(self, data: bytes, remote: Addr, local: Addr, now: float) -> None: ...

    def _io_is_reset(self, token: bytes) -> bool:
        """True if ``token`` is a stateless reset token the peer gave us."""
        ...


class Listener(Protocol):
    """A listening socket on an endpoint."""

    def _io_alpns(self) -> list[bytes]: ...

    def _io_reuseport(self) -> bool: ...

    def _io_offer(self, req: Request) -> bool: ...

    def _io_conn(self) -> Any:
        """The listener's QuicConnection (settings, static key) for stateless answers."""
        ...


@dataclass(eq=False)
class Request:
    """A client's connection attempt waiting in a listener's accept queue."""

    endpoint: Endpoint
    remote: Addr
    local: Addr
    dcid: bytes
    datagrams: list[bytes] = field(default_factory=list)
    listener: Listener | None = None

    def drop(self) -> None:
        """Forget this request (listener closed or request accepted)."""
        self.endpoint.pending.pop((self.remote, self.dcid), None)


def normalize_addr(addr: tuple) -> Addr:
    """IPv4 as (host, port); IPv6 as (host, port, 0, scope); v4-mapped IPv6 as IPv4."""
    host = addr[0]
    if len(addr) == 2:
        return (host, addr[1])
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], addr[1])
    return (host, addr[1], 0, addr[3] if len(addr) > 3 else 0)


def addr_family(addr: Addr) -> int:
    """AF_INET for a 2-tuple, AF_INET6 for a 4-tuple."""
    return socket.AF_INET if len(addr) == 2 else socket.AF_INET6


class Endpoint:
    """One UDP socket and the connections and listeners using it."""

    def __init__(self, family: int, addr: Addr) -> None:
        self.family = family
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            if family == socket.AF_INET6:
                # Dual-stack only for the wildcard address (v4 peers show as v4).
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(addr)
        except OSError:
            self.sock.close()
            raise
        self.local: Addr = normalize_addr(self.sock.getsockname())
        self.key = (family, self.local)
        self.refs = 0
        self.members: set[Member] = set()
        self.listeners: list[Listener] = []
        self.cids: dict[bytes, Member] = {}
        self.cid_lens: list[int] = [_DEFAULT_CID_LEN]
        self.pending: dict[tuple[Addr, bytes], Request] = {}
        self.closed = False
        self.gso = True  # UDP_SEGMENT until the kernel refuses it
        self._nextlen = array.array("i", [0])  # FIONREAD result (on_readable)
        self.gro = False
        try:
            self.sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
            self.gro = True
        except OSError:
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- membership ------------------------------------------------------------
    def add_member(self, m: Member) -> None:
        self.members.add(m)
        self._rebuild()

    def remove_member(self, m: Member) -> None:
        self.members.discard(m)
        self._rebuild()

    def add_listener(self, listener: Listener) -> None:
        """Register a listener; EADDRINUSE if its ALPNs clash (socket.c quic_hash)."""
        mine = set(listener._io_alpns())
        for other in self.listeners:
            theirs = set(other._io_alpns())
            if mine == theirs:
                if not (listener._io_reuseport() and other._io_reuseport()):
                    raise OSError(errno.EADDRINUSE, "address already in use")
            elif mine & theirs:
                raise OSError(errno.EADDRINUSE, "address already in use")
        self.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        for key, req in list(self.pending.items()):
            if req.listener is listener:
                del self.pending[key]

    def _rebuild(self) -> None:
        cids: dict[bytes, Member] = {}
        for m in self.members:
            for cid in m._io_cids():
                cids[cid] = m
        self.cids = cids
        lens = sorted({len(c) for c in cids if c})
        self.cid_lens = lens or [_DEFAULT_CID_LEN]

    def _lookup(self, dcid: bytes) -> Member | None:
        m = self.cids.get(dcid)
        if m is None:
            self._rebuild()
            m = self.cids.get(dcid)
        return m

    # -- I/O ----------------------------------------------------------------------
    def _dest(self, remote: Addr) -> Addr:
        if self.family == socket.AF_INET6 and len(remote) == 2:
            return ("::ffff:" + remote[0], remote[1], 0, 0)
        return remote

    def sendto(self, data: bytes, remote: Addr) -> None:
        """Send one datagram; errors are dropped (loss recovery retransmits)."""
        if self.closed:
            return
        try:
            self.sock.sendto(data, self._dest(remote))
        except OSError:
            pass

    def send_many(self, datagrams: list[bytes], remote: Addr) -> None:
        """Send datagrams to one peer, a run of equal sizes (the last may be
        shorter) per GSO ``sendmsg``; one ``sendto`` each without GSO."""
        if self.closed:
            return
        n = len(datagrams)
        if n == 1 or not self.gso:
            for d in datagrams:
                self.sendto(d, remote)
            return
        dest = self._dest(remote)
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            total = size
            limit = min(n, i + _GSO_MAX_SEGMENTS)
            while j < limit and total + size <= _GSO_MAX_BYTES:
                sz = len(datagrams[j])
                if sz > size:
                    break
                total += sz
                j += 1
                if sz < size:
                    break  # only the last segment may be shorter
            if j - i == 1 or not self.gso:
                self.sendto(datagrams[i], remote)
                i += 1
                continue
            try:
                # one iovec per datagram: the kernel gathers them (no join copy)
                self.sock.sendmsg(datagrams[i:j],
                                  [(_SOL_UDP, _UDP_SEGMENT, _SEG_CMSG.get(size) or
                                    struct.pack("=H", size))], 0, dest)
            except OSError as exc:
                if exc.errno in _GSO_OFF_ERRNOS:
                    self.gso = False  # no GSO here: send this run one by one
                    for d in datagrams[i:j]:
                        self.sendto(d, remote)
                # else dropped like any send error (loss recovery retransmits)
            i = j

    def on_readable(self, now: float) -> None:
        """Read every queued datagram (splitting GRO batches) and dispatch it:
        as the kernel processes packets on arrival, a reader then sees
        everything that came before it (e.g. a migration event before the
        data that followed it)."""
        sock = self.sock
        dispatch = self.dispatch
        if not self.gro:
            for _ in range(_RECV_BATCH):
                try:
                    data, addr = sock.recvfrom(_RECV_SIZE)
                except OSError:  # EAGAIN included: drained
                    return
                dispatch(data, normalize_addr(addr), now)
            return
        fd = sock.fileno()
        nextlen = self._nextlen
        for i in range(_RECV_BATCH):
            # after the first read, FIONREAD (the next datagram's length, 0
            # when none) ends the batch without an EAGAIN read: a round trip
            # reads one datagram (a queued empty datagram waits for the next
            # batch, the selector being level-triggered)
            try:
                if i:
                    fcntl.ioctl(fd, termios.FIONREAD, nextlen, True)
                    if not nextlen[0]:
                        return
                data, anc, _flags, addr = sock.recvmsg(_RECV_SIZE, _GRO_CMSG_SPACE)
            except OSError:  # EAGAIN (an empty datagram's report) or closed
                return
            remote = addr if len(addr) == 2 else normalize_addr(addr)  # (IPv4 as is)
            seg = 0
            for level, ctype, cdata in anc:
                if level == _SOL_UDP and ctype == _UDP_GRO and len(cdata) >= 2:
                    seg = int.from_bytes(cdata[:4] if len(cdata) >= 4 else cdata[:2],
                                         "little")
            if seg and seg < len(data):
                self._gro_batch(data, seg, remote, now)
            else:
                dispatch(data, remote, now)

    def _gro_batch(self, data: bytes, seg: int, remote: Addr, now: float) -> None:
        """Dispatch the segments of one GRO receive: runs of short-header
        packets (RFC 9000 §17.3) of one connection go to it in one call, in
        order; anything else goes through ``dispatch``.  (The CID map only
        changes with membership, never while a member processes datagrams,
        so looking a run up before processing it finds the same members.)"""
        local = self.local
        run: list[bytes] = []
        run_m: Member | None = None
        for off in range(0, len(data), seg):
            d = data[off:off + seg]
            lens = self.cid_lens
            if len(lens) == 1 and not d[0] & 0x80 and len(d) > lens[0]:
                m = self.cids.get(d[1:1 + lens[0]])
                if m is not None:
                    if m is not run_m:
                        if run_m is not None:
                            self._deliver(run_m, run, remote, local, now)
                        run = []
                        run_m = m
                    run.append(d)
                    continue
            if run_m is not None:
                self._deliver(run_m, run, remote, local, now)
                run = []
                run_m = None
            self.dispatch(d, remote, now)
        if run_m is not None:
            self._deliver(run_m, run, remote, local, now)

    @staticmethod
    def _deliver(m: Member, datagrams: list[bytes], remote: Addr, local: Addr,
                 now: float) -> None:
        many = getattr(m, "_io_datagrams", None)
        if many is not None:
            many(datagrams, remote, local, now)
        else:
            for d in datagrams:
                m._io_datagram(d, remote, local, now)

    def dispatch(self, data: bytes, remote: Addr, now: float) -> None:
        """Route one datagram to its connection, request or listener."""
        if len(data) < 2:
            return
        if data[0] & 0x80:  # long header (RFC 8999 §5.1)
            if len(data) < 7:
                return
            dlen = data[5]
            dcid = bytes(data[6 : 6 + dlen])
            m = self._lookup(dcid)
            if m is not None:
                m._io_datagram(data, remote, self.local, now)
                return
            req = self.pending.get((remote, dcid))
            if req is not None:
                if len(req.datagrams) < _MAX_REQUEST_DATAGRAMS:
                    req.datagrams.append(data)
                return
            self._unmatched(data, remote, now, dcid)
            return
        cids = self.cids
        for ln in self.cid_lens:  # short header (RFC 9000 §17.3)
            m = cids.get(data[1 : 1 + ln])
            if m is not None:
                m._io_datagram(data, remote, self.local, now)
                return
        self._rebuild()
        for ln in self.cid_lens:
            m = self.cids.get(data[1 : 1 + ln])
            if m is not None:
                m._io_datagram(data, remote, self.local, now)
                return
        if len(data) >= _MIN_RESET:
            # RFC 9000 §10.3.1: a stateless reset carries no CID of ours
            token = bytes(data[-_RESET_TOKEN_LEN:])
            for m in list(self.members):
                if m._io_is_reset(token):
                    m._io_datagram(data, remote, self.local, now)
                    return
        self._unmatched(data, remote, now, b"")

    def _unmatched(self, data: bytes, remote: Addr, now: float, dcid: bytes) -> None:
        """A datagram of no connection: Retry, VN, stateless reset or a new request."""
        listener = self._pick_listener(data) if self.listeners else None
        conn = listener._io_conn() if listener is not None else None
        try:
            dec = _stateless.stateless_response(data, remote, self.local, now, conn,
                                                cid_len=_DEFAULT_CID_LEN)
        except Exception:  # noqa: BLE001 - a hostile datagram must not stop the loop
            return
        if dec.response is not None:
            self.sendto(dec.response, remote)
        if not dec.accept or listener is None:
            return
        req = Request(self, remote, self.local, dcid, [data], listener)
        if listener._io_offer(req):
            self.pending[(remote, dcid)] = req
            return
        refuse = _stateless.refuse_response(data)  # backlog full (RFC 9000 §5.2.2)
        if refuse is not None:
            self.sendto(refuse, remote)

    def _pick_listener(self, data: bytes) -> Listener | None:
        """The listener for ``data``: by the ClientHello's ALPNs for an Initial
        (socket.c quic_listen_sock_lookup), the first one otherwise."""
        listeners = self.listeners
        if not any(lst._io_alpns() for lst in listeners):
            return listeners[0]
        try:
            hdr = _alpn.parse_long_header(data) if data[0] & 0x80 else None
        except _alpn.InitialError:
            hdr = None
        if hdr is None or not _alpn.is_initial(hdr):
            return listeners[0]  # Retry/VN/reset need only the port's settings
        try:
            offered = _alpn.initial_alpns(data)
        except _alpn.InitialError:
            return None
        if not offered:
            for lst in listeners:
                if not lst._io_alpns():
                    return lst
            return None
        for name in offered:
            for lst in listeners:
                if name in lst._io_alpns():
                    return lst
        return None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


_REGISTRY: dict[tuple[int, Addr], Endpoint] = {}


def acquire(family: int, addr: Addr) -> Endpoint:
    """The endpoint bound to ``addr`` (shared when the port is given), ref counted."""
    with LOOP.lock:
        if addr[1]:
            ep = _REGISTRY.get((family, normalize_addr(addr)))
            if ep is not None:
                ep.refs += 1
                return ep
        ep = Endpoint(family, addr)
        _REGISTRY[ep.key] = ep
        ep.refs = 1
        LOOP.add_reader(ep)
        return ep


def release(ep: Endpoint) -> None:
    """Drop one reference; the last one closes the UDP socket."""
    with LOOP.lock:
        ep.refs -= 1
        if ep.refs > 0:
            return
        if _REGISTRY.get(ep.key) is ep:
            del _REGISTRY[ep.key]
        LOOP.remove_reader(ep)
        ep.close()
