"""The ``pyquic`` command: ``demo``, ``perf``, and the hq-interop ``server``/``client``.

Each subcommand lives in its own module under ``pyquic.cli``. Errors a user
can cause (busy port, bad certificate, unreachable peer, refused handshake)
print one line to stderr and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyquic`` command."""
    from pyquic.cli import demo, hq, perf

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")
    parser = argparse.ArgumentParser(
        prog="pyquic", parents=[debug],
        description="QUIC sockets for Python: demo, benchmark and interop endpoints.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo.add_parser(sub, [debug])
    perf.add_parser(sub, [debug])
    hq.add_parser(sub, [debug])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyquic`` command; returns the process exit status."""
    from pyquic.cli.common import CliError, reason

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["interop"] and argv[1:2] not in (["-h"], ["--help"]):
        from pyquic.cli.hq import interop_argv

        try:  # the role's own options follow, so dispatch before parsing
            argv = interop_argv(argv[1:])
        except CliError as exc:
            print(f"pyquic interop: error: {exc}", file=sys.stderr)
            return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    name = " ".join(filter(None, ["pyquic", args.command, getattr(args, "role", None)]))
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        if debug:
            traceback.print_exc()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"{name}: error: {type(exc).__name__}: {reason(exc)}"
              f" (run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
