"""``pyquic server`` / ``pyquic client``: HTTP/0.9 over QUIC for the QUIC interop runner.

The "hq-interop" protocol: the client opens a bidirectional stream per file
and sends ``GET /path\\r\\n`` with FIN; the server answers with the file's bytes
and FIN. The conventions of quic-interop-runner are followed: ``ROLE``,
``TESTCASE`` (exit status 127 for a test case we do not support),
``REQUESTS`` (space-separated URLs), files served from ``/www`` and saved to
``/downloads`` (``--www``/``--downloads``), ``/certs/cert.pem`` and
``/certs/priv.key`` (``--cert``/``--key``), ``SSLKEYLOGFILE`` (NSS key log,
written by the TLS driver) and ``QLOGDIR``.

qlog: the engine exposes no qlog hook yet, so the files written to QLOGDIR
(qlog 0.3, JSON, one per connection) hold the events visible at the socket
API: connection started, handshake completed with the peer's transport
parameters, key updates, each request's stream and size, and the close.

Requests run in parallel, one stream each, as many as the peer's stream limit
allows (STREAM_OPEN with DONTWAIT; the MAX_STREAMS event wakes us when it
grows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse
from collections import deque
from typing import IO, Any

from pyquic import abi
from pyquic.cli import common
from pyquic.cli.common import CliError, StreamWriter, format_rate, format_size, run_loop

ALPN = "hq-interop"
EXIT_UNSUPPORTED = 127

# quic-interop-runner test cases (testcases.py) each side can run.
CLIENT_TESTCASES = frozenset({
    "handshake", "transfer", "multiplexing", "retry", "resumption", "chacha20", "keyupdate",
    "v2", "multiconnect", "handshakeloss", "handshakecorruption", "transferloss",
    "transfercorruption", "blackhole", "amplificationlimit", "ipv6", "goodput",
    "crosstraffic", "longrtt", "rebind-port", "rebind-addr",
})
CLIENT_TESTCASES = CLIENT_TESTCASES | {"zerortt"}
SERVER_TESTCASES = CLIENT_TESTCASES
# Not supported: http3 (this is hq only), connectionmigration, ecn, versionnegotiation.

_CONN_SEQ = [0]
_SEQ_LOCK = threading.Lock()

#: the handshake's own time limit: short, so that a missing server is reported
#: soon, except in the loss test cases, where a flight may need more PTO rounds
#: (1, 2, 4, 8 s ... RFC 9002 §6.2) than 15 s hold (seen at 30% loss each way)
_HANDSHAKE_LIMIT = 15.0
_LOSSY_HANDSHAKE_LIMIT = 60.0
_LOSSY_TESTCASES = frozenset({"handshakeloss", "handshakecorruption", "transferloss",
                              "transfercorruption"})


def _handshake_timeout(args: argparse.Namespace) -> float:
    """The handshake's time limit for this run (at most ``--timeout``)."""
    limit = _LOSSY_HANDSHAKE_LIMIT if args.testcase in _LOSSY_TESTCASES else _HANDSHAKE_LIMIT
    return min(args.timeout, limit)


# ---------------------------------------------------------------- qlog


