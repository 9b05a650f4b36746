"""Unit tests of pyquic.cli.common helpers (no network)."""

from __future__ import annotations

import errno
import io
import os
from typing import Any

import pytest

from pyquic.cli import common
from pyquic.cli.common import CliError, Progress, StreamWriter


def test_format_size_and_rate() -> None:
    assert common.format_size(1024) == "1 KiB"
    assert common.format_size(1536) == "1.5 KiB"
    assert common.format_size(100) == "100 B"
    assert common.format_size(3 << 20) == "3 MiB"
    assert common.format_rate(1_000_000, 8.0) == "1.00 Mbit/s"


def test_parse_hostport() -> None:
    assert common.parse_hostport("example.org", 443) == ("example.org", 443)
    assert common.parse_hostport("example.org:8443", 443) == ("example.org", 8443)
    assert common.parse_hostport("[::1]:4433", 443) == ("::1", 4433)
    assert common.parse_hostport("::1", 443) == ("::1", 443)


def test_cipher_and_backend_names() -> None:
    assert common.cipher_name(0x1303) == "TLS_CHACHA20_POLY1305_SHA256"
    assert common.cipher_name(0x1399) == "cipher suite 0x1399"
    assert common.backend_label("user") == "user (pure Python)"


def test_temporary_certificate_is_removed() -> None:
    with common.temporary_certificate() as (cert, key):
        assert os.path.exists(cert) and os.path.exists(key)
        assert os.stat(key).st_mode & 0o077 == 0
        common.check_cert_key(cert, key)
    assert not os.path.exists(os.path.dirname(cert))


def test_check_cert_key_swapped() -> None:
    with common.temporary_certificate() as (cert, key), pytest.raises(
            CliError, match="bad certificate file"):
        common.check_cert_key(key, cert)


def test_progress_once_per_interval() -> None:
    buf = io.StringIO()
    p = Progress("t", stream=buf, interval=1.0)
    p.update(10, now=p.start + 0.5)
    assert buf.getvalue() == ""
    p.update(1_000_000, now=p.start + 1.0)
    p.update(1_500_000, now=p.start + 1.5)
    assert buf.getvalue() == "t: 976.6 KiB in 1.0 s, 8.00 Mbit/s\n"


class FakeSocket:
    """send_stream accepting ``budget`` bytes, then EAGAIN (or ENOSPC) until refilled."""

    def __init__(self, budget: int, err: int = errno.EAGAIN) -> None:
        self.budget = budget
        self.err = err
        self.log: list[tuple[int, bytes, bool]] = []

    def send_stream(self, sid: int, data: Any, *, fin: bool = False, msg_flags: int = 0) -> int:
        data = bytes(data)
        if data and self.budget <= 0:
            raise OSError(self.err, os.strerror(self.err))
        n = min(len(data), self.budget)
        self.budget -= n
        self.log.append((sid, data[:n], fin and n == len(data)))
        return n


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.ENOSPC])
def test_stream_writer_keeps_order_and_fin(err: int) -> None:
    sock = FakeSocket(5, err)
    w = StreamWriter(sock)
    w.queue(0, b"abcdefgh", fin=False)
    w.queue(0, b"ijk", fin=True)
    w.queue(4, io.BytesIO(b"XYZ"), fin=True)
    assert w.flush()
    for _ in range(10):
        if not w.busy:
            break
        sock.budget = 4
        w.flush()
    assert not w.busy
    by_stream: dict[int, bytes] = {}
    fins = []
    for sid, data, fin in sock.log:
        by_stream[sid] = by_stream.get(sid, b"") + data
        if fin:
            fins.append(sid)
    assert by_stream == {0: b"abcdefghijk", 4: b"XYZ"}
    assert sorted(fins) == [0, 4]


def test_stream_writer_raises_other_errors() -> None:
    sock = FakeSocket(0, errno.EPIPE)
    w = StreamWriter(sock)
    w.queue(0, b"x")
    with pytest.raises(BrokenPipeError):
        w.flush()


def test_stream_writer_empty_fin() -> None:
    sock = FakeSocket(0)
    w = StreamWriter(sock)
    w.queue(8, b"", fin=True)
    assert w.flush()
    assert sock.log == [(8, b"", True)] and not w.busy


