"""Matchers: each kind of expectation accepts what it should and explains what it rejects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.errors import MatchTimeout
from conformance.suite.matchers import SEARCH_LIMIT, check_exit, check_text, search

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("spec", "text", "ok"),
    [
        ("hello", "hello\n", True),
        ("hello", "hell", False),
        ({"contains": "ell"}, "hello", True),
        ({"contains": ["he", "lo"]}, "hello", True),
        ({"contains": ["he", "xx"]}, "hello", False),
        ({"not_contains": "xx"}, "hello", True),
        ({"matches": r"^h\w+o$"}, "hello", True),
        ({"not_matches": r"\d"}, "hello", True),
        ({"empty": True}, "  \n", True),
        ({"empty": False}, "", False),
        ({"lines": 2}, "a\n\nb\n", True),
        ({"le": 55}, "54.9", True),
        ({"le": 55}, "55.1", False),
        ({"gt": 0, "lt": 10}, "5", True),
        ({"eq": 137}, "137", True),
        ({"ge": 1}, "not a number", False),
    ],
)
def test_text_matchers(spec: object, text: str, ok: bool) -> None:
    assert (check_text(spec, text, "stdout") is None) == ok


def test_text_mismatch_says_what_was_seen() -> None:
    assert check_text({"le": 55}, "72", "value") == "value is 72, expected le 55"


@pytest.mark.parametrize(
    ("spec", "status", "ok"),
    [(0, 0, True), (0, 1, False), ([0, 1], 1, True), ({"not": 0}, 0, False), ({"not": 0}, 125, True),
     ("any", 99, True)],
)
def test_exit_expectations(spec: object, status: int, ok: bool) -> None:
    assert (check_exit(spec, status) is None) == ok


def test_regex_groups_and_bounded_text() -> None:
    assert search(r"id=(\w+)", "x\nid=abc\n") == ["id=abc", "abc"]
    assert search(r"^b$", "a\nb\nc") == ["b"]
    assert search("nothing", "here") is None
    long = "x" * (SEARCH_LIMIT + 10) + "needle"
    problem = check_text({"matches": "needle"}, long, "stdout")
    assert problem is not None and f"only its first {SEARCH_LIMIT} characters were searched" in problem


def test_catastrophic_regex_ends_by_the_deadline_and_the_worker_recovers() -> None:
    started = time.monotonic()
    with pytest.raises(MatchTimeout, match=r"did not finish searching within 1 s .*catastrophically"):
        check_text({"matches": "(a+)+$"}, "a" * 40 + "!", "stdout", deadline=started + 1.0)
    assert time.monotonic() - started < 2.5
    # The stuck worker was killed; the next search gets a fresh one.
    assert check_text({"matches": "a+!"}, "a" * 40 + "!", "stdout", deadline=time.monotonic() + 5) is None


@pytest.mark.slow
def test_catastrophic_regex_in_a_suite_is_an_error_by_the_case_deadline(tmp_path: Path) -> None:
    suite = tmp_path / "regex.yaml"
    suite.write_text("""\
name: regex
description: a matcher that backtracks catastrophically
cases:
  - id: evil
    title: output matched by an exponential regex
    timeout: 4
    steps:
      - run: "printf 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'"
        expect:
          stdout: {matches: "(a+)+$"}
""")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", str(suite), "--report-dir",
                           str(tmp_path / "report")], cwd=REPO, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    case = results["cases"][0]
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert case["status"] == "error"
    assert "did not finish searching" in case["message"]
    assert case["steps"][0]["status"] == "error"
    assert case["steps"][0]["duration"] < 5.5
    assert elapsed < 30
