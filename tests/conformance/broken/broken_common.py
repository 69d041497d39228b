"""What every breakage shares: running refrt, reading docker-style argument lists, the breakage registry.

See ``refrt_broken.py`` for what the breakages are for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after PYTHONPATH: a runtime given there wins

#: run/create options that take no value; every other option takes one (as ``--opt value`` or ``--opt=value``).
RUN_FLAGS = {"--rm", "-d", "--detach", "-i", "--interactive", "-t", "--tty", "-it", "-ti", "--read-only",
             "--privileged", "-P", "--publish-all", "--init", "-q", "--quiet"}
#: exec options that take no value.
EXEC_FLAGS = {"-d", "--detach", "-i", "--interactive", "-t", "--tty", "-it", "-ti", "--privileged"}
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}

Option = tuple[str, str | None]  # (flag, value); value None for a flag without one
Breakage = Callable[[list[str]], int]
BREAKAGES: dict[str, tuple[str, Breakage]] = {}


def breakage(name: str, what: str) -> Callable[[Breakage], Breakage]:
    def register(func: Breakage) -> Breakage:
        BREAKAGES[name] = (what, func)
        return func
    return register


# --- running refrt -------------------------------------------------------------------------------------------

def refrt_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def refrt(args: list[str], capture: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(refrt_argv(args), capture_output=capture, text=True, check=False)


def become_refrt(args: list[str]) -> NoReturn:
    sys.stdout.flush()
    os.execv(sys.executable, refrt_argv(args))


# --- parsing docker-style argument lists ---------------------------------------------------------------------

def split_options(words: list[str], flags: set[str]) -> tuple[list[Option], list[str]]:
    """Options up to the first positional word, and the rest (image and command for run)."""
    options: list[Option] = []
    i = 0
    while i < len(words) and words[i].startswith("-") and words[i] != "-":
        word = words[i]
        if word in flags or "=" in word:
            flag, _, value = word.partition("=")
            options.append((flag, value if "=" in word else None))
            i += 1
        else:
            options.append((word, words[i + 1] if i + 1 < len(words) else ""))
            i += 2
    return options, words[i:]


def join_options(options: list[Option]) -> list[str]:
    out: list[str] = []
    for flag, value in options:
        out += [flag] if value is None else [flag, value]
    return out


RunRewrite = Callable[[list[Option], list[str]], tuple[list[Option], list[str]]]


def rewrite_run(args: list[str], rewrite: RunRewrite, commands: tuple[str, ...] = ("run", "create")) -> list[str]:
    """Apply ``rewrite(options, rest)`` to a run/create argument list; others pass unchanged."""
    if not args or args[0] not in commands:
        return args
    options, rest = split_options(args[1:], RUN_FLAGS if args[0] != "exec" else EXEC_FLAGS)
    options, rest = rewrite(options, rest)
    return [args[0], *join_options(options), *rest]


def without(*flags: str) -> RunRewrite:
    return lambda options, rest: ([o for o in options if o[0] not in flags], rest)


def mapped(flags: tuple[str, ...], change: Callable[[str], list[Option]]) -> RunRewrite:
    """Replace each option among ``flags`` by what ``change(value)`` gives (possibly nothing)."""
    def rewrite(options: list[Option], rest: list[str]) -> tuple[list[Option], list[str]]:
        out: list[Option] = []
        for flag, value in options:
            out += change(value or "") if flag in flags else [(flag, value)]
        return out, rest
    return rewrite


def option_values(options: list[Option], *flags: str) -> list[str]:
    return [v or "" for f, v in options if f in flags]


def run_with(rewrite: RunRewrite, commands: tuple[str, ...] = ("run", "create")) -> Breakage:
    return lambda args: become_refrt(rewrite_run(args, rewrite, commands))


def register_run_rewrite(name: str, what: str, rewrite: RunRewrite,
                         commands: tuple[str, ...] = ("run", "create")) -> None:
    breakage(name, what)(run_with(rewrite, commands))


def sub(args: list[str], words: int = 1) -> tuple[str, ...]:
    return tuple(args[:words])
