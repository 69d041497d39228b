""".dockerignore matching, docker's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.build.dockerignore import Ignore, compile_patterns

# (patterns, path, ignored?)
CASES = [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),
    (["**/*.log"], "dir/sub/a.log", True),
    (["**/*.log"], "a.log", True),
    (["dir"], "dir/sub/file", True),
    (["/dir"], "dir/file", True),
    (["dir/"], "dir/file", True),
    (["./dir/../x"], "x", True),
    (["d?r"], "dir", True),
    (["d?r"], "d/r", False),
    (["[a-c]*"], "b1", True),
    (["[!a-c]*"], "b1", False),
    (["*", "!keep"], "keep", False),
    (["*", "!keep"], "other", True),
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/keep/inner", False),
    (["dir", "!dir/keep"], "dir/drop", True),
    (["!x", "x"], "x", True),
    (["# comment", "", "  a  "], "a", True),
    (["# comment"], "# comment", False),
    (["a\\*b"], "a*b", True),
    (["a\\*b"], "axb", False),
    (["**"], "any/thing", True),
    (["a/**/b"], "a/b", True),
    (["a/**/b"], "a/x/y/b", True),
]


@pytest.mark.parametrize(("patterns", "path", "ignored"), CASES)
def test_matching(patterns: list[str], path: str, ignored: bool) -> None:
    assert Ignore(compile_patterns(patterns)).ignored(path) is ignored


def test_load_from_context(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("secret\n!secret/public\n")
    ignore = Ignore.load(tmp_path)
    assert ignore.has_exclusions
    assert ignore.ignored("secret/key") and not ignore.ignored("secret/public")
    assert not Ignore.load(tmp_path / "nowhere").patterns


def test_bad_pattern() -> None:
    with pytest.raises(ValueError):
        compile_patterns(["[abc"])
