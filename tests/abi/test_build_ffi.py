"""build_ffi.py: cdef generation, header search, and API-mode layouts checked by a compiler."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import build_ffi
from pyquic.abi._cdef import CDEF

from .conftest import FIXTURE_HEADER
from .test_structs import ABI_TABLE


def test_fixture_generates_the_shipped_cdef() -> None:
    assert build_ffi.generate_cdef(FIXTURE_HEADER.read_text()) == CDEF


def test_generated_cdef_details() -> None:
    out = build_ffi.generate_cdef(FIXTURE_HEADER.read_text())
    assert "#include" not in out and "#if" not in out and "#endif" not in out
    assert "/*" not in out and "//" not in out and "__u" not in out and "__s64" not in out
    assert "MSG_SYN" not in out and "MSG_QUIC_STREAM_NEW = 1024," in out
    assert "MSG_QUIC_STREAM_DONTWAIT = 65536," in out and "MSG_QUIC_NOTIFICATION = 32768," in out
    assert "#define SOL_QUIC 288" in out.splitlines()  # (256 + 32) evaluated
    assert "#define QUIC_STREAM_TYPE_MASK 3" in out.splitlines()  # continuation + names
    assert "#define QUIC_VERSION_V2 1798521807" in out.splitlines()  # U suffix dropped
    assert "    uint8_t secret[48];" in out.splitlines()
    assert "    uint8_t phrase[64];" in out.splitlines()
    assert "    IPPROTO_QUIC = 261," in out.splitlines()
    assert "IPPROTO_QUIC IPPROTO_QUIC" not in out
    assert "    QUIC_TRANSPORT_ERROR_CRYPTO = 256," in out.splitlines()
    assert "    QUIC_STREAM_RECV_STATE_RESET_READ = 11," in out.splitlines()


def test_generated_cdef_loads_in_abi_mode() -> None:
    ffi = build_ffi.abi_ffi(build_ffi.generate_cdef(FIXTURE_HEADER.read_text()))
    for ctype, (size, offsets) in ABI_TABLE.items():
        assert ffi.sizeof(ctype) == size
        for name, off in offsets.items():
            assert ffi.offsetof(ctype, name) == off


def test_small_header_translation() -> None:
    text = """
    #define A 4 /* four */
    #define B (A << 2)
    #define F(x) ((x) + 1)
    #define FLAG
    enum e { X = B, Y, Z = MSG_MORE | MSG_EOR };
    struct s {
        __u16 a;
        __s32 b[A];
    };
    typedef struct s s_t;
    """
    out = build_ffi.generate_cdef(text)
    assert out == (
        "#define A 4\n#define B 16\n\n"
        "enum e {\n    X = 16,\n    Y = 17,\n    Z = 32896,\n};\n\n"
        "struct s {\n    uint16_t a;\n    int32_t b[4];\n};\n\n"
        "typedef struct s s_t;\n"
    )
    build_ffi.abi_ffi(out)


@pytest.mark.parametrize("text,message", [
    ("struct s { __u8 a; ", "unbalanced"),
    ("struct s { __u8 a; }; }", "unbalanced"),
    ("enum e { A = NOPE };", "unknown name 'NOPE'"),
    ("enum e { A = 1 / 2 };", "unsupported expression"),
    ("struct s { __u8 a[N]; };", "unknown name 'N'"),
    ("enum e { 1A };", "bad enumerator"),
    ("struct s { __u8 a; }", "without ';'"),
    ("struct s { struct t { int x; } y; };", "nested"),
])
def test_bad_input(text: str, message: str) -> None:
    with pytest.raises(build_ffi.HeaderError, match=message):
        build_ffi.generate_cdef(text)
    assert issubclass(build_ffi.HeaderError, ValueError)


def test_find_header_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_h = tmp_path / "env.h"
    env_h.write_text("")
    arg_h = tmp_path / "arg.h"
    arg_h.write_text("")
    sys_h = tmp_path / "sys.h"
    monkeypatch.setattr(build_ffi, "SYSTEM_HEADER", sys_h)
    monkeypatch.delenv(build_ffi.ENV_HEADER, raising=False)
    assert build_ffi.find_header() is None  # -> shipped declarations
    sys_h.write_text("")
    assert build_ffi.find_header() == sys_h
    monkeypatch.setenv(build_ffi.ENV_HEADER, str(env_h))
    assert build_ffi.find_header() == env_h
    assert build_ffi.find_header(arg_h) == arg_h
    assert build_ffi.find_header(str(arg_h)) == arg_h
    with pytest.raises(FileNotFoundError):
        build_ffi.find_header(tmp_path / "missing.h")
    monkeypatch.setenv(build_ffi.ENV_HEADER, str(tmp_path / "missing.h"))
    with pytest.raises(FileNotFoundError):
        build_ffi.find_header()


def test_load_cdef_falls_back_to_shipped() -> None:
    assert build_ffi.load_cdef(None) == CDEF == build_ffi.shipped_cdef()
    assert build_ffi.load_cdef(FIXTURE_HEADER) == CDEF


def test_cli_print_cdef() -> None:
    root = Path(build_ffi.__file__).parent
    res = subprocess.run(
        [sys.executable, str(root / "build_ffi.py"), "--header", str(FIXTURE_HEADER),
         "--print-cdef"], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout == CDEF
    bad = subprocess.run(
        [sys.executable, str(root / "build_ffi.py"), "--header", "/nonexistent/quic.h"],
        capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0 and "not found" in bad.stderr


def _compiled_fixture(tmp_path: Path) -> Any:
    if build_ffi.find_compiler() is None or shutil.which("gcc") is None and shutil.which(
            "cc") is None:
        pytest.skip("no C compiler")
    name = "_pyquic_fixture_cffi"
    build_ffi.build_api_module(FIXTURE_HEADER, module_name=name, tmpdir=tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_api_mode_layout_equals_compiler(tmp_path: Path, shipped: tuple[Any, Any]) -> None:
    """The C compiler's view of the fixture equals cffi's ABI-mode view of the shipped cdef."""
    mod = _compiled_fixture(tmp_path)
    api, api_lib = mod.ffi, mod.lib
    abi_ffi, abi_lib = shipped
    for ctype in ABI_TABLE:
        assert api.sizeof(ctype) == abi_ffi.sizeof(ctype), ctype
        assert api.alignof(ctype) == abi_ffi.alignof(ctype), ctype
        api_fields = [(n, f.offset, api.sizeof(f.type)) for n, f in api.typeof(ctype).fields]
        abi_fields = [(n, f.offset, abi_ffi.sizeof(f.type))
                      for n, f in abi_ffi.typeof(ctype).fields]
        assert api_fields == abi_fields, ctype
    # values come from the compiler in API mode (MSG_* resolved by <sys/socket.h>)
    names = [line.split()[1] for line in CDEF.splitlines() if line.startswith("#define")]
    names += [line.split()[0] for line in CDEF.splitlines()
              if line.startswith("    ") and " = " in line]
    assert len(names) > 80
    for name in names:
        assert getattr(api_lib, name) == getattr(abi_lib, name), name


def test_api_mode_detects_a_wrong_constant(tmp_path: Path) -> None:
    """A cdef that disagrees with the header is caught by the compiled module."""
    if build_ffi.find_compiler() is None:
        pytest.skip("no C compiler")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("#define SOL_QUIC 289\n")
    ffi.set_source("_pyquic_bad_cffi", build_ffi.include_line(FIXTURE_HEADER))
    ffi.compile(tmpdir=str(tmp_path))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("_pyquic_bad_cffi")
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(Exception, match="288"):
        getattr(mod.lib, "SOL_QUIC")  # noqa: B009


def test_pyquic_abi_uses_a_compiled_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           shipped: tuple[Any, Any]) -> None:
    """pyquic.abi._ffi picks the API-mode module when importable; its layouts agree."""
    if build_ffi.find_compiler() is None:
        pytest.skip("no C compiler")
    from pyquic.abi import _ffi
    from pyquic.abi.structs import STRUCT_CLASSES, layout

    build_ffi.build_api_module(FIXTURE_HEADER, module_name="_quic_cffi", tmpdir=tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("_quic_cffi", None)
        mod = importlib.import_module("_quic_cffi")
    finally:
        sys.path.remove(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyquic.abi._quic_cffi", mod)
    monkeypatch.delenv("PYQUIC_FFI_MODE", raising=False)
    ffi, lib, mode = _ffi._load()
    assert mode == "api" and ffi is mod.ffi and lib.SOL_QUIC == 288
    for cls in STRUCT_CLASSES:
        assert layout(cls.CTYPE, ffi) == layout(cls.CTYPE, shipped[0]), cls.__name__
    monkeypatch.setenv("PYQUIC_FFI_MODE", "abi")
    assert _ffi._load()[2] == "abi"


def test_cli_reports_missing_header() -> None:
    assert build_ffi.main(["--header", "/nonexistent/quic.h"]) == 2


def test_incomplete_compiled_module_is_ignored(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled module lacking the structs falls back to ABI mode with a warning."""
    import cffi

    from pyquic.abi import _ffi

    if build_ffi.find_compiler() is None:
        pytest.skip("no C compiler")
    ffi = cffi.FFI()
    ffi.cdef("#define SOL_QUIC 288\n")
    ffi.set_source("_quic_cffi_partial", build_ffi.include_line(FIXTURE_HEADER))
    ffi.compile(tmpdir=str(tmp_path))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module("_quic_cffi_partial")
    finally:
        sys.path.remove(str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyquic.abi._quic_cffi", mod)
    monkeypatch.delenv("PYQUIC_FFI_MODE", raising=False)
    with pytest.warns(RuntimeWarning, match="incompatible"):
        assert _ffi._load()[2] == "abi"
