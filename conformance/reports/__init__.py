"""Reports of a run, all rendered from one results document (the content of ``results.json``):
``junit.xml`` (CI systems), ``results.json`` (machines, merge/diff), ``report.html`` (people, offline),
``summary.md`` (pull requests, chat) and the terminal table printed at the end of the run.

``results.json`` keeps every text exactly as the target returned it (JSON escapes what it must); every other
format is rendered from the document through :func:`conformance.reports.text.visible_tree`, so nothing a
container prints can make ``junit.xml`` or ``report.html`` unreadable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conformance.errors import ReportError
from conformance.reports.html import render_html
from conformance.reports.junit import render_junit
from conformance.reports.status import STATUSES
from conformance.reports.summary import markdown_summary, suite_totals, terminal_table


def write_all(document: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """Write every report format into ``report_dir`` and return their paths by format."""
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": report_dir / "results.json",
            "junit": report_dir / "junit.xml",
            "html": report_dir / "report.html",
            "markdown": report_dir / "summary.md",
        }
        paths["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        paths["junit"].write_bytes(render_junit(document))
        paths["html"].write_text(render_html(document), encoding="utf-8")
        paths["markdown"].write_text(markdown_summary(document), encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write reports to {report_dir}: {exc.strerror}") from None
    return paths


def load_results(path: Path) -> dict[str, Any]:
    """Read a ``results.json``; a missing or malformed file is a :class:`ReportError`."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict) or document.get("format") != "conformance-results/1":
        raise ReportError(f"{path}: not a conformance results file (format conformance-results/1)")
    return document


__all__ = ["STATUSES", "load_results", "markdown_summary", "render_html", "render_junit", "suite_totals",
           "terminal_table", "write_all"]
