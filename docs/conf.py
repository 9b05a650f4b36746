"""Sphinx configuration of pyquic's documentation.

Build (warnings are errors, as in CI)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

project = "pyquic"
author = "the pyquic authors"
copyright = "pyquic authors"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# Pages written in Markdown for developers (docs/dev, kernel.md, bench.md) are
# read on GitHub; the Sphinx site is the reStructuredText pages.
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "dev", "*.md", "**/*.md"]
root_doc = "index"

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autoclass_content = "both"
# No intersphinx: the build must work offline (CI has no network to spare).
nitpicky = False

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = "pyquic"

# ---------------------------------------------------------------- constants page
# pyquic re-exports ~120 C-style constants (QUIC_SOCKOPT_*, MSG_QUIC_*...). Plain
# ints and enum members cannot carry docstrings, so each gets a generated entry
# at the end of api.rst naming its value and the enum member it aliases; every
# name in pyquic.__all__ is then in the index (tests/test_docs.py checks it).

_DESCRIPTIONS = {
    "EVENT_CLASSES": "Map of :class:`~pyquic.abi.constants.EventType` to its event dataclass.",
    "STRUCT_CLASSES": "Every option struct dataclass of :mod:`pyquic.abi.structs`.",
    "Event": "Type alias: the union of all event dataclasses.",
    "FFI_MODE": "``\"api\"`` when the compiled cffi module is used, ``\"abi\"`` otherwise.",
    "ffi": "The cffi ``FFI`` instance holding the kernel header's declarations.",
    "lib": "The cffi library object of those declarations (constants).",
}


def _constants_rst() -> str:
    import enum
    import inspect

    import pyquic

    out = ["", "Constants and aliases", "---------------------", "",
           "The C names of the kernel header, re-exported at the top level.", ""]
    for name in sorted(pyquic.__all__):
        obj = getattr(pyquic, name)
        documented_elsewhere = (inspect.isclass(obj) or inspect.isroutine(obj)
                                or inspect.ismodule(obj) or callable(obj))
        if documented_elsewhere and name not in _DESCRIPTIONS:
            continue
        if name in _DESCRIPTIONS:
            desc = _DESCRIPTIONS[name]
        elif isinstance(obj, enum.Enum):
            cls = type(obj)
            desc = (f"``{int(obj.value)}`` (``{obj.value:#x}``): "
                    f":attr:`{cls.__module__}.{cls.__name__}.{obj.name}`.")
        elif isinstance(obj, int):
            desc = f"``{obj}`` (``{obj:#x}``)."
        else:
            desc = f"``{obj!r}``."
        out += [f".. py:data:: {name}", "   :module: pyquic", "", f"   {desc}", ""]
    return "\n".join(out)


def _add_constants(app: object, docname: str, source: list[str]) -> None:
    if docname == "api":
        source[0] += _constants_rst()


def setup(app: object) -> None:
    app.connect("source-read", _add_constants)  # type: ignore[attr-defined]
