"""The ``refrt`` command line: docker's syntax, one module per command group.

Each module in this package exposes ``register(subparsers)``, which adds its commands with
``set_defaults(func=handler)``; a handler takes ``(args, ctx)`` and returns the exit code. Errors are raised as
:class:`runtime.errors.RefrtError` and turned here into one line on stderr and the error's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.cli.flags import GoParser
from runtime.errors import RefrtError, UsageError
from runtime.paths import Paths, check_directory

# Command groups, in the order ``refrt --help`` lists them.
COMMAND_MODULES = ("containers", "interactive", "filesystem", "events", "images", "build", "registry", "network",
                   "volumes", "system")

# Which group registers each command, so that ``refrt ps`` imports only what ``ps`` needs: importing every group
# costs 0.1-0.25 s per call. tests/runtime/test_cli.py checks this table against what the groups register.
COMMANDS: dict[str, str] = {
    **dict.fromkeys(("run", "create", "start", "exec", "ps", "logs", "stop", "kill", "rm", "wait", "inspect",
                     "top", "stats", "pause", "unpause", "restart", "rename", "container"), "containers"),
    **dict.fromkeys(("images", "rmi", "tag", "history", "import", "load", "save", "image"), "images"),
    "build": "build",
    "attach": "interactive",
    **dict.fromkeys(("cp", "diff", "export", "commit"), "filesystem"),
    "events": "events",
    **dict.fromkeys(("login", "logout", "push", "pull"), "registry"),
    **dict.fromkeys(("network", "port"), "network"),
    "volume": "volumes",
    **dict.fromkeys(("info", "version", "system", "daemon"), "system"),
}
_GLOBAL_OPTIONS_WITH_VALUE = ("--root", "--state", "--config", "-H", "--host")


@dataclass(frozen=True)
class Context:
    """What every handler needs besides its own arguments."""

    paths: Paths
    config_dir: str | None
    debug: bool


Handler = Callable[[argparse.Namespace, Context], int]


class _Parser(GoParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def command_name(argv: Sequence[str]) -> str | None:
    """The sub-command word of ``argv`` (the first word that is not a global option or its value)."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


# Parsers built ahead by :func:`preload` (in the daemon's zygote); each worker is a fork that uses one once.
_PREBUILT: dict[str | None, argparse.ArgumentParser] = {}


def preload() -> None:
    """Build the parser of every command group, and the full one, ahead of the commands (the daemon's zygote)."""
    for group in (*COMMAND_MODULES, None):
        try:
            _PREBUILT[group] = _new_parser(group)
        except Exception:  # a group that cannot load fails its own commands, when they run
            continue


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command group, or with just the group of command ``only`` when it is known."""
    group = COMMANDS.get(only) if only is not None else None
    prebuilt = _PREBUILT.pop(group, None)  # used once: parsing leaves defaults behind on the parser
    return prebuilt if prebuilt is not None else _new_parser(group)


def _new_parser(group: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog="refrt", description="refrt: the reference container runtime")
    parser.add_argument("--root", help="persistent state directory (REFRT_ROOT, default /var/lib/refrt)")
    parser.add_argument("--state", help="volatile state directory (REFRT_STATE, default /run/refrt)")
    parser.add_argument("--config", help="client config directory holding config.json (REFRT_CONFIG)")
    parser.add_argument("-D", "--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--version", action="version", version=f"refrt version {_version()}",
                        help="print version information and quit")
    # the thin client's options (runtime.client acts on them; here for --help, and accepted by workers)
    parser.add_argument("-H", "--host", dest="client_host",
                        help="daemon socket, unix://PATH (REFRT_HOST, default <state>/refrt.sock)")
    parser.add_argument("--no-daemon", action="store_true",
                        help="run the command in this process, not in the daemon (REFRT_NO_DAEMON=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups = (group,) if group is not None else COMMAND_MODULES
    for name in groups:
        importlib.import_module(f"runtime.cli.{name}").register(sub)
    return parser


def _version() -> str:
    import runtime

    return runtime.__version__


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "-D" in words or "--debug" in words
    try:
        parser = build_parser(command_name(words))
        args = parser.parse_args(words)
        func: Handler | None = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 0 if args.command is None else 125
        ctx = Context(
            paths=Paths.resolve(args.root, args.state),
            config_dir=check_directory("--config", "REFRT_CONFIG", args.config, writable=False),
            debug=args.debug,
        )
        return func(args, ctx)
    except RefrtError as exc:
        if debug:
            raise
        print(f"refrt: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:  # a file or directory the input named, or the host refused: one line, as docker
        if debug:
            raise
        print(f"refrt: {_os_error_line(exc)}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not the input's fault: still one line (-D shows the traceback)
        if debug:
            raise
        print(f"refrt: internal error: {type(exc).__name__}: {exc} (run with -D for the traceback)",
              file=sys.stderr)
        return 125


def _broken_pipe() -> int:
    """`refrt image inspect x | head`: the reader went away; say nothing, as a shell tool would."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


def _os_error_line(exc: OSError) -> str:
    """``strerror: filename`` as the kernel said it, without Python's ``[Errno N]`` decoration."""
    text = exc.strerror or str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{text}: {' -> '.join(names)}" if names else text
