"""Values and functions of Go templates as docker runs them: how Go prints a value (``%v``, ``map[k:v]``,
``{v1 v2}``, ``<nil>``, ``<no value>``), truth, comparisons, ``printf``'s verbs, and the function table (Go's
builtins plus docker's ``json``, ``split``, ``join``, ``title``, ``lower``, ``upper``, ``pad``, ``truncate``).
The parser and evaluator are in :mod:`runtime.cli.gotemplate`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from runtime.errors import UsageError

MAP_FIELDS = frozenset({"Labels", "Networks", "ExposedPorts", "Volumes", "Ports", "Options", "DriverOpts",
                        "Sysctls", "StorageOpt", "Tmpfs", "Data", "Annotations", "Containers"})


class TemplateError(UsageError):
    """A template that does not parse, or fails while it runs: one line, exit 1 (as docker's CLI)."""

    exit_code = 1


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()
_GO_FIELD = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")


# -- values as Go prints and compares them -------------------------------------------------------------------
def is_map(value: Mapping[str, Any], name: str = "") -> bool:
    """Go maps and structs both arrive as dicts: a struct's keys are exported Go field names, so a key that is not
    one (``8080/tcp``, ``com.example.label``) makes it a map, as do string values and the known map fields."""
    return (name in MAP_FIELDS or not value or all(isinstance(v, str) for v in value.values())
            or not all(_GO_FIELD.match(str(k)) for k in value))


def go_string(value: Any) -> str:
    """A value as Go's fmt %v prints it."""
    if value is NO_VALUE:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, Mapping):
        if is_map(value):
            return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
        return "{" + " ".join(go_string(v) for v in value.values()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _go_float(value: float) -> str:
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    return text.replace("e+0", "e+0").replace("e-0", "e-0")


def truth(value: Any) -> bool:
    if value is NO_VALUE or value is None:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]string" if all(isinstance(v, str) for v in value) else "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]string" if value and all(isinstance(v, str) for v in value.values()) \
            else "map[string]interface {}"
    return "<nil>"


_VERB = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


