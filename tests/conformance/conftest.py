"""Fixtures of the conformance suite: one socket API, every backend.

Each test gets ``backend`` ("user" always; "kernel" where the module is
loaded, skipped with the reason otherwise) and builds sockets with
``pyquic.socket_api.socket(..., backend=backend)``. ``make_pair`` returns a
client and an accepted server socket on loopback that completed the TLS
handshake through ``pyquic.tls.driver``, with a self-signed certificate made
in a temporary directory. Every blocking step is bounded by ``TIMEOUT``:
10 s, or ``$PYQUIC_TEST_TIMEOUT`` seconds (e.g. 40 in a slow emulated guest).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyquic import abi
from pyquic.abi.constants import IPPROTO_QUIC, SOL_QUIC

TIMEOUT = float(os.environ.get("PYQUIC_TEST_TIMEOUT") or 10.0)
ALPN = "sample"


def kernel_ok() -> bool:
    from pyquic.kernel.available import kernel_available

    return kernel_available()


@pytest.fixture(params=["user", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    if request.param == "kernel" and not kernel_ok():
        pytest.skip("kernel backend: the IPPROTO_QUIC module is not loaded here "
                    "(kernel_available() is false)")
    return str(request.param)


def new_socket(backend: str, family: int = socket.AF_INET,
               type: int = socket.SOCK_DGRAM) -> Any:
    """A QUIC socket of ``backend``."""
    from pyquic.socket_api import socket as qsocket

    return qsocket(family, type, IPPROTO_QUIC, backend=backend)


@pytest.fixture
def sock_factory(backend: str) -> Iterator[Callable[..., Any]]:
    """Create sockets of the backend; all are closed at teardown."""
    made: list[Any] = []

    def make(family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> Any:
        s = new_socket(backend, family, type)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@dataclass
class Cert:
    certfile: str
    keyfile: str
    cafile: str


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A test CA and a server certificate it signed for localhost, 127.0.0.1, ::1."""
    return make_cert(str(tmp_path_factory.mktemp("cert")))


