"""``pyquic perf server|client``: throughput and request/response benchmark.

In the spirit of the kernel project's tests/perf_test.c: the client opens one
bidirectional stream and either sends ``--total`` bytes in ``--msg-len``
writes with FIN (throughput mode; the server answers with the byte count it
received) or runs ``--requests`` rounds of a ``--req-len`` request answered by
a ``--rsp-len`` response (request/response mode). The first line on the stream
tells the server which mode and sizes to use, so one server serves both.

A progress line goes to stderr once a second; the result (Mbit/s, or
requests/s and latency) to stdout. ``--no-crypt`` asks for the kernel's
disable_1rtt_encryption transport parameter on both sides. Only the socket API
is used, so client and server may run on different backends.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from contextlib import ExitStack
from typing import Any

from pyquic.cli import common
from pyquic.cli.common import CliError, Progress, StreamWriter, format_rate, format_size, run_loop

DEFAULT_PORT = 1234
DEFAULT_ALPN = "perf"
MAGIC = b"PYQUIC-PERF 1"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1024``, ``64K``, ``10M``, ``1G``, ``1.5MiB`` -> bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64K, 10M, 1G)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``pyquic perf``."""
    p = sub.add_parser("perf", parents=parents, help="throughput / request-response benchmark",
                       description=__doc__.split("\n\n")[0])
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    for role in ("server", "client"):
        r = roles.add_parser(role, parents=parents, help=f"run the {role}")
        r.add_argument("--backend", choices=("auto", "user", "kernel"), default=None,
                       help="socket backend (default: $PYQUIC_BACKEND, else kernel if loaded)")
        r.add_argument("--addr", default="::" if role == "server" else "127.0.0.1",
                       help="address to listen on / connect to")
        r.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"UDP port (default {DEFAULT_PORT})")
        r.add_argument("--alpn", default=DEFAULT_ALPN, help=f"ALPN (default {DEFAULT_ALPN})")
        r.add_argument("--psk", metavar="FILE", help="pre-shared key file (libquic format)")
        r.add_argument("--no-crypt", action="store_true",
                       help="disable 1-RTT encryption (disable_1rtt_encryption) if supported")
        r.add_argument("--timeout", type=float, default=300.0,
                       help="give up after this many seconds (default 300)")
        r.add_argument("--quiet", action="store_true", help="no progress line")
        if role == "server":
            r.add_argument("--cert", metavar="FILE",
                           help="certificate (PEM); default: a fresh self-signed one")
            r.add_argument("--key", metavar="FILE", help="private key (PEM)")
            r.add_argument("--once", action="store_true", help="exit after one connection")
            r.set_defaults(func=run_server)
        else:
            r.add_argument("--ca", metavar="FILE",
                           help="verify the server against these CAs (default: no check)")
            r.add_argument("--host", help="server name for SNI and verification")
            r.add_argument("--total", type=parse_size, default=parse_size("100M"),
                           help="bytes to send in throughput mode (default 100M)")
            r.add_argument("--msg-len", type=parse_size, default=parse_size("64K"),
                           help="bytes per sendmsg (default 64K)")
            r.add_argument("--requests", type=int, default=0,
                           help="request/response mode: number of rounds")
            r.add_argument("--req-len", type=parse_size, default=1024,
                           help="request size (default 1K)")
            r.add_argument("--rsp-len", type=parse_size, default=1024,
                           help="response size (default 1K)")
            r.set_defaults(func=run_client)


def _setup(sock: Any, no_crypt: bool) -> None:
    """Transport parameters as perf_test.c sets them (idle timeout, optional no-crypt)."""
    common.set_transport_param(sock, max_idle_timeout=120_000_000)
    if no_crypt:
        try:
            common.set_transport_param(sock, disable_1rtt_encryption=1)
        except OSError as exc:
            raise CliError(f"--no-crypt is not supported by this backend: "
                           f"{common.reason(exc)}") from exc


def _crypt_note(sock: Any, no_crypt: bool) -> str:
    if not no_crypt:
        return ""
    try:
        peer = sock.get_transport_param(remote=True).disable_1rtt_encryption
    except OSError:
        peer = 0
    return ", 1-RTT encryption off" if peer else ", 1-RTT encryption on (not negotiated)"


# ---------------------------------------------------------------- server


class _ServerStream:
    __slots__ = ("count", "header", "mode", "pending", "req_len", "rsp_len", "start")

    def __init__(self) -> None:
        self.header = bytearray()
        self.mode = ""
        self.req_len = self.rsp_len = 0
        self.count = 0  # payload bytes (throughput) or requests answered
        self.pending = 0  # request bytes not yet answered
        self.start = time.monotonic()


