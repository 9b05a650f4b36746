"""pytest plugin for slow emulated guests: scale the conformance suite's timeouts.

Under QEMU software emulation everything runs several times slower than on
the host, and the conformance suite's 10 s bound on a server thread is then
too tight. ``-p tests.kernel.slow_guest_plugin`` multiplies
``tests.conformance.conftest.TIMEOUT`` by ``$PYQUIC_TIMEOUT_SCALE`` (default
4) before the suite's modules import it.
"""

from __future__ import annotations

import os

import tests.conformance.conftest as _conf

_conf.TIMEOUT = _conf.TIMEOUT * float(os.environ.get("PYQUIC_TIMEOUT_SCALE", "4"))