class ScriptedSocket(FakeSocket):
    """A socket whose reads come from ``messages`` (then EAGAIN), recording
    every recv, send and wait in ``events`` in call order."""

    def __init__(self, messages: list[Any]) -> None:
        super().__init__(1 << 20)
        self.messages = messages
        self.events: list[str] = []

    def recv_message(self, bufsize: int, flags: int = 0) -> Any:
        if not self.messages:
            self.events.append("recv:EAGAIN")
            raise BlockingIOError(errno.EAGAIN, "no data")
        self.events.append("recv")
        return self.messages.pop(0)

    def send_stream(self, sid: int, data: Any, *, fin: bool = False, msg_flags: int = 0) -> int:
        self.events.append("send")
        return super().send_stream(sid, data, fin=fin, msg_flags=msg_flags)

    def wait_readable(self, timeout: float) -> bool:
        self.events.append("wait")
        return bool(self.messages)


def _stream_msg(data: bytes) -> Any:
    from pyquic.kernel.typed import QuicMessage

    return QuicMessage(data, 0, 0, 0)


def test_run_loop_answers_before_reading_on_and_waits_once_dry() -> None:
    # a request/response peer waits for each answer: it leaves before the
    # next read, then the loop waits (at once if more came) rather than read
    # again, and a dry socket with nothing queued is waited on, not re-read
    sock = ScriptedSocket([_stream_msg(b"q1"), _stream_msg(b"q2")])
    w = StreamWriter(sock)
    answered: list[bytes] = []

    def on_message(msg: Any) -> None:
        answered.append(msg.data)
        w.queue(0, b"a" + msg.data, fin=False)

    assert common.run_loop(sock, w, on_message, lambda: len(sock.events) >= 8,
                           deadline=10**9, what="test")
    assert sock.events[:8] == ["recv", "send", "wait", "recv", "send", "wait", "recv:EAGAIN",
                               "wait"]
    assert answered == [b"q1", b"q2"]
    assert [d for _sid, d, _fin in sock.log] == [b"aq1", b"aq2"]


def test_run_loop_reads_on_while_a_backlog_is_queued() -> None:
    # answers queued behind a blocked one are not flushed per message read
    # (each flush would try every queued stream again): reading goes on
    sock = ScriptedSocket([_stream_msg(b"q1"), _stream_msg(b"q2"), _stream_msg(b"q3")])
    sock.budget = 0  # the first answer is stuck in the writer
    w = StreamWriter(sock)
    w.queue(4, b"stuck", fin=False)

    def on_message(msg: Any) -> None:
        w.queue(0, msg.data, fin=False)

    assert common.run_loop(sock, w, on_message, lambda: "wait" in sock.events,
                           deadline=10**9, what="test")
    # a flush per turn of the loop (each tries every queued stream once), none per read
    assert sock.events == ["send", "recv", "recv", "recv", "recv:EAGAIN", "send", "send",
                           "recv:EAGAIN", "wait"]


def test_run_loop_goes_round_while_the_writer_is_busy() -> None:
    # the answer does not fit the send buffer: the loop keeps flushing (room
    # comes back while it waits) until all of it left, in order
    sock = ScriptedSocket([_stream_msg(b"q")])
    sock.budget = 2
    w = StreamWriter(sock)
    real_wait = sock.wait_readable

    def wait_and_refill(timeout: float) -> bool:
        sock.budget += 1
        return real_wait(timeout)

    sock.wait_readable = wait_and_refill  # type: ignore[method-assign]
    on_message = lambda m: w.queue(0, b"abcd", fin=True)
    assert common.run_loop(sock, w, on_message, lambda: bool(sock.log) and not w.busy,
                           deadline=10**9)
    assert b"".join(d for _sid, d, _fin in sock.log) == b"abcd" and sock.log[-1][2]


def test_recv_message_waits_first_when_asked() -> None:
    sock = ScriptedSocket([_stream_msg(b"r")])
    assert common.recv_message(sock, 10**9, "r", wait_first=True).data == b"r"
    assert sock.events == ["wait", "recv"]
    sock.messages.append(_stream_msg(b"s"))
    assert common.recv_message(sock, 10**9, "s").data == b"s"
    assert sock.events[2:] == ["recv"]