def _serve(sock: Any, peer: Any, args: argparse.Namespace, certfile: str | None,
           keyfile: str | None, out: Any) -> None:
    deadline = time.monotonic() + args.timeout
    hs = common.server_handshake(sock, peer, certfile, keyfile, [args.alpn],
                                 timeout=min(args.timeout, 30.0), psk_file=args.psk)
    print(f"connection from {common.addr_text(peer)}: {common.cipher_name(hs.cipher_suite)}"
          f"{_crypt_note(sock, args.no_crypt)}", file=out, flush=True)
    writer = StreamWriter(sock)
    streams: dict[int, _ServerStream] = {}
    progress = Progress("perf server", enabled=not args.quiet)
    total = [0]
    rsp_cache: dict[int, bytes] = {}

    def on_message(msg: Any) -> None:
        sid = msg.stream_id
        if sid is None:
            return
        st = streams.get(sid)
        if st is None:
            st = streams[sid] = _ServerStream()
        data = msg.data
        if not st.mode:
            st.header += data
            nl = st.header.find(b"\n")
            if nl < 0:
                if len(st.header) > 256:
                    raise CliError("not a pyquic perf client (no header line)")
                return
            line, data = bytes(st.header[:nl]), bytes(st.header[nl + 1:])
            words = line.split()
            if line[:len(MAGIC)] != MAGIC or len(words) < 3:
                raise CliError(f"not a pyquic perf client (header {line[:40]!r})")
            st.mode = words[2].decode()
            if st.mode == "rr":
                st.req_len, st.rsp_len = int(words[3]), int(words[4])
            st.start = time.monotonic()
        if st.mode == "rr":
            st.pending += len(data)
            n, st.pending = divmod(st.pending, max(1, st.req_len))
            if n:
                rsp = rsp_cache.get(st.rsp_len)
                if rsp is None:
                    rsp = rsp_cache[st.rsp_len] = os.urandom(st.rsp_len)
                writer.queue(sid, rsp * n, fin=False)
                st.count += n
        else:
            st.count += len(data)
            total[0] += len(data)
            progress.update(total[0])
        if msg.fin:
            elapsed = time.monotonic() - st.start
            if st.mode == "rr":
                writer.queue(sid, b"", fin=True)
                print(f"stream {sid}: answered {st.count} requests in {elapsed:.2f} s",
                      file=out, flush=True)
            else:
                writer.queue(sid, b"received %d\n" % st.count, fin=True)
                progress.done()
                print(f"stream {sid}: received {format_size(st.count)} in {elapsed:.2f} s = "
                      f"{format_rate(st.count, elapsed)}", file=out, flush=True)

    run_loop(sock, writer, on_message, lambda: False, deadline, "the client")
    progress.done()


def _serve_thread(sock: Any, peer: Any, args: argparse.Namespace, certfile: str | None,
                  keyfile: str | None, errors: list[BaseException]) -> None:
    try:
        _serve(sock, peer, args, certfile, keyfile, sys.stdout)
    except BaseException as exc:  # noqa: BLE001 - reported, then exit status 1
        errors.append(exc)
        print(f"pyquic perf server: connection from {common.addr_text(peer)}: "
              f"{exc if isinstance(exc, CliError) else common.reason(exc)}",
              file=sys.stderr, flush=True)
    finally:
        sock.close()


def run_server(args: argparse.Namespace) -> int:
    """``pyquic perf server``: accept connections and serve perf streams."""
    common.check_cert_key(args.cert, args.key or args.cert)
    common.check_psk(args.psk)
    with ExitStack() as stack:
        certfile, keyfile = args.cert, args.key or args.cert
        if certfile is None and args.psk is None:
            certfile, keyfile = stack.enter_context(common.temporary_certificate())
            print("using a fresh self-signed certificate", flush=True)
        family, addr = common.resolve(args.addr, args.port, passive=True)
        listener = common.new_socket(family, args.backend)
        stack.callback(listener.close)
        _setup(listener, args.no_crypt)
        common.bind_and_listen(listener, addr, [args.alpn])
        print(f"listening on {common.addr_text(listener.getsockname())} "
              f"({common.backend_label(common.backend_of(listener))})", flush=True)
        errors: list[BaseException] = []
        threads: list[threading.Thread] = []
        for _ in range(1 if args.once else 1 << 30):
            sock, peer = listener.accept()
            t = threading.Thread(target=_serve_thread, daemon=True, name="pyquic-perf-conn",
                                 args=(sock, peer, args, certfile, keyfile, errors))
            t.start()
            threads.append(t)
            if args.once:
                t.join(args.timeout + 1)
        if errors:
            return 1
    return 0


# ---------------------------------------------------------------- client


