"""docker's ``--since``/``--until`` values (its ``timetypes.GetTimestamp``): an RFC 3339 time (with or without
fraction and zone), a date, a Unix timestamp (``1700000000.5``), or a Go duration back from now (``10m``,
``1h30m``, ``42s``)."""

from __future__ import annotations

import datetime
import re
import time

from runtime.errors import UsageError

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_time(text: str) -> float:
    """An RFC 3339 time as docker writes it (nanoseconds allowed) in seconds since the epoch."""
    value = text.strip().replace("z", "Z")
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    when = datetime.datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def timestamp(value: str, flag: str, now: float | None = None) -> float:
    """``value`` of ``flag`` in seconds since the epoch."""
    now = time.time() if now is None else now
    text = value.strip()
    if _DURATION.match(text):
        return now - sum(float(n) * _UNIT[u] for n, u in _PART.findall(text))
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(f'invalid value for "{flag}": failed to parse value as time or duration: "{value}"') \
            from None
