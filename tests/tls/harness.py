"""Helpers that shuttle handshake bytes between two sans-I/O TLS endpoints."""

from __future__ import annotations

import time
from typing import Any

from pyquic.tls.context import TlsConfig, TlsContext, TrafficSecret

NOW = time.time()


class Endpoint:
    """Wraps a pyquic TlsContext, recording every secret it outputs."""

    def __init__(self, config: TlsConfig, tp: bytes, now: float = NOW) -> None:
        self.ctx = TlsContext(config, tp, now=now)
        self.secrets: list[TrafficSecret] = []
        self.app_messages: list[bytes] = []  # APP-level output (tickets)

    def start(self) -> None:
        self.ctx.start()

    def receive(self, level: int, data: bytes) -> None:
        self.ctx.receive(level, data)

    def output(self) -> list[tuple[int, bytes]]:
        self.secrets += self.ctx.secrets_to_install()
        out = []
        for level, data in self.ctx.data_to_send():
            if level == 0:
                self.app_messages.append(data)
            else:
                out.append((level, data))
        return out

    @property
    def complete(self) -> bool:
        return self.ctx.handshake_complete

    def secret(self, level: int, send: bool) -> bytes:
        return next(s.secret for s in self.secrets if s.level == level and s.send == send)


def pump(client: Any, server: Any, max_rounds: int = 10) -> None:
    """Exchange flights until neither side has anything to send (bounded)."""
    for _ in range(max_rounds):
        moved = False
        for src, dst in ((client, server), (server, client)):
            for level, data in src.output():
                dst.receive(level, data)
                moved = True
        if not moved:
            return
    raise AssertionError("handshake did not settle")


def handshake(cconf: TlsConfig, sconf: TlsConfig, now: float = NOW,
              ctp: bytes = b"ctp", stp: bytes = b"stp") -> tuple[Endpoint, Endpoint]:
    c = Endpoint(cconf, ctp, now)
    s = Endpoint(sconf, stp, now)
    c.start()
    pump(c, s)
    return c, s


def deliver_ticket(c: Endpoint, s: Endpoint, now: float = NOW):
    """Hand the server's NewSessionTicket to the client as the kernel would."""
    assert s.app_messages, "server sent no ticket"
    return c.ctx.process_session_ticket(s.app_messages[-1], now)