class Qlog:
    """A minimal qlog 0.3 trace (JSON) of what one connection showed at the socket API."""

    def __init__(self, directory: str | None, vantage: str) -> None:
        self.directory = directory
        self.vantage = vantage
        self.start = time.time()
        self.events: list[dict[str, Any]] = []
        with _SEQ_LOCK:
            _CONN_SEQ[0] += 1
            self.name = f"{vantage}-{os.getpid()}-{_CONN_SEQ[0]}"

    def event(self, name: str, **data: Any) -> None:
        """Record one event (``category:event`` name, qlog data fields)."""
        if self.directory:
            self.events.append({"time": round((time.time() - self.start) * 1000, 3),
                                "name": name, "data": data})

    def write(self) -> str | None:
        """Write ``<QLOGDIR>/<name>.qlog``; returns the path (None when disabled)."""
        if not self.directory:
            return None
        os.makedirs(self.directory, exist_ok=True)
        doc = {
            "qlog_format": "JSON",
            "qlog_version": "0.3",
            "title": "pyquic",
            "description": "socket-level events (no engine qlog hook)",
            "traces": [{
                "common_fields": {"reference_time": round(self.start * 1000, 3),
                                  "time_format": "relative", "group_id": self.name},
                "vantage_point": {"name": "pyquic", "type": self.vantage},
                "events": self.events,
            }],
        }
        path = os.path.join(self.directory, self.name + ".qlog")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        return path

    def handshake_done(self, sock: Any, hs: Any) -> None:
        """Events for a completed handshake: state, ALPN/cipher, the peer's parameters."""
        self.event("connectivity:connection_state_updated", new="handshake_complete")
        self.event("security:handshake_completed", alpn=hs.alpn,
                   cipher_suite=common.cipher_name(hs.cipher_suite),
                   resumed=bool(hs.session_resumed))
        try:
            tp = sock.get_transport_param(remote=True)
        except OSError:
            return
        self.event("transport:parameters_set", owner="remote",
                   max_idle_timeout=tp.max_idle_timeout // 1000,
                   max_udp_payload_size=tp.max_udp_payload_size,
                   initial_max_data=tp.max_data,
                   initial_max_stream_data_bidi_local=tp.max_stream_data_bidi_local,
                   initial_max_stream_data_bidi_remote=tp.max_stream_data_bidi_remote,
                   initial_max_stream_data_uni=tp.max_stream_data_uni,
                   initial_max_streams_bidi=tp.max_streams_bidi,
                   initial_max_streams_uni=tp.max_streams_uni,
                   ack_delay_exponent=tp.ack_delay_exponent,
                   max_ack_delay=tp.max_ack_delay // 1000,
                   active_connection_id_limit=tp.active_connection_id_limit,
                   max_datagram_frame_size=tp.max_datagram_frame_size)


# ---------------------------------------------------------------- arguments


