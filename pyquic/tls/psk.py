"""External pre-shared keys in libquic's file format.

A PSK file holds ``identity:hexkey`` lines (as read by libquic's
``quic_file_read_psk`` and GnuTLS's PSK password files). A client uses the
first entry; a server looks up the identity the client offers among all.
"""

from __future__ import annotations

import os


def parse_psk_lines(text: str) -> list[tuple[bytes, bytes]]:
    """Parse ``identity:hexkey`` lines into ``[(identity, key)]``; blank lines are skipped."""
    out: list[tuple[bytes, bytes]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, hexkey = line.partition(":")
        if not sep or not identity:
            raise ValueError(f"PSK line {lineno}: expected identity:hexkey")
        try:
            key = bytes.fromhex(hexkey.strip())
        except ValueError as exc:
            raise ValueError(f"PSK line {lineno}: key is not hex") from exc
        if not key:
            raise ValueError(f"PSK line {lineno}: empty key")
        out.append((identity.encode(), key))
    if not out:
        raise ValueError("PSK file holds no identity:hexkey line")
    return out


def load_psk_file(path: str | os.PathLike[str]) -> list[tuple[bytes, bytes]]:
    """All ``(identity, key)`` entries of a libquic PSK file, in file order."""
    with open(path, encoding="utf-8") as f:
        return parse_psk_lines(f.read())


def client_psk(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """The entry a client uses: the first one, as libquic does."""
    return load_psk_file(path)[0]
