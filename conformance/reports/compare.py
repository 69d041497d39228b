"""Comparing runs: the compatibility matrix (cases x (runtime, target)) and the diff between two results files.

``merge`` reads any number of ``results.json`` documents (one run may already hold several runtimes) into one
:class:`Matrix`; it renders as a terminal table (tabulate), Markdown and self-contained HTML (jinja2), each with
per-suite totals. ``diff`` compares an OLD and a NEW run case by case (keyed by suite, case, runtime, target):
newly failing, newly passing, newly flaky, newly known differences, changed skip reasons; any newly failing case
is a regression (exit status 1). Everything rendered goes through the report sanitiser (``reports/text.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from tabulate import tabulate

from conformance.errors import ReportError
from conformance.reports.status import BAD, STATUSES, SYMBOLS
from conformance.reports.status import detail as case_detail
from conformance.reports.text import visible, visible_tree


@dataclass(frozen=True, order=True)
class Column:
    """One (runtime, target) pair; ``label`` is what headers show."""

    runtime: str
    target: str
    label: str


@dataclass
class Cell:
    status: str
    reason: str = ""
    message: str = ""
    duration: float = 0.0

    @property
    def detail(self) -> str:
        """The reason (skip, known difference, retries), else the first line of the failure message."""
        return case_detail({"reason": self.reason, "message": self.message})


@dataclass
class Row:
    suite: str
    case: str
    title: str
    cells: dict[Column, Cell] = field(default_factory=dict)


@dataclass
class Matrix:
    columns: list[Column]
    rows: list[Row]
    sources: list[str]
    runtime_versions: dict[str, str] = field(default_factory=dict)

    def totals(self) -> dict[str, dict[Column, dict[str, int]]]:
        """Per suite and column: how many cases have each status, and the total."""
        out: dict[str, dict[Column, dict[str, int]]] = {}
        for row in self.rows:
            per_suite = out.setdefault(row.suite, {})
            for column, cell in row.cells.items():
                counts = per_suite.setdefault(column, {s: 0 for s in (*STATUSES, "total")})
                counts[cell.status] = counts.get(cell.status, 0) + 1
                counts["total"] += 1
        return out


def _target_name(case: dict[str, Any], document: dict[str, Any]) -> str:
    target = case.get("target") or document.get("target") or {}
    if isinstance(target, dict):
        return str(target.get("name") or "unknown")
    return str(target)


def case_key(case: dict[str, Any], document: dict[str, Any]) -> tuple[str, str, str, str]:
    return (str(case.get("suite", "")), str(case.get("case", "")), str(case.get("runtime", "none")),
            _target_name(case, document))


def _validate(document: dict[str, Any], source: str) -> None:
    if not isinstance(document.get("cases"), list):
        raise ReportError(f"{source}: no 'cases' list")
    for i, case in enumerate(document["cases"]):
        missing = [k for k in ("suite", "case", "status") if k not in case]
        if missing:
            raise ReportError(f"{source}: case #{i} lacks {', '.join(missing)}")
        if case["status"] not in STATUSES:
            raise ReportError(f"{source}: case {case['suite']}/{case['case']} has status {case['status']!r}")
    shard = document.get("shard")
    if shard is not None and not (isinstance(shard, dict) and isinstance(shard.get("index"), int)
                                  and isinstance(shard.get("count"), int) and 1 <= shard["index"] <= shard["count"]):
        raise ReportError(f"{source}: 'shard' must be {{index: K, count: N}} with 1 <= K <= N, got {shard!r}")


def load(paths: Iterable[str | Path]) -> list[tuple[str, dict[str, Any]]]:
    """Read results files (via the lead's loader, which checks the format); (path, document) pairs."""
    from conformance.reports import load_results

    documents = []
    for path in paths:
        document = load_results(Path(path))
        _validate(document, str(path))
        documents.append((str(path), document))
    return documents


def merge(documents: list[tuple[str, dict[str, Any]]]) -> Matrix:
    """One matrix from several runs. The same (runtime, target) from two files gets two columns (``#2``); shards
    of one run should be joined first (:func:`conformance.reports.shards.group_shards`). The matrix holds display
    text: every string is already :func:`~conformance.reports.text.visible`."""
    documents = [(visible(source), visible_tree(document)) for source, document in documents]
    columns: list[Column] = []
    rows: dict[tuple[str, str], Row] = {}
    versions: dict[str, str] = {}
    for index, (_source, document) in enumerate(documents):
        for name, info in (document.get("runtimes") or {}).items():
            version = info.get("version", "") if isinstance(info, dict) else str(info)
            versions.setdefault(name, version)
        local: dict[tuple[str, str], Column] = {}
        for case in document["cases"]:
            suite, case_id, runtime, target = case_key(case, document)
            column = local.get((runtime, target))
            if column is None:
                label = f"{runtime}@{target}"
                taken = {c.label for c in columns}
                if label in taken:
                    label = f"{label} #{index + 1}"
                column = Column(runtime, target, label)
                local[(runtime, target)] = column
                columns.append(column)
            row = rows.setdefault((suite, case_id), Row(suite, case_id, str(case.get("title", ""))))
            row.cells[column] = Cell(
                status=case["status"],
                reason=str(case.get("reason") or ""),
                message=str(case.get("message") or ""),
                duration=float(case.get("duration") or 0.0),
            )
    ordered = sorted(rows.values(), key=lambda r: (r.suite, r.case))
    return Matrix(columns=columns, rows=ordered, sources=[s for s, _ in documents], runtime_versions=versions)


# --- rendering ---------------------------------------------------------------------------------------------


def _cell_text(cell: Cell | None) -> str:
    return SYMBOLS[cell.status] if cell else "-"


def _totals_text(counts: dict[str, int] | None) -> str:
    """``passed/total`` (flaky passes included in ``passed``), then every other status that occurred."""
    if not counts:
        return "-"
    extra = [f"{counts[s]} {s.replace('_', ' ')}" for s in ("failed", "error", "known_difference", "flaky", "skipped")
             if counts.get(s)]
    passed = counts.get("passed", 0) + counts.get("flaky", 0)
    return f"{passed}/{counts['total']}" + (f" ({', '.join(extra)})" if extra else "")


def render_terminal(matrix: Matrix) -> str:
    headers = ["suite", "case", *(c.label for c in matrix.columns)]
    body = [[r.suite, r.case, *(_cell_text(r.cells.get(c)) for c in matrix.columns)] for r in matrix.rows]
    totals = matrix.totals()
    sums = [[suite, *(_totals_text(per.get(c)) for c in matrix.columns)] for suite, per in sorted(totals.items())]
    return (tabulate(body, headers=headers, tablefmt="simple") + "\n\nper suite (passed/total):\n"
            + tabulate(sums, headers=["suite", *(c.label for c in matrix.columns)], tablefmt="simple") + "\n")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(matrix: Matrix) -> str:
    lines = ["# Compatibility matrix", ""]
    lines += [f"Sources: {', '.join(f'`{s}`' for s in matrix.sources)}", ""]
    if matrix.runtime_versions:
        lines += ["Runtimes: " + ", ".join(f"{n} {v}" for n, v in sorted(matrix.runtime_versions.items())), ""]
    lines += ["## Per suite (passed/total)", ""]
    lines += ["| suite | " + " | ".join(c.label for c in matrix.columns) + " |",
              "|---|" + "---|" * len(matrix.columns)]
    for suite, per in sorted(matrix.totals().items()):
        lines.append(f"| {_md(suite)} | " + " | ".join(_totals_text(per.get(c)) for c in matrix.columns) + " |")
    lines += ["", "## Cases", ""]
    lines += ["| suite | case | " + " | ".join(c.label for c in matrix.columns) + " |",
              "|---|---|" + "---|" * len(matrix.columns)]
    notes: list[str] = []
    for row in matrix.rows:
        cells = []
        for column in matrix.columns:
            cell = row.cells.get(column)
            text = _cell_text(cell)
            if cell and cell.status != "passed" and cell.detail:
                notes.append(f"- `{row.suite}/{row.case}` on {column.label}: {cell.status}: {_md(cell.detail)}")
                text = f"{text} [{len(notes)}]"
            cells.append(f"**{text}**" if cell and cell.status in BAD else text)
        lines.append(f"| {_md(row.suite)} | {_md(row.case)} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Reasons", "", *(f"{i}. {n[2:]}" for i, n in enumerate(notes, 1))]
    return "\n".join(lines) + "\n"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
)


