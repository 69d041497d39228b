"""``report.html``: one self-contained page (inline CSS, no scripts, no network) - totals per suite at the top,
then every case, failures first with the command, what was expected, what happened and the output; flaky cases
with their attempts and known differences with the driver's note, each apart from plain passes and failures."""

from __future__ import annotations

from typing import Any

import jinja2

from conformance.reports.status import HEADINGS, STATUSES, detail
from conformance.reports.summary import suite_totals
from conformance.reports.text import visible_tree

_ORDER = {"failed": 0, "error": 1, "known_difference": 2, "flaky": 3, "skipped": 4, "passed": 5}


def render_html(document: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.PackageLoader("conformance.reports", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    document = visible_tree(document)
    cases = sorted(document["cases"], key=lambda c: (_ORDER[c["status"]], c["suite"], c["name"]))
    return env.get_template("report.html.j2").render(doc=document, totals=suite_totals(document), cases=cases,
                                                     statuses=STATUSES, headings=HEADINGS, detail=detail)