def make_cert(d: str) -> Cert:
    """Write a test CA, a server certificate and its key into directory ``d``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyquic test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certfile = os.path.join(d, "cert.pem")
    keyfile = os.path.join(d, "key.pem")
    cafile = os.path.join(d, "ca.pem")
    with open(certfile, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(cafile, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return Cert(certfile, keyfile, cafile)


@dataclass
class Pair:
    """A handshaken client/server pair and the listener that accepted it."""

    client: Any
    server: Any
    listener: Any
    client_result: Any = None
    server_result: Any = None
    extra: list[Any] = field(default_factory=list)


def set_alpn(sock: Any, alpn: str) -> None:
    sock.setsockopt(SOL_QUIC, abi.SockOpt.ALPN, alpn.encode())


def set_tp(sock: Any, **fields: int) -> None:
    """setsockopt(TRANSPORT_PARAM) with the given fields (others 0: unchanged)."""
    sock.setsockopt(SOL_QUIC, abi.SockOpt.TRANSPORT_PARAM, abi.TransportParam(**fields).pack())


def run_server(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; its result or exception lands in the returned dict."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def join(t: threading.Thread, out: dict[str, Any]) -> Any:
    t.join(TIMEOUT)
    assert not t.is_alive(), "server thread did not finish in time"
    if "error" in out:
        raise out["error"]
    return out.get("result")


@pytest.fixture
def make_pair(backend: str, cert: Cert) -> Iterator[Callable[..., Pair]]:
    """Build handshaken pairs; ``make_pair(family=..., host=..., alpn=...,
    client_setup=f(sock), server_setup=f(sock), listener_setup=f(sock),
    session=..., listener=existing)``."""
    from pyquic.tls.driver import client_handshake, server_handshake

    made: list[Any] = []

    def make(*, family: int = socket.AF_INET, host: str = "127.0.0.1", alpn: str = ALPN,
             client_setup: Callable[[Any], None] | None = None,
             server_setup: Callable[[Any], None] | None = None,
             listener_setup: Callable[[Any], None] | None = None,
             listener: Any = None, session: Any = None,
             client_family: int | None = None, datagrams: bool = True) -> Pair:
        if listener is None:
            listener = new_socket(backend, family)
            made.append(listener)
            listener.bind((host, 0))
            set_alpn(listener, alpn)
            if listener_setup:
                listener_setup(listener)
            listener.listen(8)
            listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        client = new_socket(backend, client_family or family)
        made.append(client)
        if datagrams:
            set_tp(client, max_datagram_frame_size=1400)
        if client_setup:
            client_setup(client)
        client.connect((host, port))

        def serve() -> tuple[Any, Any]:
            srv, _ = listener.accept()
            made.append(srv)
            if datagrams:
                set_tp(srv, max_datagram_frame_size=1400)
            if server_setup:
                server_setup(srv)
            res = server_handshake(srv, cert.certfile, cert.keyfile, alpns=alpn,
                                   timeout=TIMEOUT)
            return srv, res

        t, out = run_server(serve)
        cres = client_handshake(client, "localhost", alpn, cafile=cert.cafile,
                                session=session, timeout=TIMEOUT)
        srv, sres = join(t, out)
        return Pair(client, srv, listener, cres, sres)

    yield make
    for s in reversed(made):
        try:
            s.close()
        except OSError:
            pass


# -- raw helpers in the style of libquic's quic_sendmsg/quic_recvmsg -----------------

def qsend(sock: Any, data: bytes, sid: int, flags: int, msg_flags: int = 0) -> int:
    """sendmsg with a STREAM_INFO cmsg (libquic quic_sendmsg)."""
    return int(sock.sendmsg([data], [abi.stream_info_cmsg(sid, flags)], msg_flags))


def qrecv(sock: Any, size: int = 65536, flags: int = 0) -> tuple[bytes, int, int]:
    """recvmsg returning (data, stream id or -1, stream flags | msg_flags)."""
    data, anc, mflags, _ = sock.recvmsg(size, abi.STREAM_INFO_CMSG_SPACE, flags)
    sinfo, _ = abi.parse_ancdata(anc)
    sid = sinfo.stream_id if sinfo else -1
    sflags = sinfo.stream_flags if sinfo else 0
    return data, sid, sflags | mflags


def recv_event(sock: Any, size: int = 4096) -> Any:
    """recvmsg one message that must be an event; returns the decoded event."""
    data, _anc, mflags, _ = sock.recvmsg(size, abi.STREAM_INFO_CMSG_SPACE)
    assert mflags & abi.MsgFlag.NOTIFICATION, (data, mflags)
    return abi.decode_event(data)


def recv_message(sock: Any) -> tuple[bytes, int, int]:
    """Read stream data until FIN (or one datagram/event): (data, sid, flags)."""
    buf = b""
    for _ in range(10000):
        data, sid, flags = qrecv(sock)
        buf += data
        if flags & (abi.StreamFlag.FIN | abi.MsgFlag.DATAGRAM | abi.MsgFlag.NOTIFICATION):
            return buf, sid, flags
    raise AssertionError("no FIN")


def echo_server(sock: Any, stop_after: int | None = None) -> tuple[threading.Thread, dict]:
    """The func_test.c server: echo each finished stream message (or datagram),
    and act on the special messages "client reset", "client stop_sending",
    "client migration", "client key_update", "client new_token" and
    "client close" as that server does. Returns the number of replies."""
    def loop() -> int:
        n = 0
        sock.settimeout(TIMEOUT)
        bufs: dict[int, bytes] = {}
        while stop_after is None or n < stop_after:
            try:
                data, sid, flags = qrecv(sock)
            except OSError:
                return n
            if flags & abi.MsgFlag.NOTIFICATION:
                continue
            if flags & abi.MsgFlag.DATAGRAM:
                sock.sendmsg([data], [], abi.MsgFlag.DATAGRAM)
                n += 1
                continue
            bufs[sid] = bufs.get(sid, b"") + data
            msg = bufs[sid]
            if msg == b"client reset":
                if flags & abi.StreamFlag.FIN:
                    bufs.pop(sid)
                    out_flags = abi.StreamFlag.NEW
                    if sid & abi.QUIC_STREAM_TYPE_UNI_MASK:
                        sid |= abi.QUIC_STREAM_TYPE_SERVER_MASK
                    qsend(sock, msg, sid, out_flags)
                    sock.setsockopt(SOL_QUIC, abi.SockOpt.STREAM_RESET,
                                    abi.ErrInfo(sid, 1).pack())
                    n += 1
                continue
            if msg == b"client stop_sending":
                bufs.pop(sid)
                sock.setsockopt(SOL_QUIC, abi.SockOpt.STREAM_STOP_SENDING,
                                abi.ErrInfo(sid, 1).pack())
                n += 1
                continue
            if not flags & abi.StreamFlag.FIN:
                continue
            msg = bufs.pop(sid)
            if msg == b"client migration":
                host, _port = sock.getsockname()[:2]
                sock.setsockopt(SOL_QUIC, abi.SockOpt.CONNECTION_MIGRATION,
                                sockaddr((host, free_port(host))))
            elif msg == b"client key_update":
                sock.setsockopt(SOL_QUIC, abi.SockOpt.KEY_UPDATE, None, 0)
            elif msg == b"client new_token":
                sock.setsockopt(SOL_QUIC, abi.SockOpt.TOKEN, None, 0)
            elif msg == b"client close":
                sock.setsockopt(SOL_QUIC, abi.SockOpt.CONNECTION_CLOSE,
                                abi.ConnectionClose(10, 1, b"this is app err").pack())
            out_flags = abi.StreamFlag.FIN
            if sid & abi.QUIC_STREAM_TYPE_UNI_MASK:
                sid |= abi.QUIC_STREAM_TYPE_SERVER_MASK
                out_flags |= abi.StreamFlag.NEW
            try:
                qsend(sock, msg, sid, out_flags)
            except OSError:
                return n  # the test closed the socket while we replied
            n += 1
            if msg == b"client close":
                import time as _t

                _t.sleep(0.3)
                sock.shutdown(socket.SHUT_WR)
                return n
        return n

    return run_server(loop)


def sockaddr(addr: tuple) -> bytes:
    """A packed struct sockaddr_in/sockaddr_in6 for CONNECTION_MIGRATION."""
    from pyquic.user.socket import pack_sockaddr

    return pack_sockaddr(addr)


def free_port(host: str) -> int:
    """A UDP port that is free on ``host`` right now."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
