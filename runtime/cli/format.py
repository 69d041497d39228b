"""``--format``: the subset of Go's text/template that docker users type, shared by ps, inspect, images, stats.

Supported: ``{{.A.B}}``, ``{{json .X}}``, ``{{index .X "key"}}``, ``{{join .X ","}}``, ``{{upper .X}}``,
``{{lower .X}}``, ``{{len .X}}``, ``{{printf "%s" .X}}``, ``{{println .X}}`` and the ``table`` prefix
(a header row, columns aligned as Go's tabwriter does). Values print as Go prints them: ``true``, ``<nil>``,
``map[k:v]``, ``[a b]``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.errors import UsageError

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)


class TemplateError(UsageError):
    """The ``--format`` template is malformed or names a field that does not exist."""


def go_string(value: Any) -> str:
    """A value as Go's fmt %v prints it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _lookup(data: Any, path: str) -> Any:
    if path == ".":
        return data
    value = data
    for part in path.lstrip(".").split("."):
        if isinstance(value, Mapping):
            if part in value:
                value = value[part]
                continue
            folded = {k.lower(): k for k in value}
            if part.lower() in folded:
                value = value[folded[part.lower()]]
                continue
            raise TemplateError(f"template: can't evaluate field {part}")
        if value is None:
            return None
        raise TemplateError(f"template: can't evaluate field {part} in type {type(value).__name__}")
    return value


def _argument(data: Any, token: str) -> Any:
    if token.startswith("."):
        return _lookup(data, token)
    if token.lstrip("-").isdigit():
        return int(token)
    return token  # a quoted literal (shlex removed the quotes)


def _evaluate(data: Any, action: str) -> str:
    try:
        tokens = shlex.split(action)
    except ValueError as exc:
        raise TemplateError(f"template: bad action {{{{{action}}}}}: {exc}") from None
    if "|" in tokens:  # {{.X | json}}: the left side becomes the last argument of the right side
        bar = tokens.index("|")
        tokens = [*tokens[bar + 1 :], *tokens[:bar]]
    if not tokens:
        raise TemplateError("template: empty action")
    head, args = tokens[0], [_argument(data, t) for t in tokens[1:]]
    if head.startswith("."):
        return go_string(_lookup(data, head))
    if head == "json":
        return json.dumps(args[0] if args else data, separators=(",", ":"))
    if head == "index":
        container, *keys = args
        for key in keys:
            container = container[key] if isinstance(container, (Mapping, Sequence)) else None
        return go_string(container)
    if head == "join":
        items, sep = ([*args, " "])[:2]
        return str(sep).join(go_string(v) for v in (items or []))
    if head in ("upper", "lower"):
        text = go_string(args[0])
        return text.upper() if head == "upper" else text.lower()
    if head == "len":
        return str(len(args[0] or []))
    if head == "printf":
        fmt = str(args[0]).replace("%v", "%s").replace("%q", '"%s"')
        return fmt % tuple(go_string(a) if not isinstance(a, int) else a for a in args[1:])
    if head == "println":
        return " ".join(go_string(a) for a in args) + "\n"
    raise TemplateError(f'template: function "{head}" not defined')


def render(template: str, data: Any) -> str:
    """Expand ``template`` against ``data`` (a dict, as ``inspect`` prints it)."""
    out = []
    pos = 0
    for match in _ACTION.finditer(template):
        out.append(template[pos : match.start()])
        out.append(_evaluate(data, match.group(1)))
        pos = match.end()
    out.append(template[pos:])
    text = "".join(out)
    return text.replace("\\t", "\t").replace("\\n", "\n")


def header_for(template: str, headers: Mapping[str, str]) -> str:
    """The ``table`` header row: every ``{{.Field}}`` replaced by its column title."""

    def title(match: re.Match[str]) -> str:
        tokens = match.group(1).split()
        field = next((t for t in tokens if t.startswith(".")), "")
        name = field.lstrip(".").split(".")[0]
        return headers.get(name, name.upper())

    return _ACTION.sub(title, template).replace("\\t", "\t")


def tabulate(rows: list[str], padding: int = 3) -> str:
    """Align tab-separated rows as Go's tabwriter with docker's settings (min width, padding 3)."""
    split = [row.split("\t") for row in rows]
    widths: dict[int, int] = {}
    for cells in split:
        for i, cell in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    lines = []
    for cells in split:
        parts = [cell.ljust(widths[i] + padding) for i, cell in enumerate(cells[:-1])]
        lines.append(("".join(parts) + cells[-1]).rstrip())
    return "\n".join(lines)


def format_rows(template: str, items: Sequence[Mapping[str, Any]], headers: Mapping[str, str]) -> str:
    """ps/images/stats output: ``table ...`` gets a header and alignment, a plain template one line per item."""
    if template.startswith("table"):
        body = template[len("table") :].strip() or "\t".join(f"{{{{.{k}}}}}" for k in headers)
        rows = [header_for(body, headers)] + [render(body, item) for item in items]
        return tabulate(rows)
    return "\n".join(render(template, item) for item in items)


def print_inspected(items: Sequence[Any], template: str | None, renderer: Any = None) -> None:
    """What every ``inspect`` prints: each item through ``--format``, else all of them as one JSON array."""
    if template:
        for item in items:
            print((renderer or render)(template, item))
    else:
        print(json.dumps(list(items), indent=4))
