"""docker's ``network ls`` filters, for ``refrt network ls`` and the daemon's ``GET /networks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.errors import UsageError

BUILTIN = ("bridge", "host", "none")


def ls_filter(values: list[str] | None) -> Callable[[dict[str, Any]], bool]:
    """docker's ``network ls`` filters: label=k[=v], type=custom|builtin, name= (substring), id= (prefix),
    driver=. Several values of one key are alternatives; different keys must all hold."""
    wanted: dict[str, list[str]] = {}
    for item in values or []:
        key, _, value = item.partition("=")
        if key not in ("label", "type", "name", "id", "driver"):
            raise UsageError(f"invalid filter {key!r}")
        if key == "type" and value not in ("custom", "builtin"):
            raise UsageError(f"invalid filter: 'type'='{value}'")
        wanted.setdefault(key, []).append(value)

    def one(key: str, value: str, row: dict[str, Any]) -> bool:
        if key == "label":
            k, eq, v = value.partition("=")
            return k in row["Labels"] and (not eq or row["Labels"][k] == v)
        if key == "type":
            return (row["Name"] in BUILTIN) == (value == "builtin")
        if key == "name":
            return value in row["Name"]
        if key == "id":
            return bool(row["ID"].startswith(value))
        return bool(row["Driver"] == value)

    return lambda row: all(any(one(k, v, row) for v in vs) for k, vs in wanted.items())