def run_client(args: argparse.Namespace) -> int:
    """``pyquic perf client``: connect, run one test, print the result."""
    if args.msg_len <= 0 or args.req_len <= 0 or args.rsp_len < 0:
        raise CliError("--msg-len and --req-len must be positive")
    common.check_psk(args.psk)
    deadline = time.monotonic() + args.timeout
    family, addr = common.resolve(args.addr, args.port)
    sock = common.new_socket(family, args.backend)
    try:
        _setup(sock, args.no_crypt)
        common.connect_socket(sock, addr)
        t0 = time.monotonic()
        hs = common.client_handshake(sock, addr, args.host or args.addr, [args.alpn],
                                     timeout=min(args.timeout, 10.0), cafile=args.ca,
                                     verify=args.ca is not None, psk_file=args.psk)
        print(f"connected to {common.addr_text(addr)} "
              f"({common.backend_label(common.backend_of(sock))}): "
              f"{common.cipher_name(hs.cipher_suite)}, handshake "
              f"{(time.monotonic() - t0) * 1000:.0f} ms{_crypt_note(sock, args.no_crypt)}",
              flush=True)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        if args.requests > 0:
            _client_rr(sock, args, deadline)
        else:
            _client_throughput(sock, args, deadline)
        sock.set_close_info(0, b"perf done")
    except TimeoutError as exc:
        raise CliError("timed out (see --timeout)") from exc
    finally:
        sock.close()
    return 0


def _read_until_fin(sock: Any, sid: int, deadline: float) -> bytes:
    buf = bytearray()
    for _ in range(10_000_000):
        msg = common.recv_message(sock, deadline, "the server's answer")
        if msg is None:
            raise CliError("the server closed the connection")
        if msg.stream_id == sid:
            buf += msg.data
            if msg.fin:
                return bytes(buf)
    raise CliError("no FIN from the server")  # pragma: no cover


def _send_all(sock: Any, sid: int, data: bytes) -> None:
    """send_stream until all of ``data`` is queued: a socket with a timeout
    may take part of it when the send buffer fills (the kernel's sendmsg
    returns what it copied)."""
    view = memoryview(data)
    sent = sock.send_stream(sid, view)
    for _ in range(len(view)):  # each call takes at least a byte
        if sent >= len(view):
            return
        sent += sock.send_stream(sid, view[sent:])
    if sent < len(view):
        raise CliError(f"sent {sent} of {len(view)} bytes: the stream took no more")


def _client_throughput(sock: Any, args: argparse.Namespace, deadline: float) -> None:
    sid = sock.open_stream()
    payload = os.urandom(args.msg_len)
    total = args.total
    progress = Progress("perf client", enabled=not args.quiet)
    start = time.monotonic()
    _send_all(sock, sid, MAGIC + b" throughput\n")
    sent = 0
    view = memoryview(payload)
    while sent < total:
        n = min(args.msg_len, total - sent)
        sent += sock.send_stream(sid, view[:n], fin=sent + n >= total)
        progress.update(sent)
        if time.monotonic() > deadline:
            raise CliError(f"timed out after sending {format_size(sent)}")
    if total == 0:
        sock.send_stream(sid, b"", fin=True)
    answer = _read_until_fin(sock, sid, deadline)
    elapsed = time.monotonic() - start
    progress.done()
    m = re.match(rb"received (\d+)", answer)
    if not m:
        raise CliError(f"unexpected answer from the server: {answer[:60]!r}")
    got = int(m.group(1))
    if got != total:
        raise CliError(f"the server received {got} bytes of {total}")
    print(f"throughput: sent {format_size(total)} in {elapsed:.2f} s = "
          f"{format_rate(total, elapsed)}", flush=True)


def _client_rr(sock: Any, args: argparse.Namespace, deadline: float) -> None:
    sid = sock.open_stream()
    req = os.urandom(args.req_len)
    _send_all(sock, sid, MAGIC + b" rr %d %d\n" % (args.req_len, args.rsp_len))
    progress = Progress("perf client", enabled=not args.quiet)
    lat: list[float] = []
    start = time.monotonic()
    for i in range(args.requests):
        t = time.monotonic()
        _send_all(sock, sid, req)
        got = 0
        while got < args.rsp_len:
            msg = common.recv_message(sock, deadline, "a response", wait_first=not got)
            if msg is None or msg.fin:
                raise CliError(f"the server ended the stream at request {i + 1}")
            if msg.stream_id == sid:
                got += len(msg.data)
        lat.append(time.monotonic() - t)
        progress.update((i + 1) * (args.req_len + args.rsp_len), f", {i + 1} requests")
    sock.send_stream(sid, b"", fin=True)
    _read_until_fin(sock, sid, deadline)
    elapsed = time.monotonic() - start
    progress.done()
    n = len(lat)
    avg = sum(lat) / n * 1000
    print(f"requests: {n} x {format_size(args.req_len)}/{format_size(args.rsp_len)} in "
          f"{elapsed:.2f} s = {n / max(elapsed, 1e-9):.0f} req/s, latency avg {avg:.2f} ms, "
          f"min {min(lat) * 1000:.2f} ms, max {max(lat) * 1000:.2f} ms", flush=True)
    print(f"throughput: {format_rate(n * (args.req_len + args.rsp_len), elapsed)}", flush=True)


__all__ = ["add_parser", "parse_size", "run_client", "run_server"]
