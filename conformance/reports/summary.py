"""Per-suite totals as a terminal table and as Markdown (tabulate)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

_COLUMNS = ("passed", "failed", "skipped", "error")


def suite_totals(document: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[suite, passed, failed, skipped, error, total]``, suites in first-seen order, then a total row."""
    rows: dict[str, dict[str, int]] = {}
    for case in document["cases"]:
        counts = rows.setdefault(case["suite"], dict.fromkeys(_COLUMNS, 0))
        counts[case["status"]] += 1
    table = [[suite, *(c[k] for k in _COLUMNS), sum(c.values())] for suite, c in rows.items()]
    summary = document["summary"]
    table.append(["TOTAL", *(summary[k] for k in _COLUMNS), summary["total"]])
    return table


def _problems(document: dict[str, Any]) -> list[list[str]]:
    order = {"failed": 0, "error": 1, "skipped": 2}
    rows = [[c["status"].upper(), f"{c['suite']}::{c['name']}", c.get("message") or c.get("reason") or ""]
            for c in document["cases"] if c["status"] in order]
    rows.sort(key=lambda row: order[row[0].lower()])
    return rows


def _header(document: dict[str, Any]) -> str:
    target = document.get("target", {})
    runtimes = ", ".join(f"{n} {r.get('version', '')}".strip() for n, r in document["runtimes"].items()) or "none"
    return (f"target {target.get('name', '?')} (kernel {target.get('kernel', '?')}, "
            f"cgroup {target.get('cgroup', '?')}); runtimes: {runtimes}; exit code {document['exit_code']}")


def terminal_table(document: dict[str, Any]) -> str:
    parts = [_header(document), tabulate(suite_totals(document), headers=["suite", *_COLUMNS, "total"])]
    problems = _problems(document)
    if problems:
        parts.append(tabulate([[s, n, m[:100]] for s, n, m in problems], headers=["status", "case", "why"]))
    for error in document.get("collect_errors", []):
        parts.append(f"LOAD ERROR {error['message']}")
    return "\n\n".join(parts)


def markdown_summary(document: dict[str, Any]) -> str:
    lines = [f"# Conformance run {document['run_id']}", "", _header(document), "",
             tabulate(suite_totals(document), headers=["suite", *_COLUMNS, "total"], tablefmt="github"), ""]
    problems = _problems(document)
    if problems:
        lines += ["## Not passed", "",
                  tabulate([[s, f"`{n}`", m.replace("|", "\\|")] for s, n, m in problems],
                           headers=["status", "case", "why"], tablefmt="github"), ""]
    for error in document.get("collect_errors", []):
        lines.append(f"- load error: {error['message']}")
    return "\n".join(lines).rstrip() + "\n"
