"""``pyquic demo``: a QUIC server and client talking on loopback, narrated.

With a freshly generated self-signed certificate (in a temporary directory,
removed afterwards), a server thread and the client run on the backend
``pyquic.socket()`` picks (or ``--backend``): TLS handshake, three
bidirectional streams echoed by the server, a unidirectional stream from the
server, a datagram each way (RFC 9221, enabled with max_datagram_frame_size),
a key update (RFC 9001 §6) followed by one more stream, and a close with an
application error code and reason phrase that the server reports from its
CONNECTION_CLOSE event. Only the socket API is used, so the demo shows what a
program written against pyquic does on either backend.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pyquic import abi
from pyquic.cli import common
from pyquic.cli.common import CliError, StreamWriter, format_size, run_loop

ALPN = "demo"
STREAM_SIZES = (1024, 16 * 1024, 64 * 1024)
AFTER_UPDATE_SIZE = 4096
UNI_SIZE = 1024
DATAGRAM_SIZE = 1200  # max_datagram_frame_size we advertise (RFC 9221 §3)
CLOSE_ERRCODE = 0x2A
CLOSE_PHRASE = b"demo finished"


@dataclass
class ServerReport:
    """What the server thread saw, for the client to print."""

    ready: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    echoed: dict[int, int] = field(default_factory=dict)
    uni_sid: int | None = None
    datagram: bytes | None = None
    key_phase: int | None = None
    close: abi.ConnectionCloseEvent | None = None
    error: BaseException | None = None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``pyquic demo``."""
    p = sub.add_parser("demo", parents=parents, help="run a server and a client on loopback",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("auto", "user", "kernel"), default=None,
                   help="socket backend (default: $PYQUIC_BACKEND, else kernel if loaded)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="give up after this many seconds (default 20)")
    p.set_defaults(func=run)


def _server(listener: Any, certfile: str, keyfile: str, report: ServerReport,
            deadline: float) -> None:
    """Accept one connection, echo its bidi streams, answer with a uni stream and datagram."""
    sock = None
    try:
        listener.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            sock, peer = listener.accept()
        except TimeoutError:
            raise CliError("the server got no connection") from None
        common.server_handshake(sock, peer, certfile, keyfile, [ALPN],
                                timeout=max(0.1, deadline - time.monotonic()))
        # Events after the handshake: the driver reads handshake messages only.
        sock.set_event(abi.EventType.CONNECTION_CLOSE, True)
        sock.set_event(abi.EventType.KEY_UPDATE, True)
        writer = StreamWriter(sock)
        bufs: dict[int, bytearray] = {}

        def on_message(msg: Any) -> None:
            if msg.is_event:
                ev = msg.event
                if isinstance(ev, abi.ConnectionCloseEvent):
                    report.close = ev
                elif isinstance(ev, abi.KeyUpdateEvent):
                    report.key_phase = ev.phase
                return
            if msg.is_datagram:
                report.datagram = bytes(msg.data)
                sock.send_datagram(b"pong " + bytes(msg.data))
                return
            if msg.stream_id is None:
                return
            buf = bufs.setdefault(msg.stream_id, bytearray())
            buf += msg.data
            if msg.fin:
                writer.queue(msg.stream_id, bytes(buf))
                report.echoed[msg.stream_id] = len(buf)
                if len(report.echoed) == len(STREAM_SIZES) and report.uni_sid is None:
                    report.uni_sid = sock.open_stream(uni=True)
                    writer.queue(report.uni_sid, os.urandom(UNI_SIZE))

        run_loop(sock, writer, on_message, lambda: report.close is not None, deadline,
                 "the client (server side)")
    except BaseException as exc:  # noqa: BLE001 - reported by the client thread
        report.error = exc
    finally:
        if sock is not None:
            sock.close()


def _fail_from_server(report: ServerReport, exc: BaseException) -> BaseException:
    """Prefer the server's error when the client only timed out because of it."""
    if report.error is not None and not isinstance(report.error, KeyboardInterrupt):
        if isinstance(report.error, CliError):
            return report.error
        return CliError(f"server: {common.reason(report.error)}")
    return exc


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints a few lines and returns 0, or raises CliError."""
    out = args.out if hasattr(args, "out") else None
    start = time.monotonic()
    deadline = start + args.timeout
    backend = args.backend
    from pyquic.socket_api import select_backend

    try:
        which = select_backend(backend)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    print(f"backend: {common.backend_label(which)}", file=out, flush=True)
    family, addr = common.resolve(args.host, 0)
    report = ServerReport()
    with common.temporary_certificate() as (certfile, keyfile):
        listener = common.new_socket(family, which)
        client = None
        thread = None
        try:
            common.set_transport_param(listener, max_datagram_frame_size=DATAGRAM_SIZE)
            common.bind_and_listen(listener, addr, [ALPN])
            port = listener.getsockname()[1]
            thread = threading.Thread(target=_server, name="pyquic-demo-server", daemon=True,
                                      args=(listener, certfile, keyfile, report, deadline))
            thread.start()
            client = common.new_socket(family, which)
            common.set_transport_param(client, max_datagram_frame_size=DATAGRAM_SIZE)
            peer = (addr[0], port) + tuple(addr[2:])
            try:
                _client(client, peer, certfile, report, deadline, out)
            except (CliError, OSError) as exc:
                raise _fail_from_server(report, exc) from exc
            client.set_close_info(CLOSE_ERRCODE, CLOSE_PHRASE)
            client.close()
            client = None
            thread.join(max(0.1, deadline - time.monotonic()))
            if report.error is not None:
                raise _fail_from_server(report, report.error)
            if thread.is_alive() or report.close is None:
                raise CliError("the server did not see the CONNECTION_CLOSE")
            ev = report.close
            phrase = ev.phrase.decode("utf-8", "replace")
            print(f"close: server saw CONNECTION_CLOSE with app error 0x{ev.errcode:x} "
                  f"\"{phrase}\"", file=out)
            if ev.errcode != CLOSE_ERRCODE or ev.phrase != CLOSE_PHRASE:
                raise CliError(f"server saw close code 0x{ev.errcode:x} {phrase!r}, "
                               f"expected 0x{CLOSE_ERRCODE:x} {CLOSE_PHRASE.decode()!r}")
        finally:
            if client is not None:
                client.close()
            listener.close()
            if thread is not None:
                thread.join(1.0)
    print(f"done in {(time.monotonic() - start) * 1000:.0f} ms", file=out)
    return 0


def _client(sock: Any, peer: tuple[Any, ...], cafile: str, report: ServerReport,
            deadline: float, out: Any) -> None:
    common.connect_socket(sock, peer)
    t0 = time.monotonic()
    hs = common.client_handshake(sock, peer, "localhost", [ALPN], timeout=max(
        0.1, deadline - t0), cafile=cafile)
    ms = (time.monotonic() - t0) * 1000
    print(f"handshake: {common.cipher_name(hs.cipher_suite)}, alpn {hs.alpn}, {ms:.0f} ms",
          file=out, flush=True)

    writer = StreamWriter(sock)
    sent: dict[int, bytes] = {}
    got: dict[int, bytearray] = {}
    finished: set[int] = set()
    dgram: dict[str, Any] = {"echo": None, "tries": 0, "at": 0.0}
    for size in STREAM_SIZES:
        sid = sock.open_stream()
        sent[sid] = os.urandom(size)
        writer.queue(sid, sent[sid])
    remote = sock.get_transport_param(remote=True)
    dgram_ok = remote.max_datagram_frame_size > 0
    ping = b"ping"

    def send_ping() -> None:
        dgram["tries"] += 1
        dgram["at"] = time.monotonic()
        sock.send_datagram(ping)

    if dgram_ok:
        send_ping()

    def on_message(msg: Any) -> None:
        if msg.is_datagram:
            dgram["echo"] = bytes(msg.data)
            return
        if msg.is_event or msg.stream_id is None:
            return
        got.setdefault(msg.stream_id, bytearray()).extend(msg.data)
        if msg.fin:
            finished.add(msg.stream_id)

    def streams_done() -> bool:
        if dgram_ok and dgram["echo"] is None and dgram["tries"] < 5 and (
                time.monotonic() - dgram["at"] > 0.5):
            send_ping()  # datagrams are unreliable (RFC 9221 §5): try again
        want = set(sent) | ({report.uni_sid} if report.uni_sid is not None else set())
        return (report.uni_sid is not None and want <= finished
                and (not dgram_ok or dgram["echo"] is not None or dgram["tries"] >= 5))

    if not run_loop(sock, writer, on_message, streams_done, deadline, "the echoed streams"):
        raise CliError("the server closed the connection early")
    for sid in sorted(sent):
        if bytes(got.get(sid, b"")) != sent[sid]:
            raise CliError(f"stream {sid}: echo differs from what was sent")
        print(f"stream {sid}: {format_size(len(sent[sid]))} echoed", file=out)
    uni = report.uni_sid
    assert uni is not None
    print(f"stream {uni}: {format_size(len(got.get(uni, b'')))} received on the server's "
          f"unidirectional stream", file=out)
    if not dgram_ok:
        print("datagram: not offered by the peer (max_datagram_frame_size 0)", file=out)
    elif dgram["echo"] is None:
        raise CliError(f"datagram: no echo after {dgram['tries']} tries")
    else:
        print(f"datagram: sent {len(ping)} B \"{ping.decode()}\", server answered "
              f"\"{dgram['echo'].decode('ascii', 'replace')}\"", file=out)

    # Key update (RFC 9001 §6), then one more stream under the new keys.
    for _ in range(200):  # EINVAL while an earlier update is unconfirmed (bounded retry)
        try:
            sock.key_update()
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CliError(f"key update failed: {common.reason(exc)}") from exc
            time.sleep(0.01)
    sid = sock.open_stream()
    sent[sid] = os.urandom(AFTER_UPDATE_SIZE)
    writer.queue(sid, sent[sid])
    if not run_loop(sock, writer, on_message,
                    lambda: sid in finished and report.key_phase is not None, deadline,
                    "the stream after the key update"):
        raise CliError("the server closed the connection during the key update")
    if bytes(got[sid]) != sent[sid]:
        raise CliError(f"stream {sid}: echo after the key update differs")
    print(f"key update: server saw key phase {report.key_phase}; stream {sid}: "
          f"{format_size(AFTER_UPDATE_SIZE)} echoed under the new keys", file=out, flush=True)


__all__ = ["add_parser", "run"]
