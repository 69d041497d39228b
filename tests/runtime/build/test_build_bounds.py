"""Bounds on ``refrt build``: variable expansion cannot blow up, and a failed build leaves no partial cache.

The acceptance case: 43 lines - FROM, ``ARG A=x``, 40 lines of ``ARG A=$A$A`` (2**40 bytes if nothing stopped it),
RUN - fails within 20 s, under 500 MB of peak RSS (the build process itself, run with ``--no-daemon`` so the
process measured is the one building), and leaves under 10 MB in the build cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.build.errors import ExpansionError
from runtime.build.expand import MAX_EXPANDED, MAX_PATTERN_VALUE, MAX_WORD, Lexer

REPO = Path(__file__).resolve().parents[3]


def _refrt(root: Path, *args: str, cwd: Path | None = None) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MB) of ``refrt --no-daemon --root ROOT ARGS``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    env["PYTHONPATH"] = str(REPO)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime", "--no-daemon", "--root", str(root), *args],
        cwd=cwd or REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, time.monotonic() - started, usage.ru_maxrss / 1024


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*")) if path.exists() else 0


def test_word_and_instruction_bounds() -> None:
    lexer = Lexer()
    big = "x" * (MAX_WORD // 2 + 1)
    assert lexer.word("$A", {"A": big}) == big
    with pytest.raises(ExpansionError, match="too long"):
        lexer.word("$A$A", {"A": big})
    many = " ".join(["$A"] * (MAX_EXPANDED // len(big) + 2))
    with pytest.raises(ExpansionError, match="too long"):
        lexer.words(many, {"A": big})
    with pytest.raises(ExpansionError, match="too long"):
        lexer.word("y" * (MAX_WORD + 1), {})


def test_pattern_removal_is_bounded() -> None:
    """``${A%%*x}`` tries every cut point, each a match: a value past MAX_PATTERN_VALUE is refused, not ground."""
    lexer = Lexer()
    assert lexer.word("${A%%/*}", {"A": "a/b/c"}) == "a" and lexer.word("${A##*/}", {"A": "a/b/c"}) == "c"
    assert lexer.word("${A%/*}", {"A": "a/b/c"}) == "a/b" and lexer.word("${A#*/}", {"A": "a/b/c"}) == "b/c"
    started = time.monotonic()
    with pytest.raises(ExpansionError, match="at most"):
        lexer.word("${A%%*x}", {"A": "y" * (MAX_PATTERN_VALUE + 1)})
    assert lexer.word("${A%%*x}", {"A": "y" * MAX_PATTERN_VALUE}) == "y" * MAX_PATTERN_VALUE
    assert time.monotonic() - started < 10


def test_arg_doubling_fails_fast_and_leaves_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "root"
    code, err, _, _ = _refrt(root, "image", "bootstrap", "busybox")
    assert code == 0, err
    context = tmp_path / "ctx"
    context.mkdir()
    lines = ["FROM busybox", "ARG A=x"] + ["ARG A=$A$A"] * 40 + ["RUN echo ${#A}"]
    assert len(lines) == 43
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    cache = root / "build-cache"
    code, err, seconds, rss = _refrt(root, "build", "-t", "doubling", str(context))
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "MemoryError" not in err
    assert "Dockerfile:" in last and "too long" in last, err
    assert seconds < 20 and rss < 500, (seconds, rss)
    assert _tree_size(cache) < 10 << 20
    assert not list(cache.glob("*.json")), "a failed build left cache entries"


def test_failed_build_takes_back_its_cache_entries_and_keeps_older_ones(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _refrt(root, "image", "bootstrap", "busybox")[0] == 0
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nENV A=1\nLABEL x=y\n")
    code, err, _, _ = _refrt(root, "build", "-t", "ok", str(context))
    assert code == 0, err
    cache = root / "build-cache"
    kept = sorted(p.name for p in cache.glob("*.json"))
    assert kept
    (context / "Dockerfile").write_text("FROM busybox\nENV A=1\nLABEL x=y\nENV B=2\nRUN exit 3\n")
    code, err, _, _ = _refrt(root, "build", "-t", "fails", str(context))
    assert code == 1, err
    assert sorted(p.name for p in cache.glob("*.json")) == kept


def test_context_bound_per_step(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _refrt(root, "image", "bootstrap", "busybox")[0] == 0
    context = tmp_path / "ctx"
    (context / "data").mkdir(parents=True)
    for i in range(4):
        (context / "data" / f"f{i}").write_bytes(b"z" * 4096)
    (context / "Dockerfile").write_text("FROM busybox\nCOPY small /small\nCOPY data /data\n")
    (context / "small").write_bytes(b"s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    env.update(PYTHONPATH=str(REPO), REFRT_BUILD_MAX_STEP_CONTEXT="10000")
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "--no-daemon", "--root", str(root), "build", str(context)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert "COPY reads more than 10000 bytes of the build context" in proc.stderr.strip().splitlines()[-1]
    assert "line 3" in proc.stderr
