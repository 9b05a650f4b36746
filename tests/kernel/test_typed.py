"""Unit tests of pyquic.kernel.typed: the typed layer over the raw socket calls.

A recording fake stands in for the socket, so every helper is checked for the
exact bytes and cmsgs it hands to the kernel, with no module needed.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from pyquic.abi.cmsg import STREAM_INFO_CMSG_SPACE
from pyquic.abi.constants import (
    SOL_QUIC,
    CmsgType,
    CryptoLevel,
    EventType,
    MsgFlag,
    SockOpt,
    StreamFlag,
)
from pyquic.abi.events import StreamUpdateEvent
from pyquic.abi.structs import (
    Config,
    ConnectionClose,
    ConnectionIdInfo,
    ErrInfo,
    EventOption,
    StreamInfo,
    TransportParam,
)
from pyquic.kernel.typed import QuicMessage, QuicSocketMixin, normalize_alpns, sockaddr_bytes

MSG_EOR = socket.MSG_EOR


class FakeSocket(QuicSocketMixin):
    """Records calls; getsockopt/recvmsg answer from queues."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.get_answers: list[bytes] = []
        self.recv_answers: list[tuple[bytes, list[tuple[int, int, bytes]], int, Any]] = []

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        self.calls.append(("sendmsg", [bytes(b) for b in buffers], list(ancdata), flags))
        return sum(len(b) for b in buffers)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> Any:
        self.calls.append(("recvmsg", bufsize, ancbufsize, flags))
        return self.recv_answers.pop(0)

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        self.calls.append(("setsockopt", level, optname, value, optlen))

    def getsockopt(self, level: int, optname: int, buflen: Any = None) -> Any:
        self.calls.append(("getsockopt", level, optname, buflen))
        return self.get_answers.pop(0)


def test_open_stream_passes_stream_info_in_and_reads_id_back() -> None:
    s = FakeSocket()
    s.get_answers.append(StreamInfo(6, int(StreamFlag.UNI | StreamFlag.NEW)).pack())
    assert s.open_stream(uni=True, dontwait=True) == 6
    _, level, opt, buf = s.calls[0]
    assert (level, opt) == (SOL_QUIC, SockOpt.STREAM_OPEN)
    sent = StreamInfo.unpack(buf)
    assert sent.stream_id == -1
    assert sent.stream_flags == StreamFlag.UNI | StreamFlag.DONTWAIT


def test_send_stream_builds_stream_info_cmsg_with_fin() -> None:
    s = FakeSocket()
    assert s.send_stream(4, b"abc", fin=True, flags=StreamFlag.NEW) == 3
    _, bufs, anc, flags = s.calls[0]
    assert bufs == [b"abc"] and flags == 0
    assert len(anc) == 1
    level, ctype, data = anc[0]
    assert (level, ctype) == (SOL_QUIC, CmsgType.STREAM_INFO)
    # struct quic_stream_info: s64 id, u32 flags, 4 bytes padding.
    assert data == struct.pack("=qI4x", 4, StreamFlag.NEW | StreamFlag.FIN)


def test_send_datagram_sets_msg_flag_and_no_cmsg() -> None:
    s = FakeSocket()
    s.send_datagram(b"d", msg_flags=socket.MSG_DONTWAIT)
    assert s.calls[0] == ("sendmsg", [b"d"], [], MsgFlag.DATAGRAM | socket.MSG_DONTWAIT)


def test_recv_message_stream_data_with_fin() -> None:
    s = FakeSocket()
    anc = [(SOL_QUIC, int(CmsgType.STREAM_INFO), StreamInfo(8, int(StreamFlag.FIN)).pack())]
    s.recv_answers.append((b"data", anc, 0, None))
    m = s.recv_message(1000)
    assert s.calls[0] == ("recvmsg", 1000, STREAM_INFO_CMSG_SPACE, 0)
    assert (m.data, m.stream_id, m.fin, m.is_event, m.is_datagram) == (b"data", 8, True, False,
                                                                       False)


