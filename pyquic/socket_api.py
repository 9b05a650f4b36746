"""``pyquic.socket()``: a QUIC socket from the kernel module or the user backend.

The kernel backend (``pyquic.kernel.socket.KernelSocket``, a real
``IPPROTO_QUIC`` fd) is used where ``pyquic.kernel.available.kernel_available()``
says the module is loaded; the user backend (``pyquic.user.socket.QuicSocket``,
the pure-Python engine over UDP) everywhere else. ``backend="kernel"`` or
``"user"``, or the environment variable ``PYQUIC_BACKEND`` (same values; the
argument wins), forces one. Both objects offer the same socket API.
"""

from __future__ import annotations

import os
import socket as _socket
from typing import Any

from pyquic.abi.constants import IPPROTO_QUIC

__all__ = ["BACKENDS", "select_backend", "socket"]

BACKENDS = ("kernel", "user")
ENV_VAR = "PYQUIC_BACKEND"


def select_backend(backend: str | None = None) -> str:
    """The backend a new socket would use: "kernel" or "user".

    ``backend`` (or ``$PYQUIC_BACKEND``) may be "kernel", "user" or "auto"/""
    (auto-detect). Unknown names raise ValueError.
    """
    choice = backend if backend is not None else os.environ.get(ENV_VAR, "")
    choice = choice.strip().lower()
    if choice in ("", "auto"):
        from pyquic.kernel.available import kernel_available

        return "kernel" if kernel_available() else "user"
    if choice not in BACKENDS:
        raise ValueError(f"unknown pyquic backend {choice!r} (use 'kernel' or 'user')")
    return choice


def socket(family: int = _socket.AF_INET, type: int = _socket.SOCK_DGRAM,
           proto: int = IPPROTO_QUIC, *, backend: str | None = None) -> Any:
    """Create a QUIC socket on the chosen backend (see the module docstring)."""
    which = select_backend(backend)
    if which == "user":
        from pyquic.user.socket import QuicSocket

        return QuicSocket(family, type, proto)
    try:
        from pyquic.kernel.socket import KernelSocket
    except ImportError as exc:
        raise RuntimeError(
            f"the kernel backend was requested but pyquic.kernel.socket is unavailable: {exc}"
        ) from exc
    return KernelSocket(family, type, proto)
