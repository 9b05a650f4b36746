"""Buffered OS randomness: ``urandom(n)``, a drop-in for :func:`os.urandom`.

A handshake draws about a dozen small random values (connection IDs, keys,
TLS randoms, ticket nonces), each an ``os.urandom`` call and a ``getrandom``
system call. ``urandom`` serves small requests from one buffer filled by
``os.urandom`` (so the bytes are the same CSPRNG output) and hands out every
byte once. The buffer is dropped in a forked child (``os.register_at_fork``)
so parent and child never share bytes. Requests above :data:`_SMALL` bytes go
to ``os.urandom`` directly.
"""

from __future__ import annotations

import os
import threading

__all__ = ["urandom"]

#: bytes drawn from the OS per refill
_POOL = 1024
#: larger requests bypass the pool
_SMALL = 64

_lock = threading.Lock()
_buf = b""
_pos = 0


def urandom(n: int) -> bytes:
    """``n`` random bytes from the OS CSPRNG, each byte handed out once."""
    global _buf, _pos
    if n > _SMALL or n < 0:
        return os.urandom(n)
    with _lock:
        pos = _pos
        end = pos + n
        if end > len(_buf):
            _buf = os.urandom(_POOL)
            pos, end = 0, n
        _pos = end
        return _buf[pos:end]


def _reset() -> None:
    """Forget the buffer (in a forked child: its bytes belong to the parent)."""
    global _buf, _pos, _lock
    _lock = threading.Lock()
    _buf = b""
    _pos = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)
