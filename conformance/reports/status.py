"""The verdicts a case can get, what each does to the exit code, and the one place that decides it.

``passed``, ``failed``, ``skipped`` and ``error`` are pytest's own outcomes. Two more are kept apart so that no
report rounds them off:

- ``flaky``: every step met its expectations, but at least one only on a retry (``retry:`` in the suite). It
  counts as passed for the exit code; reports show it separately, with the attempts.
- ``known_difference``: the case failed on a runtime whose driver declares one of the case's ``differences:``
  keys as absent (``runtime.network_isolation: False``). It is not a pass: reports name the key. It does not make
  the run exit 1 unless the run is strict (``conformance run --strict``).

Exit codes: 0 nothing wrong (skips, flaky cases and known differences allowed), 1 a conformance failure, 2 a
harness error (a suite did not load, a case could not be judged, nothing ran).
"""

from __future__ import annotations

from typing import Any

STATUSES = ("passed", "flaky", "failed", "known_difference", "skipped", "error")
#: Statuses that are a conformance failure in any run, and in a strict one.
BAD = ("failed", "error")
STRICT_BAD = ("failed", "known_difference", "error")
#: Short forms for tables (the matrix, the terminal).
SYMBOLS = {"passed": "pass", "flaky": "flaky", "failed": "FAIL", "known_difference": "known-diff",
           "skipped": "skip", "error": "ERROR"}
#: Column headings for per-suite totals.
HEADINGS = {"passed": "passed", "flaky": "flaky", "failed": "failed", "known_difference": "known diff",
            "skipped": "skipped", "error": "error"}


def counts(cases: list[dict[str, Any]]) -> dict[str, int]:
    """How many cases have each status, plus ``total``; every status is present (0 when none)."""
    out = dict.fromkeys(STATUSES, 0)
    for case in cases:
        out[case["status"]] = out.get(case["status"], 0) + 1
    out["total"] = len(cases)
    return out


def exit_code(cases: list[dict[str, Any]], collect_errors: list[Any], *, strict: bool = False,
              empty_ok: bool = False) -> int:
    """0 nothing wrong; 1 a conformance failure; 2 a harness error, or nothing ran (unless ``empty_ok``: a shard
    that the split left empty)."""
    statuses = {case["status"] for case in cases}
    if collect_errors or (not cases and not empty_ok):
        return 2
    if "failed" in statuses or (strict and "known_difference" in statuses):
        return 1
    if "error" in statuses:
        return 2
    return 0


def retried_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps that met their expectations only after more than one attempt."""
    return [s for s in steps if s.get("status") == "passed" and int(s.get("attempts", 1)) > 1]


def flaky_note(retried: list[dict[str, Any]]) -> str:
    """One line for reports: which steps needed how many attempts."""
    return "passed after retries: " + "; ".join(f"{s['label']} (attempt {s['attempts']})" for s in retried)


def difference_note(difference: dict[str, str]) -> str:
    """One line for reports: ``known difference runtime.x: what the driver says about it``."""
    note = difference.get("note", "")
    return f"known difference {difference['key']}" + (f": {note}" if note else "")


def detail(case: dict[str, Any]) -> str:
    """Why a case is not a plain pass, in one line: its ``reason`` (the skip reason, the known difference, the
    retries), else the first line of its failure message."""
    for key in ("reason", "message"):
        lines = str(case.get(key) or "").strip().splitlines()
        if lines:
            return lines[0]
    return ""