def render_html(matrix: Matrix) -> str:
    return _ENV.get_template("matrix.html.j2").render(
        matrix=matrix, totals=sorted(matrix.totals().items()), symbols=SYMBOLS, totals_text=_totals_text
    )


# --- diff --------------------------------------------------------------------------------------------------


@dataclass
class Change:
    key: tuple[str, str, str, str]
    old: Cell | None
    new: Cell | None

    @property
    def name(self) -> str:
        suite, case, runtime, target = self.key
        return f"{suite}/{case} [{runtime}@{target}]"


@dataclass
class Diff:
    newly_failing: list[Change] = field(default_factory=list)
    newly_passing: list[Change] = field(default_factory=list)
    newly_flaky: list[Change] = field(default_factory=list)
    newly_known_difference: list[Change] = field(default_factory=list)
    skip_reason_changed: list[Change] = field(default_factory=list)
    other_changes: list[Change] = field(default_factory=list)
    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.newly_failing)


def _cells(document: dict[str, Any]) -> dict[tuple[str, str, str, str], Cell]:
    return {
        case_key(c, document): Cell(c["status"], str(c.get("reason") or ""), str(c.get("message") or ""))
        for c in document["cases"]
    }


def diff(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """Case-by-case changes from ``old`` to ``new``. A case that is new and fails counts as newly failing."""
    before, after = _cells(old), _cells(new)
    result = Diff()
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        change = Change(key, a, b)
        if a is None and b is not None:
            (result.newly_failing if b.status in BAD else result.added).append(change)
        elif b is None:
            result.removed.append(change)
        elif a is not None and a.status not in BAD and b.status in BAD:
            result.newly_failing.append(change)
        elif a is not None and a.status != "passed" and b.status == "passed":
            result.newly_passing.append(change)
        elif a is not None and a.status != "flaky" and b.status == "flaky":
            result.newly_flaky.append(change)
        elif a is not None and a.status != "known_difference" and b.status == "known_difference":
            result.newly_known_difference.append(change)
        elif a is not None and a.status == b.status == "skipped" and a.reason != b.reason:
            result.skip_reason_changed.append(change)
        elif a is not None and a.status != b.status:
            result.other_changes.append(change)
    return result


def render_diff(d: Diff) -> str:
    def status(cell: Cell | None) -> str:
        return cell.status if cell else "absent"

    lines: list[str] = []
    sections = (
        ("newly failing (regressions)", d.newly_failing),
        ("newly passing", d.newly_passing),
        ("newly flaky (passed only on a retry)", d.newly_flaky),
        ("newly known differences", d.newly_known_difference),
        ("skip reason changed", d.skip_reason_changed),
        ("other status changes", d.other_changes),
        ("added", d.added),
        ("removed", d.removed),
    )
    for title, changes in sections:
        if not changes:
            continue
        lines.append(f"{title}: {len(changes)}")
        for ch in changes:
            line = f"  {ch.name}: {status(ch.old)} -> {status(ch.new)}"
            if ch in d.skip_reason_changed and ch.old and ch.new:
                line += f" (reason: {ch.old.reason!r} -> {ch.new.reason!r})"
            elif ch.new and ch.new.status != "passed" and ch.new.detail:
                line += f": {ch.new.detail[:200]}"
            lines.append(line)
    verdict = (f"REGRESSION: {len(d.newly_failing)} case(s) newly failing" if d.regression
               else "no regression")
    lines.append(verdict)
    return visible("\n".join(lines)) + "\n"
