"""``report.html``: one self-contained page (inline CSS, no scripts, no network) - totals per suite at the top,
then what did not pass, failures first with the command, what was expected, what happened and the output."""

from __future__ import annotations

from typing import Any

import jinja2

from conformance.reports.summary import suite_totals

_ORDER = {"failed": 0, "error": 1, "skipped": 2, "passed": 3}


def render_html(document: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("conformance.reports", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    cases = sorted(document["cases"], key=lambda c: (_ORDER[c["status"]], c["suite"], c["name"]))
    return env.get_template("report.html.j2").render(doc=document, totals=suite_totals(document), cases=cases)
