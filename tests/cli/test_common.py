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
