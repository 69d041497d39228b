"""Per-suite totals as a terminal table and as Markdown (tabulate), with every case that is not a plain pass -
failures, errors, known differences, flaky passes and skips - listed with why."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from conformance.reports.status import HEADINGS, STATUSES, counts, detail
from conformance.reports.text import visible_tree

_HEADERS = ["suite", *(HEADINGS[s] for s in STATUSES), "total"]
_PROBLEM_ORDER = {"failed": 0, "error": 1, "known_difference": 2, "flaky": 3, "skipped": 4}


def suite_totals(document: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[suite, <one count per status>, total]``, suites in first-seen order, then a total row."""
    per_suite: dict[str, list[dict[str, Any]]] = {}
    for case in document["cases"]:
        per_suite.setdefault(case["suite"], []).append(case)
    table = []
    for suite, cases in per_suite.items():
        numbers = counts(cases)
        table.append([suite, *(numbers[s] for s in STATUSES), numbers["total"]])
    total = counts(document["cases"])
    table.append(["TOTAL", *(total[s] for s in STATUSES), total["total"]])
    return table


def _problems(document: dict[str, Any]) -> list[list[str]]:
    rows = [[c["status"].upper(), f"{c['suite']}::{c['name']}", detail(c)]
            for c in document["cases"] if c["status"] in _PROBLEM_ORDER]
    rows.sort(key=lambda row: _PROBLEM_ORDER[row[0].lower()])
    return rows


def _header(document: dict[str, Any]) -> str:
    target = document.get("target", {})
    runtimes = ", ".join(f"{n} {r.get('version', '')}".strip() for n, r in document["runtimes"].items()) or "none"
    strict = " (strict: known differences fail)" if document.get("strict_differences") else ""
    return (f"target {target.get('name', '?')} (kernel {target.get('kernel', '?')}, "
            f"cgroup {target.get('cgroup', '?')}); runtimes: {runtimes}; exit code {document['exit_code']}{strict}")


def terminal_table(document: dict[str, Any]) -> str:
    document = visible_tree(document)
    parts = [_header(document), tabulate(suite_totals(document), headers=_HEADERS)]
    problems = _problems(document)
    if problems:
        parts.append(tabulate([[s, n, m[:100]] for s, n, m in problems], headers=["status", "case", "why"]))
    for error in document.get("collect_errors", []):
        parts.append(f"LOAD ERROR {error['message']}")
    return "\n\n".join(parts)


def markdown_summary(document: dict[str, Any]) -> str:
    document = visible_tree(document)
    lines = [f"# Conformance run {document['run_id']}", "", _header(document), "",
             tabulate(suite_totals(document), headers=_HEADERS, tablefmt="github"), ""]
    problems = _problems(document)
    if problems:
        lines += ["## Not plainly passed", "",
                  tabulate([[s, f"`{n}`", m.replace("|", "\\|")] for s, n, m in problems],
                           headers=["status", "case", "why"], tablefmt="github"), ""]
    for error in document.get("collect_errors", []):
        lines.append(f"- load error: {error['message']}")
    return "\n".join(lines).rstrip() + "\n"
