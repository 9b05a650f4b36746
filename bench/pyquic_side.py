"""Benchmark side for pyquic's user backend, through its public socket API only.

Like lxin/quic's C perf test, it uses the socket calls a kernel program makes:
``pyquic.socket_api.socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC, backend="user")``,
SOL_QUIC options (TRANSPORT_PARAM, ALPN, CONFIG) with packed structs,
bind/listen/accept/connect, ``pyquic.tls.driver.client_handshake`` /
``server_handshake``, and ``sendmsg``/``recvmsg`` with the QUIC_STREAM_INFO
cmsg. The wire protocol is the one in ``_common.py``.

The maximum UDP payload size is advertised on both ends with the
``max_udp_payload_size`` field of QUIC_SOCKOPT_TRANSPORT_PARAM (0 fields are
left unchanged, as in the kernel), so each side caps the other's datagrams.
``--pmtud`` instead leaves max_udp_payload_size at its default (no cap) and
sets CONFIG ``plpmtud_probe_interval``. Client and server report the datagram
size their connection had after the handshake and after the transfer (read
best-effort from the engine, an internal detail used for reporting only; the
server prints ``UDP_PAYLOAD <start> <end>`` on stdout), and run.py shows the
PMTU row as not implemented when neither grew during the transfer.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import Any

from _common import (
    ALPN,
    IDLE_TIMEOUT,
    RR_SIZE,
    SIZE_HEADER,
    SideArgs,
    Stopwatch,
    announce_ready,
    emit_result,
    exit_on_sigterm,
    log,
    maybe_profile,
    mem_result,
    parse_side_args,
    raise_fd_limit,
    rss_kib,
    settle,
)

from pyquic import abi
from pyquic.abi.cmsg import STREAM_INFO_CMSG_SPACE, stream_info_cmsg
from pyquic.socket_api import socket as quic_socket
from pyquic.tls.driver import client_handshake, server_handshake

# the user backend is imported before any timing, as the asyncio side imports
# its package (socket_api would import it inside the first handshake's time)
from pyquic.user import socket as _user_socket  # noqa: F401

SOL_QUIC = abi.SOL_QUIC
RECV_SIZE = 65536
SEND_CHUNK = 65536
HANDSHAKE_TIMEOUT = 30.0
PROBE_INTERVAL_US = 5_000_000  # the kernel's minimum plpmtud_probe_interval
_SINFO = struct.Struct("=qI")  # struct quic_stream_info: stream_id, stream_flags
FIN = int(abi.StreamFlag.FIN)
NEW = int(abi.StreamFlag.NEW)
STREAM_INFO = int(abi.CmsgType.STREAM_INFO)


def _new_socket(args: SideArgs) -> Any:
    """A user-backend QUIC socket with the benchmark's transport settings."""
    s = quic_socket(socket.AF_INET, socket.SOCK_DGRAM, abi.IPPROTO_QUIC, backend="user")
    # With PMTU discovery the peer must not cap the size, so discovery can raise it.
    tp = abi.TransportParam(max_udp_payload_size=0 if args.pmtud else args.payload,
                            max_idle_timeout=int(IDLE_TIMEOUT * 1_000_000))
    s.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM, tp.pack())
    s.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, ALPN.encode())
    if args.pmtud:
        cfg = abi.Config(plpmtud_probe_interval=PROBE_INTERVAL_US)
        s.setsockopt(SOL_QUIC, abi.SockOpt.CONFIG, cfg.pack())
    return s


def _recv(sock: Any) -> tuple[bytes, int]:
    """One recvmsg: (data, stream flags from the STREAM_INFO cmsg)."""
    data, anc, _mflags, _addr = sock.recvmsg(RECV_SIZE, STREAM_INFO_CMSG_SPACE)
    sflags = 0
    for level, ctype, cdata in anc:
        if level == SOL_QUIC and ctype == STREAM_INFO and len(cdata) >= _SINFO.size:
            sflags = _SINFO.unpack_from(cdata)[1]
    return data, sflags


def _serve_bulk(conn: Any) -> None:
    req = b""
    fin = 0
    while not fin:
        data, fin = _recv(conn)
        req += data
        fin &= FIN
    (size,) = SIZE_HEADER.unpack_from(req)
    chunk = bytes(SEND_CHUNK)
    view = memoryview(chunk)
    sent = 0
    while sent < size:
        n = min(SEND_CHUNK, size - sent)
        flags = FIN if sent + n == size else 0
        sent += conn.sendmsg([view[:n]], [stream_info_cmsg(0, flags)])


def _serve_rr(conn: Any) -> None:
    buf = bytearray()
    cmsg = [stream_info_cmsg(0, 0)]  # the same for every reply, as a C program's
    while True:
        data, fin = _recv(conn)
        if not data and fin:
            return
        if not buf and len(data) == RR_SIZE:
            conn.sendmsg([data], cmsg)  # the usual request: echoed as it came
            continue
        buf += data
        n = len(buf) - len(buf) % RR_SIZE
        if n:
            conn.sendmsg([bytes(buf[:n])], cmsg)
            del buf[:n]


