"""``{{name}}`` substitution. Deliberately tiny: suites need names replaced, not a template language."""

from __future__ import annotations

import re
from typing import Any

from conformance.errors import SuiteError

VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
BUILTIN_VARS = frozenset({"runtime", "target", "run_id", "unique", "tmp", "registry"})


def variables_in(value: Any) -> set[str]:
    """Every variable name referenced anywhere inside ``value`` (strings, lists, mappings)."""
    if isinstance(value, str):
        return set(VAR_RE.findall(value))
    if isinstance(value, dict):
        return set().union(*(variables_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables_in(v) for v in value)) if value else set()
    return set()


def render(value: Any, variables: dict[str, str]) -> Any:
    """Return ``value`` with every ``{{name}}`` replaced; structure and non-strings are kept."""
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise SuiteError(f"variable {{{{{name}}}}} has no value")
            return variables[name]

        return VAR_RE.sub(replace, value)
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    return value
