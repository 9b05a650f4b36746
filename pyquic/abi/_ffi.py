"""The cffi view of ``linux/quic.h`` that pyquic.abi takes its struct layouts from.

If ``build_ffi.py`` compiled the out-of-line API-mode module
``pyquic.abi._quic_cffi`` (the compiler checked every layout against a real
header) it is used; otherwise the shipped declarations (``_cdef.CDEF``) are
loaded in cffi's in-line ABI mode, which needs no compiler, header, module or
libquic. Set ``PYQUIC_FFI_MODE=abi`` to force the latter.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import cffi

from pyquic.abi._cdef import CDEF

# The structs pyquic.abi binds to; a compiled module missing any is ignored.
REQUIRED_TYPES: tuple[str, ...] = (
    "struct quic_handshake_info",
    "struct quic_stream_info",
    "struct quic_transport_param",
    "struct quic_config",
    "struct quic_crypto_secret",
    "struct quic_errinfo",
    "struct quic_connection_id_info",
    "struct quic_event_option",
    "struct quic_stream_update",
    "struct quic_stream_max_data",
    "struct quic_connection_close",
    "union quic_event",
)


def abi_mode_ffi() -> tuple[cffi.FFI, Any]:
    """Return ``(ffi, lib)`` in in-line ABI mode from the shipped declarations."""
    abi = cffi.FFI()
    abi.cdef(CDEF)
    return abi, abi.dlopen(None)


def _load() -> tuple[Any, Any, str]:
    if os.environ.get("PYQUIC_FFI_MODE", "").lower() != "abi":
        try:
            from pyquic.abi._quic_cffi import ffi as api_ffi  # type: ignore[import-not-found]
            from pyquic.abi._quic_cffi import lib as api_lib
        except ImportError:
            pass
        else:
            try:
                for name in REQUIRED_TYPES:
                    api_ffi.sizeof(name)  # opaque (undeclared) types raise
            except (api_ffi.error, cffi.CDefError, KeyError, TypeError, ValueError) as exc:
                warnings.warn(f"pyquic.abi: ignoring incompatible _quic_cffi ({exc})",
                              RuntimeWarning, stacklevel=2)
            else:
                return api_ffi, api_lib, "api"
    abi, lib_ = abi_mode_ffi()
    return abi, lib_, "abi"


ffi: Any
lib: Any
FFI_MODE: str
ffi, lib, FFI_MODE = _load()