def _wait_peer_close(conn: Any, limit: float = 60.0) -> None:
    """Block until the client closes the connection (or ``limit`` seconds pass)."""
    conn.settimeout(limit)
    try:
        for _ in range(1000):
            data, _f = _recv(conn)
            if not data:
                return
    except OSError:
        return


def _server(args: SideArgs) -> None:
    ls = _new_socket(args)
    ls.bind((args.host, args.port))
    ls.listen(128)
    announce_ready(ls.getsockname()[1])
    keep: list[Any] = []
    while True:
        conn, _peer = ls.accept()
        try:
            server_handshake(conn, args.cert, args.key, alpns=ALPN, timeout=HANDSHAKE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - one bad connection must not end the server
            # e.g. EPIPE when the client's Finished and its CONNECTION_CLOSE
            # arrive together (hs closes right after its handshake): not fatal.
            if args.metric != "hs":
                log(f"pyquic server: handshake failed: {exc!r}")
            conn.close()
            continue
        if args.metric == "hs":
            for old in keep:  # the previous client has closed; release its socket
                old.close()
            keep = [conn]
        elif args.metric == "mem":
            keep.append(conn)
        else:
            keep.append(conn)
            start = _datagram_size(conn)
            try:
                (_serve_bulk if args.metric == "bulk" else _serve_rr)(conn)
            except OSError as exc:
                log(f"pyquic server: {exc!r}")
            size = _datagram_size(conn)
            if size is not None and start is not None:
                print(f"UDP_PAYLOAD {start} {size}", flush=True)  # run.py's PMTU report
            _wait_peer_close(conn)  # returning earlier could drop unsent data
            if args.profile:
                return  # let the profile be written


def _open(args: SideArgs) -> Any:
    s = _new_socket(args)
    s.connect((args.host, args.port))
    client_handshake(s, "localhost", alpns=ALPN, verify=False, timeout=HANDSHAKE_TIMEOUT)
    return s


def _datagram_size(sock: Any) -> int | None:
    """The datagram size the engine ended up using (best effort, for the report)."""
    try:
        return int(sock._conn.paths.max_datagram_size())
    except (AttributeError, TypeError, ValueError):
        return None


def _client(args: SideArgs) -> dict[str, Any]:
    if args.metric == "hs":
        sw = Stopwatch(args.server_pid)
        for _ in range(args.count):
            _open(args).close()
        dt, cpu = sw.stop()
        return {"handshakes_per_s": args.count / dt, "seconds": dt,
                "cpu_ms_per_hs": cpu * 1e3 / args.count}
    if args.metric == "mem":
        conns = [_open(args)]  # warm-up: first-use allocations and imports
        settle()
        c0, s0 = rss_kib(), rss_kib(args.server_pid) if args.server_pid else 0
        for i in range(args.count):
            conns.append(_open(args))
            if (i + 1) % 250 == 0:
                log(f"  pyquic mem: {i + 1} connections open")
        time.sleep(1.0)
        out = mem_result(args, c0, s0)
        for c in conns:
            c.close()
        return out
    s = _open(args)
    try:
        if args.metric == "bulk":
            start = _datagram_size(s)
            sw = Stopwatch(args.server_pid)
            s.sendmsg([SIZE_HEADER.pack(args.size)], [stream_info_cmsg(0, NEW | FIN)])
            got = 0
            while True:
                data, sflags = _recv(s)
                got += len(data)
                if sflags & FIN:
                    break
            dt, cpu = sw.stop()
            if got != args.size:
                raise RuntimeError(f"received {got} bytes, expected {args.size}")
            res: dict[str, Any] = {"mbit_per_s": args.size * 8 / dt / 1e6, "seconds": dt,
                                   "bytes": got, "cpu_s_per_gb": cpu / (args.size / 1e9)}
            size = _datagram_size(s)
            if size is not None and start is not None:
                res["udp_payload"] = size
                res["udp_payload_start"] = start
            return res
        msg = bytes(RR_SIZE)
        sw = Stopwatch(args.server_pid)
        cmsg, rest = [stream_info_cmsg(0, NEW)], [stream_info_cmsg(0, 0)]
        for _ in range(args.count):
            s.sendmsg([msg], cmsg)
            cmsg = rest
            got = 0
            while got < RR_SIZE:
                data, _f = _recv(s)
                if not data:
                    raise RuntimeError("stream ended early")
                got += len(data)
        dt, cpu = sw.stop()
        return {"rr_per_s": args.count / dt, "seconds": dt, "cpu_us_per_rr": cpu * 1e6 / args.count}
    finally:
        s.close()


def main(argv: list[str] | None = None) -> None:
    """Run the pyquic server or client side."""
    args = parse_side_args(argv)
    raise_fd_limit()
    if args.role == "server":
        exit_on_sigterm()
        maybe_profile(args, lambda: _server(args))
        return
    emit_result(maybe_profile(args, lambda: _client(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
