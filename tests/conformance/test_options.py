"""Socket options and errnos that need no peer (socket.c option handlers)."""

from __future__ import annotations

import errno
import socket

import pytest

from pyquic import abi
from pyquic.abi.constants import SOL_QUIC

O = abi.SockOpt


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def test_unknown_options_enoprotoopt(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert _errno(s.setsockopt, SOL_QUIC, 99, b"\0" * 4) == errno.ENOPROTOOPT
    assert _errno(s.getsockopt, SOL_QUIC, 99, 16) == errno.ENOPROTOOPT
    # STREAM_OPEN is get-only, STREAM_RESET set-only
    assert _errno(s.setsockopt, SOL_QUIC, O.STREAM_OPEN, bytes(16)) == errno.ENOPROTOOPT
    assert _errno(s.getsockopt, SOL_QUIC, O.STREAM_RESET, 16) == errno.ENOPROTOOPT
    assert _errno(s.getsockopt, SOL_QUIC, O.KEY_UPDATE, 16) == errno.ENOPROTOOPT


def test_events_default_off_and_toggle(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    for t in range(1, len(abi.EventType)):
        got = abi.EventOption.unpack(s.getsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, 0).pack()))
        assert got.type == t and got.on == 0
        s.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, 1).pack())
        got = abi.EventOption.unpack(s.getsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, 0).pack()))
        assert got.on == 1
        s.setsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, 0).pack())
        got = abi.EventOption.unpack(s.getsockopt(SOL_QUIC, O.EVENT, abi.EventOption(t, 1).pack()))
        assert got.on == 0
    for bad in (0, len(abi.EventType)):
        assert _errno(s.setsockopt, SOL_QUIC, O.EVENT,
                      abi.EventOption(bad, 1).pack()) == errno.EINVAL
        assert _errno(s.getsockopt, SOL_QUIC, O.EVENT,
                      abi.EventOption(bad, 0).pack()) == errno.EINVAL


def test_transport_param_defaults_and_set(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    p = abi.TransportParam.unpack(s.getsockopt(SOL_QUIC, O.TRANSPORT_PARAM,
                                               abi.TransportParam.SIZE))
    assert p.max_streams_bidi == 100 and p.max_streams_uni == 100
    assert p.max_idle_timeout == 30_000_000
    s.setsockopt(SOL_QUIC, O.TRANSPORT_PARAM,
                 abi.TransportParam(max_streams_bidi=7, max_datagram_frame_size=1400).pack())
    p = abi.TransportParam.unpack(s.getsockopt(SOL_QUIC, O.TRANSPORT_PARAM,
                                               abi.TransportParam.SIZE))
    assert p.max_streams_bidi == 7 and p.max_datagram_frame_size == 1400
    assert p.max_streams_uni == 100
    # remote parameters may be set only while the handshake runs
    assert _errno(s.setsockopt, SOL_QUIC, O.TRANSPORT_PARAM,
                  abi.TransportParam(remote=1, max_streams_bidi=5).pack()) == errno.EINVAL
    # out-of-range value
    assert _errno(s.setsockopt, SOL_QUIC, O.TRANSPORT_PARAM,
                  abi.TransportParam(max_udp_payload_size=1000).pack()) == errno.EINVAL


def test_config_defaults_and_set(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    c = abi.Config.unpack(s.getsockopt(SOL_QUIC, O.CONFIG, abi.Config.SIZE))
    assert c.initial_smoothed_rtt == 333_000
    s.setsockopt(SOL_QUIC, O.CONFIG, abi.Config(congestion_control_algo=abi.CongAlgo.CUBIC,
                                                  receive_session_ticket=1).pack())
    c = abi.Config.unpack(s.getsockopt(SOL_QUIC, O.CONFIG, abi.Config.SIZE))
    assert c.congestion_control_algo == abi.CongAlgo.CUBIC and c.receive_session_ticket == 1
    assert _errno(s.setsockopt, SOL_QUIC, O.CONFIG,
                  abi.Config(congestion_control_algo=7).pack()) == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.CONFIG,
                  abi.Config(payload_cipher_type=99).pack()) == errno.EINVAL


def test_alpn_normalised_and_short_buffer(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert s.getsockopt(SOL_QUIC, O.ALPN, 128) == b""
    s.setsockopt(SOL_QUIC, O.ALPN, b"smbd, h3, ksmbd")
    assert s.getsockopt(SOL_QUIC, O.ALPN, 128) == b"smbd,h3,ksmbd"
    assert _errno(s.getsockopt, SOL_QUIC, O.ALPN, 5) == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.ALPN, b"") == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.ALPN, b"a" * 129) == errno.EINVAL


