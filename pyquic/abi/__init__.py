"""Kernel QUIC socket ABI: constants, enums, typed structs, cmsg and event codecs.

Everything here mirrors ``linux/quic.h`` of the in-kernel QUIC module and is
used by both backends (see docs/dev/contracts.md §1). Struct layouts come from
cffi (``pyquic.abi._ffi``: the compiled API-mode module built by
``build_ffi.py`` when present, else the shipped declarations in in-line ABI
mode), so importing this package needs no compiler, header or kernel module.
libc get/setsockopt live in ``pyquic.abi.libc``.

Extensions to the contract: C-style aliases of every constant
(``QUIC_EVENT_*``, ``QUIC_CRYPTO_*``, ``QUIC_TRANSPORT_ERROR_*``...),
``MSG_CONFIRM``/``MSG_ERRQUEUE``/``MSG_MORE``/``MSG_WAITFORONE``,
``STREAM_FLAGS_MASK``, ``HANDSHAKE_INFO_CMSG_SPACE``, ``unpack_prefix`` on
structs (the kernel's lenient option copy), ``EVENT_CLASSES``, ``Event``,
``STRUCT_CLASSES``; ``reserved`` struct fields are not dataclass fields.
"""

from __future__ import annotations

from pyquic.abi import constants as _constants
from pyquic.abi import libc
from pyquic.abi._ffi import FFI_MODE, ffi, lib
from pyquic.abi.cmsg import (
    HANDSHAKE_INFO_CMSG_SPACE,
    STREAM_INFO_CMSG_SPACE,
    handshake_info_cmsg,
    parse_ancdata,
    stream_info_cmsg,
)
from pyquic.abi.constants import *
from pyquic.abi.constants import (
    IPPROTO_QUIC,
    MSG_FIN,
    MSG_RST,
    MSG_SYN,
    SOL_QUIC,
    STREAM_FLAGS_MASK,
    CmsgType,
    CongAlgo,
    CryptoLevel,
    EventType,
    MsgFlag,
    SockOpt,
    StreamFlag,
    StreamState,
    TlsCipher,
    TransportError,
    Version,
)
from pyquic.abi.events import (
    EVENT_CLASSES,
    ConnectionCloseEvent,
    ConnectionIdEvent,
    ConnectionMigrationEvent,
    Event,
    KeyUpdateEvent,
    NewSessionTicketEvent,
    NewTokenEvent,
    StreamMaxDataEvent,
    StreamMaxStreamEvent,
    StreamUpdateEvent,
    decode_event,
)
from pyquic.abi.structs import (
    STRUCT_CLASSES,
    Config,
    ConnectionClose,
    ConnectionIdInfo,
    CryptoSecret,
    CStruct,
    ErrInfo,
    EventOption,
    HandshakeInfo,
    StreamInfo,
    StreamMaxData,
    StreamUpdate,
    TransportParam,
)

__all__ = [
    "EVENT_CLASSES",
    "FFI_MODE",
    "HANDSHAKE_INFO_CMSG_SPACE",
    "IPPROTO_QUIC",
    "MSG_FIN",
    "MSG_RST",
    "MSG_SYN",
    "SOL_QUIC",
    "STREAM_FLAGS_MASK",
    "STREAM_INFO_CMSG_SPACE",
    "STRUCT_CLASSES",
    "CStruct",
    "CmsgType",
    "Config",
    "CongAlgo",
    "ConnectionClose",
    "ConnectionCloseEvent",
    "ConnectionIdEvent",
    "ConnectionIdInfo",
    "ConnectionMigrationEvent",
    "CryptoLevel",
    "CryptoSecret",
    "ErrInfo",
    "Event",
    "EventOption",
    "EventType",
    "HandshakeInfo",
    "KeyUpdateEvent",
    "MsgFlag",
    "NewSessionTicketEvent",
    "NewTokenEvent",
    "SockOpt",
    "StreamFlag",
    "StreamInfo",
    "StreamMaxData",
    "StreamMaxDataEvent",
    "StreamMaxStreamEvent",
    "StreamState",
    "StreamUpdate",
    "StreamUpdateEvent",
    "TlsCipher",
    "TransportError",
    "TransportParam",
    "Version",
    "decode_event",
    "ffi",
    "handshake_info_cmsg",
    "lib",
    "libc",
    "parse_ancdata",
    "stream_info_cmsg",
]
# every C-style constant alias (QUIC_*, MSG_*, TLS_CIPHER_*) as well
__all__ += [n for n in sorted(vars(_constants)) if n.isupper() and n not in __all__]
