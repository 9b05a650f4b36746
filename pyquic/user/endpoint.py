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

All methods run with :data:`pyquic.user.loop.LOOP.lock` held.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from typing import Protocol

from pyquic.user import alpn as _alpn
from pyquic.user.loop import LOOP

__all__ = ["Addr", "Endpoint", "Listener", "Member", "Request", "acquire", "normalize_addr"]

Addr = tuple  # (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6

_MIN_INITIAL = 1200  # RFC 9000 §14.1
_MAX_REQUEST_DATAGRAMS = 64
_RECV_BATCH = 256
_DEFAULT_CID_LEN = 8


class Member(Protocol):
    """A connection served by an endpoint."""

    def _io_cids(self) -> set[bytes]: ...

    def _io_datagram(self, data: bytes, remote: Addr, local: Addr, now: float) -> None: ...


class Listener(Protocol):
    """A listening socket on an endpoint."""

    def _io_alpns(self) -> list[bytes]: ...

    def _io_reuseport(self) -> bool: ...

    def _io_offer(self, req: Request) -> bool: ...


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
    def sendto(self, data: bytes, remote: Addr) -> None:
        """Send one datagram; errors are dropped (loss recovery retransmits)."""
        if self.closed:
            return
        dest = remote
        if self.family == socket.AF_INET6 and len(remote) == 2:
            dest = ("::ffff:" + remote[0], remote[1], 0, 0)
        try:
            self.sock.sendto(data, dest)
        except OSError:
            pass

    def on_readable(self, now: float) -> None:
        """Read every queued datagram and dispatch it."""
        for _ in range(_RECV_BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.dispatch(data, normalize_addr(addr), now)

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
            self._new_connection(data, remote, dcid)
            return
        for ln in self.cid_lens:  # short header (RFC 9000 §17.3)
            m = self.cids.get(bytes(data[1 : 1 + ln]))
            if m is not None:
                m._io_datagram(data, remote, self.local, now)
                return
        self._rebuild()
        for ln in self.cid_lens:
            m = self.cids.get(bytes(data[1 : 1 + ln]))
            if m is not None:
                m._io_datagram(data, remote, self.local, now)
                return

    def _new_connection(self, data: bytes, remote: Addr, dcid: bytes) -> None:
        if not self.listeners or len(data) < _MIN_INITIAL or len(dcid) < 8:
            return
        try:
            hdr = _alpn.parse_long_header(data)
        except _alpn.InitialError:
            return
        if not _alpn.is_initial(hdr):
            return
        listener = self._pick_listener(data)
        if listener is None:
            return
        req = Request(self, remote, self.local, dcid, [data], listener)
        if listener._io_offer(req):
            self.pending[(remote, dcid)] = req
            return
        try:
            self.sendto(_alpn.build_refuse(data), remote)
        except _alpn.InitialError:
            pass

    def _pick_listener(self, data: bytes) -> Listener | None:
        listeners = self.listeners
        if not any(lst._io_alpns() for lst in listeners):
            return listeners[0]
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
