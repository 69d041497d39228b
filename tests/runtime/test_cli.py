"""The refrt CLI dispatcher: the lazy command table matches what the groups register, and errors are one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from runtime.cli import COMMAND_MODULES, COMMANDS, _Parser, build_parser, command_name


def test_command_table_matches_the_groups() -> None:
    registered: dict[str, str] = {}
    for group in COMMAND_MODULES:
        parser = _Parser(prog="refrt")
        sub = parser.add_subparsers(dest="command", parser_class=_Parser)
        importlib.import_module(f"runtime.cli.{group}").register(sub)
        registered.update(dict.fromkeys(sub.choices, group))
    assert registered == COMMANDS


@pytest.mark.parametrize(
    ("argv", "name"),
    [(["ps"], "ps"), (["--root", "/x", "run", "busybox"], "run"), (["-D", "--state", "/s", "image", "ls"], "image"),
     (["--root=/x", "images"], "images"), (["--help"], None), ([], None)],
)
def test_command_name(argv: list[str], name: str | None) -> None:
    assert command_name(argv) == name


def test_full_parser_for_help_lists_every_command() -> None:
    help_text = build_parser(None).format_help()
    for command in ("run", "images", "build", "push", "network", "volume", "info"):
        assert command in help_text


def test_unknown_command_is_one_line_and_125() -> None:
    result = subprocess.run([sys.executable, "-m", "runtime", "frobnicate"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 125
    assert len(result.stderr.strip().splitlines()) == 1
    assert "frobnicate" in result.stderr