def test_alpn_after_listen_einval(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    s.bind(("127.0.0.1", 0))
    s.setsockopt(SOL_QUIC, O.ALPN, b"h3")
    s.listen(1)
    assert _errno(s.setsockopt, SOL_QUIC, O.ALPN, b"h3") == errno.EINVAL
    assert s.getsockopt(SOL_QUIC, O.ALPN, 128) == b"h3"


def test_token_rules_client(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert _errno(s.setsockopt, SOL_QUIC, O.TOKEN, b"") == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.TOKEN, b"t" * 121) == errno.EINVAL
    s.setsockopt(SOL_QUIC, O.TOKEN, b"t" * 120)
    assert _errno(s.getsockopt, SOL_QUIC, O.TOKEN, 10) == errno.EINVAL


def test_session_ticket_set_limits(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert _errno(s.setsockopt, SOL_QUIC, O.SESSION_TICKET, b"x" * 63) == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.SESSION_TICKET, b"x" * 4097) == errno.EINVAL
    s.setsockopt(SOL_QUIC, O.SESSION_TICKET, b"x" * 64)


def test_close_info_defaults_set_and_partial(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    c = abi.ConnectionClose.unpack(s.getsockopt(SOL_QUIC, O.CONNECTION_CLOSE,
                                                abi.ConnectionClose.SIZE))
    assert (c.errcode, c.frame, c.phrase) == (0, 0, b"")
    s.setsockopt(SOL_QUIC, O.CONNECTION_CLOSE,
                 abi.ConnectionClose(errcode=10, frame=1, phrase=b"this is app err").pack())
    raw = s.getsockopt(SOL_QUIC, O.CONNECTION_CLOSE, abi.ConnectionClose.SIZE)
    c = abi.ConnectionClose.unpack(raw)
    assert (c.errcode, c.frame, c.phrase) == (10, 0, b"this is app err")
    # a short buffer gets a partial copy, not EINVAL
    assert s.getsockopt(SOL_QUIC, O.CONNECTION_CLOSE, 4) == raw[:4]


def test_errnos_before_connect(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert _errno(s.sendmsg, [b"x"], [], 0) == errno.EPIPE
    assert _errno(s.sendmsg, [b"x"], [], 0x1) == errno.EINVAL  # unknown flag (MSG_OOB)
    assert _errno(s.recvmsg, 10) == errno.ENOTCONN
    assert _errno(s.accept) == errno.EINVAL
    assert _errno(s.listen, 0) == errno.EINVAL
    assert _errno(s.getsockopt, SOL_QUIC, O.STREAM_OPEN,
                  abi.StreamInfo(-1, 0).pack()) == errno.EPIPE
    assert _errno(s.getsockopt, SOL_QUIC, O.TRANSPORT_PARAM_EXT, 512) == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.STREAM_RESET,
                  abi.ErrInfo(0, 1).pack()) == errno.EINVAL
    assert _errno(s.setsockopt, SOL_QUIC, O.CONNECTION_ID,
                  abi.ConnectionIdInfo(0, 1, 0).pack()) == errno.EINVAL
    assert _errno(s.getpeername) == errno.ENOTCONN


def test_bind_twice_and_connect_twice(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    s.bind(("127.0.0.1", 0))
    assert s.getsockname()[0] == "127.0.0.1" and s.getsockname()[1] > 0
    assert _errno(s.bind, ("127.0.0.1", 0)) == errno.EINVAL
    c = sock_factory()
    c.connect(("127.0.0.1", s.getsockname()[1]))
    assert c.getpeername() == ("127.0.0.1", s.getsockname()[1])
    assert _errno(c.connect, ("127.0.0.1", s.getsockname()[1])) == errno.EINVAL
    assert _errno(c.listen, 1) == errno.EINVAL


def test_ipv6_socket_takes_ipv4_peer(sock_factory) -> None:  # type: ignore[no-untyped-def]
    c = sock_factory(socket.AF_INET6)
    c.connect(("127.0.0.1", 4433))
    assert c.getpeername() == ("127.0.0.1", 4433)


def test_listen_backlog_zero_stops_listening(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    s.bind(("127.0.0.1", 0))
    s.listen(2)
    s.listen(5)  # update the backlog
    s.listen(0)
    assert _errno(s.accept) == errno.EINVAL


def test_sol_socket_options(sock_factory) -> None:  # type: ignore[no-untyped-def]
    s = sock_factory()
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_DGRAM
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == 261
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
