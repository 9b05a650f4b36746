"""Detect the in-kernel QUIC module."""

from __future__ import annotations

import functools
import socket

from pyquic.abi.constants import IPPROTO_QUIC


@functools.lru_cache(maxsize=1)
def kernel_available() -> bool:
    """Return True if ``socket(AF_INET, SOCK_DGRAM, IPPROTO_QUIC)`` succeeds here.

    The probe socket is closed at once; the answer is cached
    (``kernel_available.cache_clear()`` forgets it).
    """
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, IPPROTO_QUIC)
    except OSError:
        return False
    probe.close()
    return True
