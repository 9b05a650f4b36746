"""Benchmark side for the asyncio-based references: aioquic and qh3.

qh3 is a fork of aioquic with a Rust core behind the same Python API, so one
program serves both; ``aioquic_side.py`` and ``qh3_side.py`` pick the package.
Each uses its package's own asyncio ``serve`` on the server and a datagram
endpoint with the package's ``QuicConnectionProtocol`` on the client (the
``connect()`` helper of both packages waits out the closing period on exit,
which would make the handshake figure measure the drain timer, not the
handshake). Stream data is handled in ``quic_event_received`` directly, so no
StreamReader layers are measured. Flow-control windows and congestion control
are each package's defaults; the maximum UDP payload size is set on both
ends with ``QuicConfiguration.max_datagram_size`` (and qh3's path MTU probing
is switched off so the size stays equal).
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
import sys
from contextlib import suppress
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


class _Pkg:
    """The pieces of aioquic or qh3 the benchmark needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.asyncio = importlib.import_module(f"{name}.asyncio")
        self.configuration = importlib.import_module(f"{name}.quic.configuration")
        self.connection = importlib.import_module(f"{name}.quic.connection")
        self.events = importlib.import_module(f"{name}.quic.events")


def _config(pkg: _Pkg, args: SideArgs, is_client: bool) -> Any:
    cfg = pkg.configuration.QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN])
    cfg.max_datagram_size = args.payload
    cfg.idle_timeout = IDLE_TIMEOUT
    if hasattr(cfg, "probe_datagram_size"):  # qh3: client-side PMTU probing
        cfg.probe_datagram_size = bool(args.pmtud)
    if is_client:
        cfg.verify_mode = ssl.CERT_NONE
    else:
        cfg.load_cert_chain(args.cert, args.key)
    return cfg


def _make_protocol_class(pkg: _Pkg, args: SideArgs, is_client: bool) -> type:
    events = pkg.events
    StreamDataReceived = events.StreamDataReceived
    HandshakeCompleted = events.HandshakeCompleted
    ConnectionTerminated = events.ConnectionTerminated
    metric = args.metric
    base = pkg.asyncio.QuicConnectionProtocol

    class BenchProtocol(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.buf = bytearray()
            self.received = 0
            self.waiter: asyncio.Future[None] | None = None
            self.want = 0
            self.handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, StreamDataReceived):
                if is_client:
                    self.received += len(event.data)
                    w = self.waiter
                    if w is not None and not w.done() and (
                            event.end_stream if metric == "bulk" else self.received >= self.want):
                        w.set_result(None)
                    return
                self._server_data(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, HandshakeCompleted):
                if not self.handshake_done.done():
                    self.handshake_done.set_result(None)
            elif isinstance(event, ConnectionTerminated):
                for f in (self.waiter, self.handshake_done):
                    if f is not None and not f.done():
                        f.set_exception(ConnectionError(f"connection terminated: {event.reason_phrase}"))

        def _server_data(self, sid: int, data: bytes, fin: bool) -> None:
            quic = self._quic
            if metric == "rr":
                buf = self.buf
                if not buf and len(data) == RR_SIZE:  # the usual request: echoed as it came
                    quic.send_stream_data(sid, data, False)
                    self.transmit()
                    return
                buf += data
                n = len(buf) - len(buf) % RR_SIZE
                if n:
                    quic.send_stream_data(sid, bytes(buf[:n]), False)
                    del buf[:n]
                    self.transmit()
            elif metric == "bulk":
                self.buf += data
                if fin and len(self.buf) >= SIZE_HEADER.size:
                    (size,) = SIZE_HEADER.unpack_from(self.buf)
                    quic.send_stream_data(sid, bytes(size), True)
                    self.transmit()

    return BenchProtocol


