"""Ancillary-data (cmsg) helpers for QUIC sendmsg/recvmsg.

The tuples are in the form Python's ``socket.sendmsg`` takes and
``socket.recvmsg`` returns: ``(cmsg_level, cmsg_type, data)``.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable

from pyquic.abi.constants import SOL_QUIC, CmsgType
from pyquic.abi.structs import HandshakeInfo, StreamInfo

# recvmsg ancillary space for one STREAM_INFO / HANDSHAKE_INFO cmsg.
STREAM_INFO_CMSG_SPACE: int = socket.CMSG_SPACE(StreamInfo.SIZE)
HANDSHAKE_INFO_CMSG_SPACE: int = socket.CMSG_SPACE(HandshakeInfo.SIZE)

_STREAM_INFO_DEFAULT = StreamInfo(-1, 0).pack()


_STREAM_INFO = CmsgType.STREAM_INFO
_pack_stream_info = StreamInfo._struct.pack

#: ``unpack_stream_info(data)``: (stream_id, stream_flags) of a whole
#: QUIC_STREAM_INFO payload (at least ``StreamInfo.SIZE`` bytes; extra bytes
#: ignored), without the dataclass: for the per-message paths.
unpack_stream_info = StreamInfo._struct.unpack_from


def stream_info_cmsg(stream_id: int, flags: int) -> tuple[int, int, bytes]:
    """Return the QUIC_STREAM_INFO cmsg for ``sendmsg``."""
    try:
        data = _pack_stream_info(stream_id, flags)  # once per send: no dataclass
    except struct.error:
        data = StreamInfo(stream_id, flags).pack()  # raises, naming the field
    return (SOL_QUIC, _STREAM_INFO, data)


def handshake_info_cmsg(level: int) -> tuple[int, int, bytes]:
    """Return the QUIC_HANDSHAKE_INFO cmsg (crypto level) for ``sendmsg``."""
    return (SOL_QUIC, CmsgType.HANDSHAKE_INFO, HandshakeInfo(level).pack())


def parse_ancdata(
    ancdata: Iterable[tuple[int, int, bytes]],
) -> tuple[StreamInfo | None, HandshakeInfo | None]:
    """Extract the QUIC cmsgs of an ancillary-data list (from recvmsg, or given to sendmsg).

    Follows the kernel's sendmsg parsing: cmsgs of other levels are skipped,
    an unknown SOL_QUIC type is ``OSError(EINVAL)``, and a short payload is
    copied over the defaults (stream id -1, flags 0; level 0). The last cmsg of
    each type wins. Stream-flag validation (``STREAM_FLAGS_MASK``) is left to
    the caller, since it applies to sends only.
    """
    sinfo: StreamInfo | None = None
    hinfo: HandshakeInfo | None = None
    for level, ctype, data in ancdata:
        if level != SOL_QUIC:
            continue
        if ctype == CmsgType.STREAM_INFO:
            if len(data) >= StreamInfo.SIZE:
                sinfo = StreamInfo.unpack(data)
            else:
                sinfo = StreamInfo.unpack(bytes(data) + _STREAM_INFO_DEFAULT[len(data):])
        elif ctype == CmsgType.HANDSHAKE_INFO:
            hinfo = HandshakeInfo.unpack_prefix(data)
        else:
            raise OSError(errno.EINVAL, f"unknown SOL_QUIC cmsg type {ctype}")
    return sinfo, hinfo