def test_recv_message_fin_in_msg_flags_when_cmsg_truncated() -> None:
    s = FakeSocket()
    s.recv_answers.append((b"x", [], StreamFlag.FIN | socket.MSG_CTRUNC, None))
    m = s.recv_message()
    assert m.stream_id is None and m.fin


def test_recv_message_decodes_event() -> None:
    s = FakeSocket()
    ev = StreamUpdateEvent(4, 8, 0, 11)
    s.recv_answers.append((ev.pack(), [], MsgFlag.NOTIFICATION | MSG_EOR, None))
    m = s.recv_message()
    assert m.is_event and m.event == ev and not m.fin and m.stream_id is None


def test_recv_message_handshake_level_and_datagram() -> None:
    s = FakeSocket()
    s.recv_answers.append((b"hs", [(SOL_QUIC, int(CmsgType.HANDSHAKE_INFO), b"\x02")], 0, None))
    s.recv_answers.append((b"dg", [], MsgFlag.DATAGRAM | MSG_EOR, None))
    hs = s.recv_message()
    dg = s.recv_message()
    assert hs.level == CryptoLevel.HANDSHAKE and hs.stream_id is None
    assert dg.is_datagram and dg.stream_id is None and not dg.fin


def test_reset_stop_sending_and_event_options() -> None:
    s = FakeSocket()
    s.reset_stream(4, 7)
    s.stop_sending(5, 9)
    s.set_event(EventType.KEY_UPDATE, True)
    s.get_answers.append(EventOption(int(EventType.KEY_UPDATE), 1).pack())
    assert s.get_event(EventType.KEY_UPDATE) is True
    assert s.calls[0] == ("setsockopt", SOL_QUIC, SockOpt.STREAM_RESET, ErrInfo(4, 7).pack(),
                          None)
    assert s.calls[1][2:4] == (SockOpt.STREAM_STOP_SENDING, ErrInfo(5, 9).pack())
    assert s.calls[2][2:4] == (SockOpt.EVENT, bytes([EventType.KEY_UPDATE, 1]))
    # get_event passes the type in (an in/out option).
    assert s.calls[3][2:4] == (SockOpt.EVENT, bytes([EventType.KEY_UPDATE, 0]))


def test_key_update_passes_no_value() -> None:
    s = FakeSocket()
    s.key_update()
    assert s.calls[0] == ("setsockopt", SOL_QUIC, SockOpt.KEY_UPDATE, None, 0)


def test_transport_param_remote_flag_goes_in() -> None:
    s = FakeSocket()
    tp = TransportParam(remote=1, max_streams_bidi=7, max_data=1 << 20)
    s.get_answers.append(tp.pack())
    assert s.get_transport_param(remote=True) == tp
    assert TransportParam.unpack(s.calls[0][3]).remote == 1
    s.set_transport_param(tp)
    assert s.calls[1][2:4] == (SockOpt.TRANSPORT_PARAM, tp.pack())


def test_connection_id_close_config_round_trip() -> None:
    s = FakeSocket()
    s.get_answers.append(ConnectionIdInfo(1, 3, 2).pack())
    assert s.get_connection_id(dest=True) == ConnectionIdInfo(1, 3, 2)
    assert ConnectionIdInfo.unpack(s.calls[0][3]).dest == 1
    s.set_close_info(5, "bye")
    assert ConnectionClose.unpack(s.calls[1][3]) == ConnectionClose(5, 0, b"bye")
    s.get_answers.append(Config(initial_smoothed_rtt=333000).pack())
    assert s.get_config().initial_smoothed_rtt == 333000
    assert s.calls[2][3] == Config.SIZE


def test_variable_length_options_use_sizes_and_bytes() -> None:
    s = FakeSocket()
    s.get_answers += [b"tok", b"h3,smbd", b"T" * 4000, b"ext"]
    assert s.get_token() == b"tok"
    assert s.get_alpn() == "h3,smbd"
    assert s.get_session_ticket() == b"T" * 4000
    assert s.get_transport_param_ext() == b"ext"
    sizes = [c[3] for c in s.calls]
    assert sizes == [256, 128, 4096, 512]
    s.set_alpn(["h3", " smbd "])
    assert s.calls[-1][3] == b"h3,smbd"
    s.set_token(b"")
    assert s.calls[-1][2:4] == (SockOpt.TOKEN, b"")


