"""docker's flag syntax on top of argparse: Go booleans, no abbreviations.

Why: users paste docker command lines. docker's flags (Go's pflag) take ``--rm=true``, ``-d=false`` and
``--sig-proxy=false`` for booleans, and never guess an abbreviation (argparse would read ``--pid=host`` as
``--pids-limit`` and ``--priv`` as ``--privileged``). :class:`GoParser` gives every command both: each
``store_true`` flag also answers to ``--flag=BOOL`` with Go's spellings of a boolean, and abbreviations are off.
Only the command's own flags are rewritten: after the image of ``run`` (a parser with a ``REMAINDER``
positional) the words belong to the container's command, as with docker's non-interspersed flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from runtime.errors import UsageError

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_HIDDEN = "\0false"  # suffix of the hidden option string that stores False


def go_bool(value: str | bool, flag: str = "") -> bool:
    """Go's strconv.ParseBool."""
    if isinstance(value, bool):
        return value
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f'invalid argument "{value}" for "{flag}" flag: strconv.ParseBool: parsing "{value}": '
                     "invalid syntax")


class GoParser(argparse.ArgumentParser):
    """argparse with docker's parsing: Go booleans on every ``store_true`` flag, no abbreviations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._go_bools: set[str] = set()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if isinstance(action, argparse._StoreTrueAction):
            for option in action.option_strings:
                self._go_bools.add(option)
                super().add_argument(option + _HIDDEN, dest=action.dest, action="store_false",
                                     help=argparse.SUPPRESS)
        return action

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if args is not None:
            args = self._rewrite(list(args))
        return super().parse_known_args(args, namespace)

    def _rewrite(self, words: list[str]) -> list[str]:
        stop_at_positional = any(a.nargs in (argparse.REMAINDER, argparse.PARSER) for a in self._actions
                                 if not a.option_strings)
        out: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            if word == "--" or (not word.startswith("-") or word == "-"):
                if stop_at_positional or word == "--":
                    return out + words[i:]
                out.append(word)
                i += 1
                continue
            name, eq, value = word.partition("=")
            if eq and name in self._go_bools:
                out.append(name if go_bool(value, name.lstrip("-")) else name + _HIDDEN)
            else:
                out.append(word)
                action = self._option_string_actions.get(name)
                if action is not None and not eq and action.nargs != 0 and not (
                    len(name) == 2 and len(word) > 2
                ) and i + 1 < len(words):  # the option's value, whatever it looks like
                    out.append(words[i + 1])
                    i += 1
            i += 1
        return out
