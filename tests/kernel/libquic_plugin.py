"""pytest plugin: run the conformance suite's kernel-backend handshakes through libquic.

The conformance suite handshakes with ``pyquic.tls.driver``'s functions,
imported at call time. With ``-p tests.kernel.libquic_plugin`` those
functions are replaced, for tests whose ``backend`` parameter is "kernel", by
``pyquic.kernel.handshake``'s libquic versions (same arguments). User-backend
tests keep pyquic's driver: libquic needs a real kernel fd.

    python -m pytest -p tests.kernel.libquic_plugin tests/conformance
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _libquic_handshakes(request: pytest.FixtureRequest,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("backend") != "kernel":
        yield
        return
    from pyquic.kernel import handshake as hs
    from pyquic.kernel.libquic import LibquicNotFound, load_libquic
    from pyquic.tls import driver

    try:
        load_libquic()
    except LibquicNotFound as exc:
        pytest.skip(f"libquic handshakes requested but libquic is missing: {exc}")
    monkeypatch.setattr(driver, "client_handshake", hs.libquic_client_handshake)
    monkeypatch.setattr(driver, "server_handshake", hs.libquic_server_handshake)
    monkeypatch.setattr(driver, "restore_session", hs.libquic_restore_session)
    yield
