"""libquic PSK files."""

from __future__ import annotations

import pytest

from pyquic.tls.psk import client_psk, load_psk_file, parse_psk_lines


def test_parse_first_entry_and_all(tmp_path):
    p = tmp_path / "psk"
    p.write_text("alice:00112233\nbob:ffee\n")
    assert client_psk(p) == (b"alice", bytes.fromhex("00112233"))
    assert load_psk_file(p) == [(b"alice", bytes.fromhex("00112233")), (b"bob", b"\xff\xee")]


def test_no_trailing_newline_and_blank_lines():
    assert parse_psk_lines("\nid:0a0b") == [(b"id", b"\x0a\x0b")]


@pytest.mark.parametrize("text", ["", "nocolon", ":00", "id:zz", "id:"])
def test_bad_files(text):
    with pytest.raises(ValueError):
        parse_psk_lines(text)