def test_migrate_encodes_sockaddr() -> None:
    s = FakeSocket()
    s.migrate(("127.0.0.2", 4433))
    assert s.calls[0][2] == SockOpt.CONNECTION_MIGRATION
    assert s.calls[0][3] == sockaddr_bytes(("127.0.0.2", 4433))


def test_sockaddr_bytes_layouts() -> None:
    v4 = sockaddr_bytes(("10.1.2.3", 0x1234))
    assert len(v4) == 16
    assert struct.unpack("=H", v4[:2])[0] == socket.AF_INET
    assert v4[2:4] == b"\x12\x34" and v4[4:8] == socket.inet_aton("10.1.2.3")
    assert v4[8:] == bytes(8)
    v6 = sockaddr_bytes(("::1", 443, 0, 0))
    assert len(v6) == 28
    assert struct.unpack("=H", v6[:2])[0] == socket.AF_INET6
    assert v6[2:4] == (443).to_bytes(2, "big")
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    mapped = sockaddr_bytes(("127.0.0.1", 1), socket.AF_INET6)
    assert mapped[8:24] == socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")
    with pytest.raises(ValueError):
        sockaddr_bytes(("::1", 1), socket.AF_INET)


@pytest.mark.parametrize(
    ("alpns", "expected"),
    [("h3", b"h3"), ("smbd, h3, ksmbd", b"smbd,h3,ksmbd"), ([b"a", "b"], b"a,b")],
)
def test_normalize_alpns(alpns: Any, expected: bytes) -> None:
    assert normalize_alpns(alpns) == expected


@pytest.mark.parametrize("bad", ["", "h3,,x", "a\0b", "x" * 129, ["a,b"]])
def test_normalize_alpns_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        normalize_alpns(bad)


def test_quic_message_properties() -> None:
    assert QuicMessage(b"", int(MsgFlag.DATAGRAM)).is_datagram
    assert not QuicMessage(b"", int(MsgFlag.NOTIFICATION | StreamFlag.FIN)).fin


@pytest.mark.parametrize(
    ("anc", "msg_flags", "want"),
    [
        # the usual stream read (the fast path)
        ([(SOL_QUIC, int(CmsgType.STREAM_INFO), StreamInfo(5, int(StreamFlag.FIN)).pack())],
         0, (5, int(StreamFlag.FIN), True)),
        # a short cmsg is copied over the kernel's defaults (stream id -1, flags 0)
        ([(SOL_QUIC, int(CmsgType.STREAM_INFO), struct.pack("=q", 9)[:4])], 0,
         (struct.unpack("=q", struct.pack("=q", 9)[:4] + struct.pack("=q", -1)[4:])[0], 0,
          False)),
        # STREAM_INFO on a datagram is not stream data
        ([(SOL_QUIC, int(CmsgType.STREAM_INFO), StreamInfo(5, 0).pack())],
         int(MsgFlag.DATAGRAM), (None, 0, False)),
        # another level's cmsg is skipped
        ([(socket.SOL_SOCKET, int(CmsgType.STREAM_INFO), StreamInfo(5, 0).pack())],
         0, (None, 0, False)),
        # two cmsgs: the last STREAM_INFO wins
        ([(SOL_QUIC, int(CmsgType.STREAM_INFO), StreamInfo(5, 0).pack()),
          (SOL_QUIC, int(CmsgType.STREAM_INFO), StreamInfo(7, 0).pack())], 0, (7, 0, False)),
    ],
)
def test_recv_message_stream_info_variants(anc: list[tuple[int, int, bytes]], msg_flags: int,
                                           want: tuple[int | None, int, bool]) -> None:
    s = FakeSocket()
    s.recv_answers.append((b"d", anc, msg_flags, None))
    m = s.recv_message()
    assert (m.stream_id, m.stream_flags, m.fin) == want
    assert type(m.stream_flags) is int
