#!/usr/bin/env python3
"""Generate cffi declarations from a ``linux/quic.h`` and, optionally, compile them.

The generator turns the kernel's uapi header into cdef text that cffi accepts:
comments, ``#include`` and conditionals go; integer ``#define`` constants are
kept (hoisted to the top); the ``__u8``... types become ``<stdint.h>`` types;
every enum value is written as a plain integer (implicit values counted, and
``MSG_*`` aliases such as ``MSG_QUIC_STREAM_NEW = MSG_SYN`` resolved to their
Linux values); array lengths given by a constant are replaced by the number.

Header search order (``find_header``): an explicit path (argument,
``--header`` or the ``PYQUIC_QUIC_H`` environment variable), then
``/usr/include/linux/quic.h``; if neither exists, the declarations the project
ships (``pyquic/abi/_cdef.py``) are used.

With a C compiler and a real header, ``python build_ffi.py`` builds the
out-of-line API-mode module ``pyquic.abi._quic_cffi`` (``#include`` of that
header), so the compiler checks every declared layout and value;
``pyquic.abi`` then uses it. Otherwise nothing is built and pyquic.abi stays in
in-line ABI mode, which needs nothing but cffi.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SYSTEM_HEADER = Path("/usr/include/linux/quic.h")
ENV_HEADER = "PYQUIC_QUIC_H"
MODULE_NAME = "pyquic.abi._quic_cffi"

# Linux's MSG_* values (include/linux/socket.h) that the QUIC flags alias.
MSG_VALUES: dict[str, int] = {
    "MSG_OOB": 0x1,
    "MSG_PEEK": 0x2,
    "MSG_DONTROUTE": 0x4,
    "MSG_CTRUNC": 0x8,
    "MSG_PROBE": 0x10,
    "MSG_TRUNC": 0x20,
    "MSG_DONTWAIT": 0x40,
    "MSG_EOR": 0x80,
    "MSG_WAITALL": 0x100,
    "MSG_FIN": 0x200,
    "MSG_SYN": 0x400,
    "MSG_CONFIRM": 0x800,
    "MSG_RST": 0x1000,
    "MSG_ERRQUEUE": 0x2000,
    "MSG_NOSIGNAL": 0x4000,
    "MSG_MORE": 0x8000,
    "MSG_WAITFORONE": 0x10000,
}

# Kernel uapi integer types -> <stdint.h>.
TYPE_MAP: dict[str, str] = {
    "__u8": "uint8_t",
    "__u16": "uint16_t",
    "__u32": "uint32_t",
    "__u64": "uint64_t",
    "__s8": "int8_t",
    "__s16": "int16_t",
    "__s32": "int32_t",
    "__s64": "int64_t",
    "__be16": "uint16_t",
    "__be32": "uint32_t",
    "__be64": "uint64_t",
    "__le16": "uint16_t",
    "__le32": "uint32_t",
    "__le64": "uint64_t",
}

_TYPE_RE = re.compile(r"\b(" + "|".join(TYPE_MAP) + r")\b")
_INT_SUFFIX_RE = re.compile(r"\b(0[xX][0-9a-fA-F]+|\d+)(?:[uU][lL]{0,2}|[lL]{1,2}[uU]?)\b")
_DEFINE_RE = re.compile(r"#\s*define\s+([A-Za-z_]\w*)(\()?\s*(.*)$", re.DOTALL)


class HeaderError(ValueError):
    """The header text cannot be turned into declarations."""


def _eval_int(expr: str, names: dict[str, int], what: str) -> int:
    """Evaluate a C integer constant expression over literals and known names."""
    text = _INT_SUFFIX_RE.sub(r"\1", expr.strip())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise HeaderError(f"{what}: cannot evaluate {expr.strip()!r}") from exc

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            raise HeaderError(f"{what}: unknown name {node.id!r}")
        if isinstance(node, ast.UnaryOp):
            val = ev(node.operand)
            if isinstance(node.op, ast.USub):
                return -val
            if isinstance(node.op, ast.UAdd):
                return val
            if isinstance(node.op, ast.Invert):
                return ~val
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            ops: dict[type, Any] = {
                ast.BitOr: lambda a, b: a | b,
                ast.BitAnd: lambda a, b: a & b,
                ast.BitXor: lambda a, b: a ^ b,
                ast.LShift: lambda a, b: a << b,
                ast.RShift: lambda a, b: a >> b,
                ast.Add: lambda a, b: a + b,
                ast.Sub: lambda a, b: a - b,
                ast.Mult: lambda a, b: a * b,
            }
            fn = ops.get(type(node.op))
            if fn is not None:
                return int(fn(left, right))
        raise HeaderError(f"{what}: unsupported expression {expr.strip()!r}")

    return ev(tree)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    return re.sub(r"//[^\n]*", "", text)


def _split_preprocessor(text: str) -> tuple[list[str], str]:
    """Return (directive lines, the rest) with line continuations joined."""
    text = text.replace("\\\n", " ")
    directives: list[str] = []
    body: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            directives.append(line.strip())
        else:
            body.append(line)
    return directives, "\n".join(body)


def _split_top(body: str) -> list[str]:
    """Split declarations on ';' at brace depth 0."""
    decls: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise HeaderError("unbalanced '}'")
        if ch == ";" and depth == 0:
            decl = " ".join("".join(cur).split())
            if decl:
                decls.append(decl)
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise HeaderError("unbalanced '{'")
    if " ".join("".join(cur).split()):
        raise HeaderError(f"declaration without ';': {' '.join(''.join(cur).split())[:60]!r}")
    return decls


def _enum(head: str, inner: str, consts: dict[str, int]) -> str:
    out = [f"{head} {{"]
    nxt = 0
    for item in inner.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, expr = item.partition("=")
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise HeaderError(f"{head}: bad enumerator {item!r}")
        value = _eval_int(expr, consts, f"{head} {name}") if sep else nxt
        consts[name] = value
        nxt = value + 1
        out.append(f"    {name} = {value},")
    out.append("};")
    return "\n".join(out)


def _fields(head: str, inner: str, consts: dict[str, int]) -> str:
    out = [f"{head} {{"]
    for member in inner.split(";"):
        member = " ".join(member.split())
        if not member:
            continue
        if "{" in member or "}" in member:
            raise HeaderError(f"{head}: nested definitions are not supported: {member!r}")

        def dim(m: re.Match[str]) -> str:
            return f"[{_eval_int(m.group(1), consts, f'{head} array length')}]"

        member = re.sub(r"\[([^\]]+)\]", dim, member)
        out.append(f"    {member};")
    out.append("};")
    return "\n".join(out)


def generate_cdef(header_text: str) -> str:
    """Turn the text of a ``linux/quic.h`` into cdef text for cffi.

    Raises HeaderError (a ValueError) for constructs it cannot translate.
    """
    directives, body = _split_preprocessor(_strip_comments(header_text))
    consts: dict[str, int] = dict(MSG_VALUES)
    defines: list[str] = []
    for line in directives:
        m = _DEFINE_RE.match(line)
        if not m or m.group(2) or not m.group(3).strip():
            continue  # not a define, a function-like macro, or a bare flag
        name, expr = m.group(1), m.group(3)
        try:
            value = _eval_int(expr, consts, f"#define {name}")
        except HeaderError:
            continue  # not an integer constant (e.g. "#define X X")
        consts[name] = value
        defines.append(f"#define {name} {value}")
    # defines may refer to enumerators declared later; those are resolved there
    body = _TYPE_RE.sub(lambda m: TYPE_MAP[m.group(1)], body)
    blocks: list[str] = []
    if defines:
        blocks.append("\n".join(defines))
    for decl in _split_top(body):
        m = re.fullmatch(r"(enum|struct|union)(\s+[A-Za-z_]\w*)?\s*\{(.*)\}", decl, re.DOTALL)
        if m is None:
            blocks.append(decl + ";")  # typedefs, prototypes: kept as written
            continue
        kind, tag, inner = m.group(1), (m.group(2) or "").strip(), m.group(3)
        head = f"{kind} {tag}" if tag else kind
        if kind == "enum":
            blocks.append(_enum(head, inner, consts))
        else:
            blocks.append(_fields(head, inner, consts))
    return "\n\n".join(blocks) + "\n"


def shipped_cdef() -> str:
    """Return the declarations shipped in pyquic/abi/_cdef.py (loaded without importing pyquic)."""
    path = ROOT / "pyquic" / "abi" / "_cdef.py"
    spec = importlib.util.spec_from_file_location("_pyquic_shipped_cdef", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return str(mod.CDEF)


def find_header(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the header to use, or None for the shipped declarations.

    An explicit path (argument, else ``$PYQUIC_QUIC_H``) must exist
    (FileNotFoundError otherwise); then ``/usr/include/linux/quic.h``.
    """
    chosen = explicit if explicit is not None else os.environ.get(ENV_HEADER) or None
    if chosen is not None:
        path = Path(chosen)
        if not path.is_file():
            raise FileNotFoundError(f"QUIC header not found: {path}")
        return path
    if SYSTEM_HEADER.is_file():
        return SYSTEM_HEADER
    return None