async def _serve(pkg: _Pkg, args: SideArgs) -> None:
    proto_cls = _make_protocol_class(pkg, args, is_client=False)
    server = await pkg.asyncio.serve(args.host, args.port, configuration=_config(pkg, args, False),
                                     create_protocol=proto_cls)
    port = server._transport.get_extra_info("sockname")[1]
    announce_ready(port)
    with suppress(asyncio.CancelledError):
        await asyncio.Event().wait()  # run until killed


async def _open(pkg: _Pkg, args: SideArgs, proto_cls: type) -> tuple[Any, Any]:
    """A connected client (transport, protocol) after the handshake completed."""
    loop = asyncio.get_running_loop()
    cfg = _config(pkg, args, True)
    conn = pkg.connection.QuicConnection(configuration=cfg)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: proto_cls(conn), local_addr=(args.host, 0))
    protocol.connect((args.host, args.port))
    await protocol.handshake_done
    return transport, protocol


def _close(transport: Any, protocol: Any) -> None:
    """Send CONNECTION_CLOSE and drop the socket, without waiting out the drain."""
    protocol.close()
    transport.close()


async def _client(pkg: _Pkg, args: SideArgs) -> dict[str, Any]:
    proto_cls = _make_protocol_class(pkg, args, is_client=True)
    loop = asyncio.get_running_loop()
    if args.metric == "hs":
        sw = Stopwatch(args.server_pid)
        for _ in range(args.count):
            tr, pr = await _open(pkg, args, proto_cls)
            _close(tr, pr)
        dt, cpu = sw.stop()
        return {"handshakes_per_s": args.count / dt, "seconds": dt,
                "cpu_ms_per_hs": cpu * 1e3 / args.count}
    if args.metric == "mem":
        conns = [await _open(pkg, args, proto_cls)]  # warm-up: first-use allocations
        settle()
        c0, s0 = rss_kib(), rss_kib(args.server_pid) if args.server_pid else 0
        for i in range(args.count):
            conns.append(await _open(pkg, args, proto_cls))
            if (i + 1) % 250 == 0:
                log(f"  {pkg.name} mem: {i + 1} connections open")
        await asyncio.sleep(1.0)  # let the final ACKs and tickets settle
        out = mem_result(args, c0, s0)
        for tr, pr in conns:
            _close(tr, pr)
        await asyncio.sleep(0.05)
        return out
    tr, pr = await _open(pkg, args, proto_cls)
    quic = pr._quic
    sid = quic.get_next_available_stream_id()
    try:
        if args.metric == "bulk":
            pr.waiter = loop.create_future()
            sw = Stopwatch(args.server_pid)
            quic.send_stream_data(sid, SIZE_HEADER.pack(args.size), True)
            pr.transmit()
            await pr.waiter
            dt, cpu = sw.stop()
            if pr.received != args.size:
                raise RuntimeError(f"received {pr.received} bytes, expected {args.size}")
            return {"mbit_per_s": args.size * 8 / dt / 1e6, "seconds": dt, "bytes": pr.received,
                    "cpu_s_per_gb": cpu / (args.size / 1e9)}
        # rr
        msg = bytes(RR_SIZE)
        sw = Stopwatch(args.server_pid)
        for i in range(args.count):
            pr.want = (i + 1) * RR_SIZE
            pr.waiter = loop.create_future()
            quic.send_stream_data(sid, msg, False)
            pr.transmit()
            await pr.waiter
        dt, cpu = sw.stop()
        return {"rr_per_s": args.count / dt, "seconds": dt, "cpu_us_per_rr": cpu * 1e6 / args.count}
    finally:
        _close(tr, pr)


def main(package: str, argv: list[str] | None = None) -> None:
    """Run the server or client side for ``package`` ("aioquic" or "qh3")."""
    args = parse_side_args(argv)
    raise_fd_limit()
    pkg = _Pkg(package)
    if args.role == "server":
        exit_on_sigterm()
        maybe_profile(args, lambda: asyncio.run(_serve(pkg, args)))
        return
    result = maybe_profile(args, lambda: asyncio.run(_client(pkg, args)))
    emit_result(result)
    sys.stdout.flush()
