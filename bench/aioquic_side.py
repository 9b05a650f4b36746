"""Benchmark side for aioquic (see asyncio_side.py and _common.py)."""

from __future__ import annotations

from asyncio_side import main

if __name__ == "__main__":
    main("aioquic")
