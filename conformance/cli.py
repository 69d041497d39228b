"""The ``conformance`` command line. Each subcommand group lives in ``conformance/commands/<name>.py`` and
exposes ``register(subparsers)``; handlers take the parsed arguments and return the exit code.

Exit codes everywhere: 0 success, 1 a conformance failure (or a missing kernel feature, or a regression), 2 a
harness error (bad input, unreachable target, a check that could not run).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from conformance.errors import ConformanceError

COMMAND_MODULES = ("run", "check_kernel", "report", "vm")

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="conformance", description="Conformance harness for Linux containers")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"conformance.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"conformance.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except ConformanceError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("conformance: interrupted", file=sys.stderr)
        return 2
