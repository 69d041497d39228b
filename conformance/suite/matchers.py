"""Expectations: exit codes and text matchers. Each returns ``None`` when met, else what was wrong."""

from __future__ import annotations

import re
from typing import Any

_NUMERIC = {"lt": float.__lt__, "le": float.__le__, "gt": float.__gt__, "ge": float.__ge__,
            "eq": float.__eq__, "ne": float.__ne__}


def check_exit(spec: Any, status: int) -> str | None:
    if spec == "any":
        return None
    if isinstance(spec, int):
        ok = status == spec
        expected = str(spec)
    elif isinstance(spec, list):
        ok = status in spec
        expected = f"one of {spec}"
    else:
        ok = status != spec["not"]
        expected = f"anything but {spec['not']}"
    return None if ok else f"exit status {status}, expected {expected}"


def check_text(spec: Any, text: str, what: str) -> str | None:
    """Match ``text`` against a matcher (a plain value means: equals, after stripping)."""
    value = text.strip()
    if not isinstance(spec, dict):
        spec = {"equals": spec}
    for key, expected in spec.items():
        problem = _check_one(key, expected, value)
        if problem:
            return f"{what} {problem}"
    return None


def _check_one(key: str, expected: Any, value: str) -> str | None:
    shown = _shorten(value)
    if key == "equals":
        return None if value == str(expected).strip() else f"is {shown}, expected {str(expected).strip()!r}"
    if key in ("contains", "not_contains"):
        wanted = expected if isinstance(expected, list) else [expected]
        for item in map(str, wanted):
            if (item in value) != (key == "contains"):
                verb = "does not contain" if key == "contains" else "contains"
                return f"{verb} {item!r} (it is {shown})"
        return None
    if key in ("matches", "not_matches"):
        found = re.search(str(expected), value, re.MULTILINE) is not None
        if found != (key == "matches"):
            verb = "does not match" if key == "matches" else "matches"
            return f"{verb} /{expected}/ (it is {shown})"
        return None
    if key == "empty":
        return None if (value == "") == bool(expected) else f"is {shown}, expected {'' if expected else 'non-'}empty"
    if key == "lines":
        count = len([line for line in value.splitlines() if line.strip()])
        return None if count == int(expected) else f"has {count} lines, expected {expected}"
    try:
        number = float(value)
    except ValueError:
        return f"is {shown}, not a number (for {key} {expected})"
    return None if _NUMERIC[key](number, float(expected)) else f"is {number:g}, expected {key} {expected}"


def _shorten(text: str, limit: int = 200) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