def load_cdef(header: Path | None) -> str:
    """cdef text for ``header``, or the shipped declarations when it is None."""
    if header is None:
        return shipped_cdef()
    return generate_cdef(header.read_text())


def find_compiler() -> str | None:
    """Return a usable C compiler command, or None."""
    for cand in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    return None


def abi_ffi(cdef: str) -> Any:
    """An in-line ABI-mode FFI with ``cdef`` declared."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(cdef)
    return ffi


def include_line(header: Path) -> str:
    """The ``#include`` that names ``header`` in the generated C source."""
    if header.resolve() == SYSTEM_HEADER.resolve():
        return "#include <linux/quic.h>"
    return f'#include "{header.resolve()}"'


def api_ffi(header: Path, module_name: str = MODULE_NAME) -> Any:
    """An out-of-line API-mode FFI (not yet compiled) for a real header."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(generate_cdef(header.read_text()))
    ffi.set_source(module_name, "#include <stdint.h>\n" + include_line(header))
    return ffi


def build_api_module(header: Path, *, module_name: str = MODULE_NAME,
                     tmpdir: str | os.PathLike[str] = ROOT, verbose: bool = False) -> Path:
    """Compile the API-mode module for ``header`` into ``tmpdir``; return its path.

    ``module_name`` "a.b.c" lands at ``tmpdir/a/b/c.<ext>``. Needs a C compiler.
    """
    if find_compiler() is None:
        raise RuntimeError("no C compiler found")
    ffi = api_ffi(header, module_name)
    return Path(ffi.compile(tmpdir=str(tmpdir), verbose=verbose))


def main(argv: list[str] | None = None) -> int:
    """Command line: build the accelerator module, or print the cdef."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", help=f"path of quic.h (default: ${ENV_HEADER}, "
                        f"then {SYSTEM_HEADER}, then the shipped declarations)")
    parser.add_argument("--print-cdef", action="store_true", help="print the cdef and exit")
    parser.add_argument("--out", default=str(ROOT), help="build directory (default: repo root)")
    args = parser.parse_args(argv)
    try:
        header = find_header(args.header)
    except FileNotFoundError as exc:
        print(f"build_ffi: {exc}", file=sys.stderr)
        return 2
    if args.print_cdef:
        sys.stdout.write(load_cdef(header))
        return 0
    if header is None:
        abi_ffi(load_cdef(None))  # validate the shipped declarations
        print("no quic.h found: pyquic.abi uses the shipped declarations in ABI mode")
        return 0
    if find_compiler() is None:
        abi_ffi(load_cdef(header))
        print(f"no C compiler: {header} checked in ABI mode only; nothing built")
        return 0
    path = build_api_module(header, tmpdir=args.out)
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
