"""Protocol errors raised inside the sans-I/O engine.

Public API (stable):

- ``QuicError(error_code: int, frame_type: int | None = None, reason: str = "")``:
  a connection error (RFC 9000 §11) the connection turns into CONNECTION_CLOSE.
- ``CryptoError``: AEAD authentication failure; the packet is dropped silently
  (RFC 9001 §5.3), never a connection error by itself.
- Transport error code constants (RFC 9000 §20.1) as plain ints: ``NO_ERROR``, ``INTERNAL_ERROR``,
  ``CONNECTION_REFUSED``, ``FLOW_CONTROL_ERROR``, ``STREAM_LIMIT_ERROR``,
  ``STREAM_STATE_ERROR``, ``FINAL_SIZE_ERROR``, ``FRAME_ENCODING_ERROR``,
  ``TRANSPORT_PARAMETER_ERROR``, ``CONNECTION_ID_LIMIT_ERROR``,
  ``PROTOCOL_VIOLATION``, ``INVALID_TOKEN``, ``APPLICATION_ERROR``,
  ``CRYPTO_BUFFER_EXCEEDED``, ``KEY_UPDATE_ERROR``, ``AEAD_LIMIT_REACHED``,
  ``NO_VIABLE_PATH``, ``VERSION_NEGOTIATION_ERROR`` (RFC 9368), ``CRYPTO_ERROR``
  (0x100; add the TLS alert), plain ints taken from ``pyquic.abi.TransportError``.
"""

from __future__ import annotations

from pyquic.abi import TransportError

__all__ = [
    "AEAD_LIMIT_REACHED",
    "APPLICATION_ERROR",
    "CONNECTION_ID_LIMIT_ERROR",
    "CONNECTION_REFUSED",
    "CRYPTO_BUFFER_EXCEEDED",
    "CRYPTO_ERROR",
    "FINAL_SIZE_ERROR",
    "FLOW_CONTROL_ERROR",
    "FRAME_ENCODING_ERROR",
    "INTERNAL_ERROR",
    "INVALID_TOKEN",
    "KEY_UPDATE_ERROR",
    "NO_ERROR",
    "NO_VIABLE_PATH",
    "PROTOCOL_VIOLATION",
    "STREAM_LIMIT_ERROR",
    "STREAM_STATE_ERROR",
    "TRANSPORT_PARAMETER_ERROR",
    "VERSION_NEGOTIATION_ERROR",
    "CryptoError",
    "QuicError",
]

# RFC 9000 §20.1 transport error codes (values from pyquic.abi.TransportError).
NO_ERROR = int(TransportError.NONE)
INTERNAL_ERROR = int(TransportError.INTERNAL)
CONNECTION_REFUSED = int(TransportError.CONNECTION_REFUSED)
FLOW_CONTROL_ERROR = int(TransportError.FLOW_CONTROL)
STREAM_LIMIT_ERROR = int(TransportError.STREAM_LIMIT)
STREAM_STATE_ERROR = int(TransportError.STREAM_STATE)
FINAL_SIZE_ERROR = int(TransportError.FINAL_SIZE)
FRAME_ENCODING_ERROR = int(TransportError.FRAME_ENCODING)  # 0x07
TRANSPORT_PARAMETER_ERROR = int(TransportError.TRANSPORT_PARAM)  # 0x08
CONNECTION_ID_LIMIT_ERROR = int(TransportError.CONNECTION_ID_LIMIT)
PROTOCOL_VIOLATION = int(TransportError.PROTOCOL_VIOLATION)  # 0x0a
INVALID_TOKEN = int(TransportError.INVALID_TOKEN)
APPLICATION_ERROR = int(TransportError.APPLICATION)
CRYPTO_BUFFER_EXCEEDED = int(TransportError.CRYPTO_BUF_EXCEEDED)
KEY_UPDATE_ERROR = int(TransportError.KEY_UPDATE)
AEAD_LIMIT_REACHED = int(TransportError.AEAD_LIMIT_REACHED)
NO_VIABLE_PATH = int(TransportError.NO_VIABLE_PATH)
VERSION_NEGOTIATION_ERROR = int(TransportError.VERSION_NEGOTIATION)  # RFC 9368 §10.2
CRYPTO_ERROR = int(TransportError.CRYPTO)  # 0x100 + TLS alert (RFC 9001 §4.8)


class QuicError(Exception):
    """A QUIC connection error: closes the connection with ``error_code``.

    ``frame_type`` is the type of the frame that triggered the error (it goes
    into the CONNECTION_CLOSE frame, RFC 9000 §19.19), or None if unknown.
    """

    def __init__(self, error_code: int, frame_type: int | None = None, reason: str = "") -> None:
        super().__init__(error_code, frame_type, reason)
        self.error_code: int = error_code
        self.frame_type: int | None = frame_type
        self.reason: str = reason

    def __str__(self) -> str:
        ft = "" if self.frame_type is None else f" frame_type=0x{self.frame_type:x}"
        return f"QuicError(0x{self.error_code:x}{ft}): {self.reason}"


class CryptoError(Exception):
    """Packet protection failed (bad AEAD tag or malformed protected packet)."""
