"""Matchers: each kind of expectation accepts what it should and explains what it rejects."""

from __future__ import annotations

import pytest

from conformance.suite.matchers import check_exit, check_text


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
