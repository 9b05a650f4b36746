"""pyquic: QUIC sockets for Python, on the in-kernel QUIC module or in pure Python.

``pyquic.socket()`` returns a socket with the kernel's ``IPPROTO_QUIC`` API:
a real kernel socket where the module is loaded, the pure-Python user backend
elsewhere. ``client_handshake`` / ``server_handshake`` run pyquic's own TLS 1.3
over either, through the socket API exactly as libquic does. The kernel's
constants, option structs, cmsg helpers and events are re-exported from
:mod:`pyquic.abi`; asyncio helpers live in :mod:`pyquic.aio`.
"""

from __future__ import annotations

from pyquic import aio
from pyquic.abi import *  # the kernel's ABI names are pyquic's public names
from pyquic.abi import __all__ as _abi_all
from pyquic.kernel.available import kernel_available
from pyquic.socket_api import select_backend, socket
from pyquic.tls.driver import HandshakeResult, client_handshake, server_handshake

__version__ = "0.1.0"

__all__ = [
    "HandshakeResult",
    "aio",
    "client_handshake",
    "kernel_available",
    "select_backend",
    "server_handshake",
    "socket",
]
__all__.extend(_abi_all)
