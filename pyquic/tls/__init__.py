"""TLS 1.3 for QUIC in pure Python, and the handshake driver over the socket API.

- :mod:`pyquic.tls.context`: sans-I/O client/server state machines (:class:`TlsContext`).
- :mod:`pyquic.tls.driver`: :func:`client_handshake` / :func:`server_handshake`, which
  drive a QUIC socket (kernel or user backend) through its handshake options.
- :mod:`pyquic.tls.messages`, :mod:`pyquic.tls.keyschedule`: codecs and key schedule.
- :mod:`pyquic.tls.x509`, :mod:`pyquic.tls.psk`, :mod:`pyquic.tls.session`: certificates,
  libquic PSK files, resumption state.
"""

from __future__ import annotations

from pyquic.tls.context import TlsConfig, TlsContext, TrafficSecret
from pyquic.tls.driver import (
    HandshakeResult,
    client_handshake,
    parse_alpns,
    restore_session,
    server_handshake,
)
from pyquic.tls.messages import AlertDescription, TlsAlert
from pyquic.tls.session import SessionTicket
from pyquic.tls.x509 import generate_self_signed

__all__ = [
    "AlertDescription",
    "HandshakeResult",
    "SessionTicket",
    "TlsAlert",
    "TlsConfig",
    "TlsContext",
    "TrafficSecret",
    "client_handshake",
    "generate_self_signed",
    "parse_alpns",
    "restore_session",
    "server_handshake",
]
