"""``--format`` for every command: Go templates (:mod:`runtime.cli.gotemplate`, the one engine) plus docker's
``table`` directive (a header row, columns aligned as Go's tabwriter with docker's settings) and the
``\\t``/``\\n`` escapes docker's formatter replaces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.cli.gotemplate import TemplateError, go_string
from runtime.cli.gotemplate import render as _execute

__all__ = ["TemplateError", "format_rows", "go_string", "print_inspected", "render", "tabulate"]


def render(template: str, data: Any) -> str:
    """Expand ``template`` against ``data`` (a dict, as ``inspect`` prints it)."""
    return _execute(template.replace("\\t", "\t").replace("\\n", "\n"), data)


class _Headers(dict):  # type: ignore[type-arg]
    """The data a ``table`` header row is rendered with: every field is its column title."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__()
        self.headers = headers

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return self.headers.get(key, key.upper())


def tabulate(rows: list[str], padding: int = 3, min_width: int = 10) -> str:
    """Align tab-separated rows as Go's tabwriter with docker's settings (min width 10, padding 3)."""
    split = [line.split("\t") for row in rows for line in row.split("\n")]
    widths: dict[int, int] = {}
    for cells in split:
        for i, cell in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell) + padding, min_width)
    lines = []
    for cells in split:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
        lines.append(("".join(parts) + cells[-1]).rstrip())
    return "\n".join(lines)


def format_rows(template: str, items: Sequence[Mapping[str, Any]], headers: Mapping[str, str],
                default_table: str = "") -> str:
    """ps/images/stats output: ``table ...`` gets a header and alignment, a plain template one line per item."""
    if template.startswith("table"):
        body = template[len("table") :].strip() or default_table or "\t".join(f"{{{{.{k}}}}}" for k in headers)
        header = _execute(body.replace("\\t", "\t").replace("\\n", "\n"), _Headers(headers), header=True)
        rows = [header] + [render(body, item) for item in items]
        return tabulate(rows)
    return "\n".join(render(template, item) for item in items)


def print_inspected(items: Sequence[Any], template: str | None, renderer: Any = None) -> None:
    """What every ``inspect`` prints: each item through ``--format``, else all of them as one JSON array."""
    if template:
        for item in items:
            print((renderer or render)(template, item))
    else:
        print(json.dumps(list(items), indent=4))