def _env_default(name: str, fallback: str | None) -> str | None:
    value = os.environ.get(name)
    return value if value else fallback


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``pyquic server``, ``pyquic client`` and ``pyquic interop``."""
    p = sub.add_parser("interop", parents=parents,
                       help="run the server or the client as $ROLE says (interop runner)",
                       description="Run `pyquic $ROLE ARGS...` (ROLE=client|server).")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the role")
    p.set_defaults(func=run_interop)
    for role in ("server", "client"):
        p = sub.add_parser(role, parents=parents,
                           help=f"HTTP/0.9 (hq-interop) {role} for the QUIC interop runner",
                           description=__doc__.split("\n\n")[0])
        p.add_argument("--backend", choices=("auto", "user", "kernel"), default=None,
                       help="socket backend (default: $PYQUIC_BACKEND, else kernel if loaded)")
        p.add_argument("--testcase", default=_env_default("TESTCASE", "transfer"),
                       help="interop test case (default: $TESTCASE, else transfer)")
        p.add_argument("--keylog", default=_env_default("SSLKEYLOGFILE", None),
                       help="append TLS secrets in NSS key-log format (default: $SSLKEYLOGFILE)")
        p.add_argument("--qlog-dir", default=_env_default("QLOGDIR", None),
                       help="write qlog files here (default: $QLOGDIR)")
        p.add_argument("--timeout", type=float, default=300.0,
                       help="per-connection time limit in seconds (default 300; the "
                            "handshake gives up after at most 15, 60 in the loss and "
                            "corruption test cases)")
        p.add_argument("-v", "--verbose", action="store_true", help="log every request")
        if role == "server":
            p.add_argument("--host", default="::", help="address to listen on (default ::)")
            p.add_argument("--port", type=int, default=443, help="UDP port (default 443)")
            p.add_argument("--www", default="/www", help="directory to serve (default /www)")
            p.add_argument("--cert", default="/certs/cert.pem", help="certificate (PEM)")
            p.add_argument("--key", default="/certs/priv.key", help="private key (PEM)")
            p.add_argument("--max-connections", type=int, default=0,
                           help="exit after this many connections (default: serve forever)")
            p.set_defaults(func=run_server)
        else:
            p.add_argument("urls", nargs="*", metavar="URL",
                           help="files to fetch (default: $REQUESTS)")
            p.add_argument("--downloads", default="/downloads",
                           help="directory to save files in (default /downloads)")
            p.add_argument("--ca", help="verify the server against these CAs (default: no check, "
                                        "as interop endpoints use throw-away certificates)")
            p.set_defaults(func=run_client)


def interop_argv(rest: list[str]) -> list[str]:
    """``pyquic interop ARGS`` -> ``[$ROLE, *ARGS]`` (ROLE is client or server)."""
    role = os.environ.get("ROLE", "")
    if role not in ("client", "server"):
        raise CliError(f"ROLE must be 'client' or 'server', not {role!r}")
    return [role, *rest]


def run_interop(args: argparse.Namespace) -> int:
    """``pyquic interop``: ``pyquic server`` or ``pyquic client`` as ``$ROLE`` says."""
    from pyquic.__main__ import main

    return main(interop_argv(list(args.rest)))


def _unsupported(role: str, testcase: str) -> int:
    print(f"pyquic {role}: unsupported test case {testcase!r}", file=sys.stderr)
    return EXIT_UNSUPPORTED


def _apply_testcase(sock: Any, testcase: str, server: bool) -> None:
    """Socket settings a test case needs (as the kernel project's interop endpoint does)."""
    common.set_transport_param(sock, max_idle_timeout=30_000_000, grease_quic_bit=1,
                               max_streams_bidi=256)
    if testcase == "chacha20":
        common.set_config(sock, payload_cipher_type=abi.TlsCipher.CHACHA20_POLY1305)
    if server and testcase == "retry":
        common.set_config(sock, validate_peer_address=1)  # RFC 9000 §8.1.2
    if server and testcase == "v2":
        common.set_config(sock, version=abi.Version.V2)  # RFC 9368 upgrade to RFC 9369


# ---------------------------------------------------------------- server


def _safe_path(root: str, path: str) -> str | None:
    """The file under ``root`` a request path names, or None if it escapes ``root``."""
    rel = urllib.parse.unquote(path.split("?", 1)[0]).lstrip("/")
    full = os.path.realpath(os.path.join(root, rel))
    base = os.path.realpath(root)
    if full != base and not full.startswith(base + os.sep):
        return None
    return full


def _serve_connection(sock: Any, peer: Any, args: argparse.Namespace) -> None:
    qlog = Qlog(args.qlog_dir, "server")
    qlog.event("transport:connection_started", dst_ip=str(peer[0]), dst_port=peer[1])
    start = time.monotonic()
    deadline = start + args.timeout
    requests = 0
    sent_bytes = [0]
    try:
        hs = common.server_handshake(sock, peer, args.cert, args.key, [ALPN],
                                     timeout=_handshake_timeout(args), keylog=args.keylog)
        qlog.handshake_done(sock, hs)
        sock.set_event(abi.EventType.CONNECTION_CLOSE, True)
        sock.set_event(abi.EventType.KEY_UPDATE, True)
        writer = StreamWriter(sock)
        bufs: dict[int, bytearray] = {}
        answered: set[int] = set()
        closed: list[Any] = []

        def on_message(msg: Any) -> None:
            nonlocal requests
            if msg.is_event:
                ev = msg.event
                if isinstance(ev, abi.ConnectionCloseEvent):
                    closed.append(ev)
                    qlog.event("connectivity:connection_closed", owner="remote",
                               application_code=ev.errcode,
                               reason=ev.phrase.decode("utf-8", "replace"))
                elif isinstance(ev, abi.KeyUpdateEvent):
                    qlog.event("security:key_updated", trigger="remote_update",
                               key_phase=ev.phase)
                return
            sid = msg.stream_id
            if sid is None or sid & 0x3 or sid in answered:
                return  # requests come on client-initiated bidi streams (RFC 9000 §2.1)
            buf = bufs.setdefault(sid, bytearray())
            buf += msg.data
            if b"\n" not in buf and not msg.fin:
                if len(buf) > 4096:
                    sock.reset_stream(sid, 0x1)  # not HTTP/0.9: give up on this stream
                    del bufs[sid]
                return
            line = bytes(buf).split(b"\n", 1)[0].rstrip(b"\r")
            del bufs[sid]
            answered.add(sid)
            parts = line.split()
            requests += 1
            if len(parts) < 2 or parts[0] != b"GET":
                print(f"pyquic server: stream {sid}: bad request {line[:60]!r}",
                      file=sys.stderr)
                writer.queue(sid, b"", fin=True)
                return
            path = parts[1].decode("utf-8", "replace")
            full = _safe_path(args.www, path)
            src: bytes | IO[bytes] = b""
            size = 0
            if full is not None and os.path.isfile(full):
                src = open(full, "rb")  # noqa: SIM115 - closed by the writer at EOF
                size = os.fstat(src.fileno()).st_size
            else:
                print(f"pyquic server: stream {sid}: {path}: not found", file=sys.stderr)
            sent_bytes[0] += size
            writer.queue(sid, src, fin=True)
            qlog.event("http:request", stream_id=sid, path=path, length=size)
            if args.verbose:
                print(f"stream {sid}: GET {path} ({format_size(size)})", flush=True)

        run_loop(sock, writer, on_message, lambda: bool(closed) and not writer.busy,
                 deadline, "the client", tick=None)
        elapsed = time.monotonic() - start
        print(f"connection from {common.addr_text(peer)}: {requests} requests, "
              f"{format_size(sent_bytes[0])} in {elapsed:.2f} s", flush=True)
    except CliError as exc:
        qlog.event("transport:connection_error", reason=str(exc))
        print(f"pyquic server: {exc}", file=sys.stderr, flush=True)
    except OSError as exc:
        qlog.event("transport:connection_error", reason=common.reason(exc))
        print(f"pyquic server: connection from {common.addr_text(peer)}: "
              f"{common.reason(exc)}", file=sys.stderr, flush=True)
    finally:
        sock.close()
        qlog.write()


def run_server(args: argparse.Namespace) -> int:
    """``pyquic server``: serve ``--www`` over hq-interop until killed."""
    if args.testcase not in SERVER_TESTCASES:
        return _unsupported("server", args.testcase)
    common.check_cert_key(args.cert, args.key)
    if not os.path.isdir(args.www):
        raise CliError(f"no such directory to serve: {args.www}")
    family, addr = common.resolve(args.host, args.port, passive=True)
    listener = common.new_socket(family, args.backend)
    try:
        _apply_testcase(listener, args.testcase, server=True)
        common.bind_and_listen(listener, addr, [ALPN], backlog=64)
        print(f"hq server on {common.addr_text(listener.getsockname())}, serving {args.www} "
              f"({common.backend_label(common.backend_of(listener))}, "
              f"test case {args.testcase})", flush=True)
        threads: list[threading.Thread] = []
        limit = args.max_connections if args.max_connections > 0 else 1 << 40
        for _ in range(limit):
            sock, peer = listener.accept()
            t = threading.Thread(target=_serve_connection, args=(sock, peer, args), daemon=True,
                                 name="pyquic-hq-conn")
            t.start()
            threads.append(t)
            threads = [x for x in threads if x.is_alive()]
        for t in threads:
            t.join(args.timeout + 5)
    finally:
        listener.close()
    return 0


# ---------------------------------------------------------------- client


def _parse_url(url: str) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("https", "http", "") or not u.hostname:
        raise CliError(f"not an https URL: {url!r}")
    return u.hostname, u.port or 443, (u.path or "/") + (f"?{u.query}" if u.query else "")


def _download_path(root: str, path: str) -> str:
    rel = urllib.parse.unquote(path.split("?", 1)[0]).lstrip("/") or "index.html"
    full = os.path.realpath(os.path.join(root, rel))
    base = os.path.realpath(root)
    if not full.startswith(base + os.sep):
        raise CliError(f"refusing to save {path!r} outside {root}")
    return full


class _Download:
    __slots__ = ("file", "path", "size", "url")

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self.file: IO[bytes] | None = None
        self.size = 0


def _open_requests(sock: Any, writer: StreamWriter, todo: deque[str],
                   downloads: dict[int, _Download], args: argparse.Namespace,
                   qlog: Qlog) -> int:
    """Open a stream per pending URL (as the peer's limit allows) and queue its GET."""
    opened = 0
    while todo:
        try:
            sid = sock.open_stream(dontwait=True)
        except BlockingIOError:
            break  # beyond the peer's stream limit: wait for MAX_STREAMS
        url = todo.popleft()
        _, _, path = _parse_url(url)
        downloads[sid] = _Download(url, _download_path(args.downloads, path))
        writer.queue(sid, f"GET {path}\r\n".encode(), fin=True)
        qlog.event("http:request", stream_id=sid, path=path)
        opened += 1
    return opened


def _client_connection(args: argparse.Namespace, urls: list[str], session: bytes | None,
                       want_session: bool) -> bytes | None:
    host, port, _ = _parse_url(urls[0])
    family, addr = common.resolve(host, port)
    qlog = Qlog(args.qlog_dir, "client")
    sock = common.new_socket(family, args.backend)
    start = time.monotonic()
    deadline = start + args.timeout
    downloads: dict[int, _Download] = {}
    todo = deque(urls)
    total = [0]
    new_session = None
    try:
        _apply_testcase(sock, args.testcase, server=False)
        common.connect_socket(sock, addr)
        qlog.event("transport:connection_started", dst_ip=str(addr[0]), dst_port=addr[1])
        writer = StreamWriter(sock)
        if session is not None and args.testcase == "zerortt":
            # 0-RTT (RFC 9001 §4.6.1): with the peer's remembered limits installed, the
            # requests are queued before the handshake and leave with the early keys.
            from pyquic.tls.driver import restore_session

            restore_session(sock, session)
            early = _open_requests(sock, writer, todo, downloads, args, qlog)
            writer.flush()
            qlog.event("transport:early_data", requests=early)
        hs = common.client_handshake(sock, addr, host, [ALPN], timeout=_handshake_timeout(args),
                                     cafile=args.ca, verify=args.ca is not None,
                                     session=session, keylog=args.keylog)
        qlog.handshake_done(sock, hs)
        if args.verbose:
            print(f"handshake with {common.addr_text(addr)}: "
                  f"{common.cipher_name(hs.cipher_suite)}"
                  f"{', resumed' if hs.session_resumed else ''}"
                  f"{', 0-RTT accepted' if hs.early_data_accepted else ''}", flush=True)
        try:  # wake up when the peer raises our stream limit (MAX_STREAMS)
            sock.set_event(abi.EventType.STREAM_MAX_STREAM, True)
        except OSError:
            pass
        key_update = [args.testcase == "keyupdate"]
        done_count = [0]

        def tick() -> bool:
            opened = _open_requests(sock, writer, todo, downloads, args, qlog) > 0
            if key_update[0] and total[0] > 0:
                try:  # RFC 9001 §6: only once the handshake is confirmed
                    sock.key_update()
                    key_update[0] = False
                    qlog.event("security:key_updated", trigger="local_update")
                except OSError:
                    pass
            return opened

        def on_message(msg: Any) -> None:
            sid = msg.stream_id
            if sid is None or sid not in downloads:
                return
            d = downloads[sid]
            if d.file is None:
                os.makedirs(os.path.dirname(d.path), exist_ok=True)
                d.file = open(d.path, "wb")  # noqa: SIM115 - closed at FIN below
            d.file.write(msg.data)
            d.size += len(msg.data)
            total[0] += len(msg.data)
            if msg.fin:
                d.file.close()
                done_count[0] += 1
                qlog.event("http:response", stream_id=sid, length=d.size)
                if args.verbose:
                    print(f"{d.url}: {format_size(d.size)} -> {d.path}", flush=True)

        finished = run_loop(sock, writer, on_message,
                            lambda: not todo and done_count[0] == len(downloads), deadline,
                            f"responses from {common.addr_text(addr)}", tick=tick)
        if not finished:
            raise CliError(f"{common.addr_text(addr)} closed the connection with "
                           f"{len(urls) - done_count[0]} of {len(urls)} files missing")
        if key_update[0]:
            raise CliError("the key update could not be started")
        elapsed = time.monotonic() - start
        print(f"{len(urls)} files, {format_size(total[0])} from {common.addr_text(addr)} in "
              f"{elapsed:.2f} s ({format_rate(total[0], elapsed)})", flush=True)
        if want_session:
            new_session = hs.get_session_data(timeout=2.0)
            if new_session is None:
                raise CliError("the server sent no session ticket")
        sock.set_close_info(0, b"")
        qlog.event("connectivity:connection_closed", owner="local", application_code=0)
    finally:
        for d in downloads.values():
            if d.file is not None and not d.file.closed:
                d.file.close()
        sock.close()
        qlog.write()
    return new_session


def run_client(args: argparse.Namespace) -> int:
    """``pyquic client``: fetch the URLs, one connection or several as the test case says."""
    if args.testcase not in CLIENT_TESTCASES:
        return _unsupported("client", args.testcase)
    urls = list(args.urls) or os.environ.get("REQUESTS", "").split()
    if not urls:
        raise CliError("no URLs to fetch (give them as arguments or in $REQUESTS)")
    for url in urls:
        _parse_url(url)
    os.makedirs(args.downloads, exist_ok=True)
    if args.testcase in ("multiconnect", "handshakeloss"):
        groups = [[u] for u in urls]  # one connection per file
    elif args.testcase in ("resumption", "zerortt") and len(urls) > 1:
        groups = [urls[:1], urls[1:]]  # the second connection resumes the first
    else:
        groups = [urls]
    session = None
    for i, group in enumerate(groups):
        resume = args.testcase in ("resumption", "zerortt")
        session = _client_connection(args, group, session if resume else None,
                                     want_session=resume and i == 0)
    return 0


__all__ = ["ALPN", "EXIT_UNSUPPORTED", "Qlog", "add_parser", "interop_argv", "run_client",
           "run_interop",
           "run_server"]
