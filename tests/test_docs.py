"""Documentation checks: docstrings of every public name, and the Sphinx build.

The build test runs ``sphinx-build -W`` (warnings are errors) when Sphinx is
installed (the ``docs`` extra) and is skipped otherwise; it also checks that
every name in ``pyquic.__all__`` made it into the generated index.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pyquic
from pyquic import aio

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SPHINX_TIMEOUT = 300


def own_doc(obj: Any) -> str | None:
    """The docstring the object itself defines (a class's, not one inherited)."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
        return doc if isinstance(doc, str) else None
    return getattr(obj, "__doc__", None)


def is_documentable(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj) or (
        callable(obj) and not isinstance(obj, enum.Enum))


def test_public_names_have_docstrings() -> None:
    missing = []
    for name in pyquic.__all__:
        obj = getattr(pyquic, name)
        if is_documentable(obj):
            doc = own_doc(obj)
            if not doc or not doc.strip():
                missing.append(name)
        elif isinstance(obj, enum.Enum) and not (own_doc(type(obj)) or "").strip():
            # An enum member is documented by its class.
            missing.append(f"{name} ({type(obj).__name__} has no docstring)")
    assert not missing, f"public names without a docstring: {missing}"


def test_all_names_exist() -> None:
    absent = [n for n in pyquic.__all__ if not hasattr(pyquic, n)]
    assert not absent
    assert len(set(pyquic.__all__)) == len(pyquic.__all__), "duplicates in __all__"


def test_core_api_is_public() -> None:
    for name in ("socket", "kernel_available", "client_handshake", "server_handshake",
                 "select_backend", "EventType", "decode_event", "TransportParam"):
        assert name in pyquic.__all__, name


def _public_members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in ("__aiter__",):
            continue
        out.append((name, member))
    return out


def test_aio_names_and_members_have_docstrings() -> None:
    missing = []
    for name in aio.__all__:
        obj = getattr(aio, name)
        if is_documentable(obj) and not (own_doc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj):
            for mname, member in _public_members(obj):
                if mname == "__aiter__":
                    continue
                target = member.fget if isinstance(member, property) else member
                if callable(target) and not (getattr(target, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{mname}")
    assert not missing, f"pyquic.aio names without a docstring: {missing}"


def test_aio_public_api_shape() -> None:
    """The names other code and the docs rely on."""
    for fn in (aio.open_connection, aio.start_server):
        assert inspect.iscoroutinefunction(fn)
    for meth in ("open_stream", "accept_stream", "recv_datagram", "next_event",
                 "wait_closed", "session_data"):
        assert inspect.iscoroutinefunction(getattr(aio.Connection, meth)), meth
    for meth in ("read", "readexactly", "readline", "readuntil"):
        assert inspect.iscoroutinefunction(getattr(aio.StreamReader, meth)), meth
    for meth in ("drain", "flush", "wait_closed"):
        assert inspect.iscoroutinefunction(getattr(aio.StreamWriter, meth)), meth
    assert not inspect.iscoroutinefunction(aio.StreamWriter.write)
    assert not inspect.iscoroutinefunction(aio.Connection.send_datagram)
    params = inspect.signature(aio.open_connection).parameters
    for p in ("alpns", "hostname", "cafile", "session", "early_data", "backend"):
        assert params[p].kind is inspect.Parameter.KEYWORD_ONLY, p
    params = inspect.signature(aio.start_server).parameters
    for p in ("alpns", "certfile", "keyfile", "psk_file", "preferred_address"):
        assert params[p].kind is inspect.Parameter.KEYWORD_ONLY, p


def test_guide_pages_exist_and_examples_are_real() -> None:
    index = (DOCS / "index.rst").read_text()
    toctree = re.findall(r"^   ([a-z][\w-]*)$", index, re.MULTILINE)
    assert {"install", "backends", "handshake", "resumption", "events", "asyncio", "smb-nfs",
            "api"} <= set(toctree)
    for page in toctree:
        assert (DOCS / f"{page}.rst").is_file(), page
    listed = re.findall(r"``(\w+\.py)``", (DOCS / "examples.rst").read_text())
    assert listed
    for script in listed:
        assert (ROOT / "examples" / script).is_file(), script


@pytest.mark.skipif(importlib.util.find_spec("sphinx") is None,
                    reason="Sphinx is not installed (pip install -e '.[docs]')")
def test_sphinx_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        check=False, capture_output=True, text=True, timeout=SPHINX_TIMEOUT, cwd=str(ROOT))
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    assert (out / "index.html").is_file()
    assert (out / "api.html").is_file()

    from sphinx.util.inventory import InventoryFile

    with open(out / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    data = getattr(inv, "data", inv)
    names = {full.rsplit(".", 1)[-1] for entries in data.values() for full in entries}
    undocumented = [n for n in pyquic.__all__ if n not in names]
    assert not undocumented, f"public names missing from the API reference: {undocumented}"
    for name in aio.__all__:
        assert name in names, f"pyquic.aio.{name} missing from the API reference"
