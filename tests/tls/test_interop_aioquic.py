"""In-memory TLS interop with aioquic's independent TLS 1.3 (aioquic.tls.Context)."""

from __future__ import annotations

import pytest

aioquic_tls = pytest.importorskip("aioquic.tls")
from aioquic.buffer import Buffer

from pyquic.tls import x509 as tx
from pyquic.tls.context import TlsConfig
from pyquic.tls.messages import CipherSuite, Group

from .harness import Endpoint, pump
from .test_context import CA_CERT, LEAF, STORE, TICKET_KEY

E = aioquic_tls.Epoch
LEVEL_OF = {E.INITIAL: 1, E.ZERO_RTT: 3, E.HANDSHAKE: 2, E.ONE_RTT: 0}
EPOCH_OF = {v: k for k, v in LEVEL_OF.items()}


class AioEndpoint:
    """Adapts aioquic's Context to the harness' receive/output interface."""

    def __init__(self, ctx, tp: bytes) -> None:
        self.ctx = ctx
        ctx.handshake_extensions = [(0x39, tp)]
        self.secrets: dict[tuple[int, bool], bytes] = {}
        ctx.update_traffic_key_cb = self._key
        self.bufs = {e: Buffer(capacity=65536) for e in E}
        self.tickets: list = []

    def _key(self, direction, epoch, suite, secret) -> None:
        self.secrets[(LEVEL_OF[epoch], direction == aioquic_tls.Direction.ENCRYPT)] = secret

    def start(self) -> None:
        self.ctx.handle_message(b"", self.bufs)

    def receive(self, level: int, data: bytes) -> None:
        self.ctx.handle_message(data, self.bufs)

    def output(self):
        out = []
        for e in (E.INITIAL, E.HANDSHAKE, E.ONE_RTT):
            b = self.bufs[e]
            if b.tell():
                out.append((LEVEL_OF[e], b.data))
                b.seek(0)
        return out

    @property
    def peer_tp(self) -> bytes | None:
        for t, v in self.ctx.received_extensions or []:
            if t == 0x39:
                return v
        return None


def aio_client(**kw):
    ctx = aioquic_tls.Context(is_client=True, alpn_protocols=["h3"], server_name="localhost",
                              cadata=tx.cert_to_pem(CA_CERT), **kw)
    return AioEndpoint(ctx, b"aio-ctp")


def aio_server(**kw):
    ctx = aioquic_tls.Context(is_client=False, alpn_protocols=["h3"], **kw)
    ctx.certificate = LEAF[0]
    ctx.certificate_private_key = LEAF[1]
    return AioEndpoint(ctx, b"aio-stp")


def py_client(**kw) -> Endpoint:
    base = {"is_client": True, "alpn_protocols": ["h3"], "server_name": "localhost", "trust_store": STORE}
    base.update(kw)
    return Endpoint(TlsConfig(**base), b"py-ctp")


def py_server(**kw) -> Endpoint:
    base = {"is_client": False, "alpn_protocols": ["h3"], "certificate_chain": [LEAF[0]],
                "private_key": LEAF[1], "ticket_key": TICKET_KEY}
    base.update(kw)
    return Endpoint(TlsConfig(**base), b"py-stp")


def check_py_vs_aio(py: Endpoint, aio: AioEndpoint) -> None:
    for level in (2, 0):
        for send in (True, False):
            assert py.secret(level, send) == aio.secrets[(level, not send)]


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_pyquic_client_aioquic_server(suite):
    c = py_client(cipher_suites=[suite])
    s = aio_server()
    c.start()
    pump(c, s)
    assert c.complete and c.ctx.alpn == "h3" and s.ctx.alpn_negotiated == "h3"
    assert c.ctx.peer_transport_parameters == b"aio-stp" and s.peer_tp == b"py-ctp"
    check_py_vs_aio(c, s)


@pytest.mark.parametrize("suite", list(CipherSuite))
def test_aioquic_client_pyquic_server(suite):
    c = aio_client(cipher_suites=[aioquic_tls.CipherSuite(suite)])
    s = py_server()
    c.start()
    pump(c, s)
    assert s.complete and s.ctx.alpn == "h3" and c.ctx.alpn_negotiated == "h3"
    assert s.ctx.peer_transport_parameters == b"aio-ctp" and c.peer_tp == b"py-stp"
    check_py_vs_aio(s, c)


@pytest.mark.parametrize("group", [Group.SECP256R1, Group.SECP384R1, Group.X25519])
def test_group_choice_aioquic_client_pyquic_server(group):
    # aioquic sends a share for every group (and has no HelloRetryRequest support),
    # so the server picks among the shares without a retry.
    c = aio_client()
    s = py_server(groups=[group])
    c.start()
    pump(c, s)
    assert s.complete and not s.ctx.hrr_sent and s.ctx.group == group
    check_py_vs_aio(s, c)


def test_resumption_0rtt_aioquic_client_pyquic_server():
    c = aio_client()
    got = []
    c.ctx.new_session_ticket_cb = got.append
    s = py_server()
    c.start()
    pump(c, s)
    assert s.app_messages
    c.receive(0, s.app_messages[0])
    assert got and got[0].max_early_data_size == 0xFFFFFFFF

    c2 = aio_client()
    c2.ctx.session_ticket = got[0]
    s2 = py_server()
    c2.start()
    pump(c2, s2)
    assert s2.ctx.session_resumed and c2.ctx.session_resumed
    assert s2.ctx.early_data_accepted and c2.ctx.early_data_accepted
    assert s2.secret(3, False) == c2.secrets[(3, True)]
    check_py_vs_aio(s2, c2)


def test_resumption_0rtt_pyquic_client_aioquic_server():
    store: dict[bytes, object] = {}
    s = aio_server(max_early_data=0xFFFFFFFF)
    s.ctx.new_session_ticket_cb = lambda t: store.__setitem__(t.ticket, t)
    s.ctx.get_session_ticket_cb = store.pop
    c = py_client()
    c.start()
    pump(c, s)
    # the aioquic server writes its ticket at 1-RTT once the client Finished is in;
    # the pump handed it to the client at the APP level
    sess = c.ctx.session_ticket
    assert sess is not None and sess.max_early_data == 0xFFFFFFFF

    s2 = aio_server(max_early_data=0xFFFFFFFF)
    s2.ctx.get_session_ticket_cb = store.pop
    c2 = py_client(session=sess)
    c2.start()
    pump(c2, s2)
    assert c2.ctx.session_resumed and s2.ctx.session_resumed
    assert c2.ctx.early_data_accepted and s2.ctx.early_data_accepted
    assert c2.secret(3, True) == s2.secrets[(3, False)]
    check_py_vs_aio(c2, s2)
