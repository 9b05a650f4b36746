"""Shared settings of the robustness suite.

Registers the ``slow`` marker: long transfers through the lossy proxy; run
them with ``-m slow`` or skip them with ``-m "not slow"``.  Long fuzzing runs
live in ``fuzz/run.py``; the property tests here stay short.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long robustness run (over 60 s)")
