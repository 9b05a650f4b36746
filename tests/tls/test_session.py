"""Server ticket sealing."""

from __future__ import annotations

import pytest

from pyquic.tls.session import TicketContents, TicketSealer


def test_seal_open_roundtrip_and_other_key():
    t = TicketContents(b"p" * 32, 0x1301, 42, 1000.5, 0xFFFFFFFF, "h3", "host")
    a = TicketSealer(b"k" * 64)
    blob = a.seal(t)
    assert a.open(blob) == t
    assert TicketSealer(b"j" * 64).open(blob) is None
    assert a.open(blob[:-1] + bytes([blob[-1] ^ 1])) is None
    assert a.open(b"short") is None
    with pytest.raises(ValueError):
        TicketSealer(b"tiny")
