"""Shared fixtures for the ABI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyquic.abi._ffi import abi_mode_ffi

FIXTURE_HEADER = Path(__file__).parent / "fixtures" / "quic.h"


@pytest.fixture(scope="session")
def shipped() -> tuple[Any, Any]:
    """(ffi, lib) from the shipped declarations in in-line ABI mode."""
    return abi_mode_ffi()