def sprintf(fmt: str, *args: Any) -> str:
    """Go's fmt.Sprintf for the verbs templates use: %s %v %d %q %x %X %f %e %g %t %T %c %o %b %%."""
    values = list(args)
    out: list[str] = []
    pos = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[pos:match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if not values:
            out.append(f"%!{verb}(MISSING)")
            continue
        value = values.pop(0)
        out.append(_format_one(value, flags, width, precision, verb))
    out.append(fmt[pos:])
    if values:
        out.append("%!(EXTRA " + ", ".join(f"{go_type(v)}={go_string(v)}" for v in values) + ")")
    return "".join(out)


def _format_one(value: Any, flags: str, width: str | None, precision: str | None, verb: str) -> str:
    spec = flags.replace("#", "") + (width or "") + (f".{precision}" if precision else "")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if verb == "v" or (verb == "s" and isinstance(value, (str, list, dict, type(None)))) or \
            (verb == "s" and value is NO_VALUE):
        text = go_string(value)
        return _pad(text, flags, width)
    if verb == "q" and isinstance(value, str):
        return _pad(json.dumps(value, ensure_ascii=False), flags, width)
    if verb == "T":
        return _pad(go_type(value), flags, width)
    if verb == "t" and isinstance(value, bool):
        return _pad(go_string(value), flags, width)
    if verb in "dxXobc" and isinstance(value, int) and not isinstance(value, bool):
        return format(value, spec + ("d" if verb == "d" else verb)) if verb != "c" else chr(value)
    if verb in "feEgG" and number:
        return format(float(value), spec + verb)
    return f"%!{verb}({go_type(value)}={go_string(value)})"


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width:
        return text
    return text.ljust(int(width)) if "-" in flags else text.rjust(int(width))


# -- evaluation ----------------------------------------------------------------------------------------------
def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            if key in item:
                item = item[key]
            else:
                item = "" if is_map(item) and all(isinstance(v, str) for v in item.values()) else None
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise TemplateError(f"error calling index: index out of range: {key}")
            item = item[key] if not isinstance(item, str) else ord(item[key])
        elif item is None or item is NO_VALUE:
            raise TemplateError("error calling index: index of untyped nil")
        else:
            raise TemplateError(f"error calling index: can't index item of type {go_type(item)}")
    return item


def _length(item: Any) -> int:
    if isinstance(item, (str, list, tuple, dict)):
        return len(item)
    raise TemplateError(f"error calling len: len of type {go_type(item)}")


def _compare(op: str, a: Any, *others: Any) -> bool:
    if op == "eq":
        return any(_equal(a, b) for b in others)
    if len(others) != 1:
        raise TemplateError(f"wrong number of args for {op}: want 2 got {len(others) + 1}")
    b = others[0]
    if op == "ne":
        return not _equal(a, b)
    if not (_comparable_kind(a) and _comparable_kind(a) == _comparable_kind(b)):
        raise TemplateError(f"error calling {op}: incompatible types for comparison")
    return bool({"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op])


def _comparable_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return ""


def _equal(a: Any, b: Any) -> bool:
    kind_a, kind_b = _comparable_kind(a), _comparable_kind(b)
    if kind_a and kind_b:
        return kind_a == kind_b and bool(a == b)
    if a is None or b is None or a is NO_VALUE or b is NO_VALUE:
        return (a is None or a is NO_VALUE) and (b is None or b is NO_VALUE)
    raise TemplateError("error calling eq: incompatible types for comparison")


def _sprint(*args: Any) -> str:
    out = ""
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out += " "
        out += go_string(arg)
    return out


def _title(text: str) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), text)


def _json(value: Any) -> str:
    """docker's ``json``: Go's encoder, which writes a map's keys sorted and a struct's in field order."""
    return json.dumps(_go_order(None if value is NO_VALUE else value), ensure_ascii=False, separators=(",", ":"))


def _go_order(value: Any) -> Any:
    if isinstance(value, Mapping):
        items = sorted(value.items()) if is_map(value) else value.items()
        return {k: _go_order(v) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [_go_order(v) for v in value]
    return value


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "split": lambda s, sep: str(s).split(sep) if sep else list(str(s)),
    "join": lambda items, sep: str(sep).join(go_string(v) for v in (items or [])),
    "title": lambda s: _title(str(s)),
    "lower": lambda s: go_string(s).lower(),
    "upper": lambda s: go_string(s).upper(),
    "pad": lambda s, before, after: " " * int(before) + go_string(s) + " " * int(after),
    "truncate": lambda s, n: go_string(s)[: int(n)],
    "index": _index,
    "len": _length,
    "not": lambda v: not truth(v),
    "printf": lambda fmt, *a: sprintf(str(fmt), *a),
    "print": _sprint,
    "println": lambda *a: " ".join(go_string(v) for v in a) + "\n",
    "eq": lambda a, *b: _compare("eq", a, *b),
    "ne": lambda a, *b: _compare("ne", a, *b),
    "lt": lambda a, *b: _compare("lt", a, *b),
    "le": lambda a, *b: _compare("le", a, *b),
    "gt": lambda a, *b: _compare("gt", a, *b),
    "ge": lambda a, *b: _compare("ge", a, *b),
    "urlquery": lambda *a: urllib.parse.quote_plus(_sprint(*a)),
}


# docker renders a ``table`` header with its own functions made identities: ``{{.Status | lower}}`` -> STATUS
HEADER_FUNCS: dict[str, Callable[..., Any]] = {
    **FUNCS,
    **dict.fromkeys(("json", "title", "lower", "upper"), lambda v: v),
    "split": lambda v, _sep: v, "join": lambda v, _sep: v, "pad": lambda v, _a, _b: v, "truncate": lambda v, _n: v,
}
