"""``refrt events``: docker's event stream from refrt's journal (:mod:`runtime.container.events`).

Without ``--since`` only new events are shown, and without ``--until`` the command follows the journal until
it is interrupted, as docker's. Filters: ``container`` (id or name), ``event``, ``image``, ``label`` (key or
key=value), ``type``; the same key given twice matches either value, different keys must all match.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import TYPE_CHECKING, Any

from runtime.errors import UsageError

if TYPE_CHECKING:
    from runtime.cli import Context

FILTERS = ("container", "event", "image", "label", "type")


def _filters(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        if key not in FILTERS:
            raise UsageError(f"invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    return out


def matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    attrs = event["Actor"]["Attributes"]
    for key, values in filters.items():
        if key == "type":
            ok = event["Type"] in values
        elif key == "event":
            ok = event["Action"].split(":")[0] in values
        elif key == "container":
            ok = event["Type"] == "container" and any(
                event["Actor"]["ID"].startswith(v) or attrs.get("name") == v for v in values)
        elif key == "image":
            ok = attrs.get("image") in values or event.get("from") in values
        else:
            ok = any(attrs.get(k) == v if sep else k in attrs
                     for k, sep, v in (value.partition("=") for value in values))
        if not ok:
            return False
    return True


def line(event: dict[str, Any]) -> str:
    """docker's default line: time, type, action, actor id and its attributes."""
    nano = int(event["timeNano"])
    stamp = datetime.datetime.fromtimestamp(nano // 1_000_000_000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(event["Actor"]["Attributes"].items()))
    return f"{stamp}.{nano % 1_000_000_000:09d}Z {event['Type']} {event['Action']} {event['Actor']['ID']}" + (
        f" ({attrs})" if attrs else "")


def cmd_events(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import render
    from runtime.cli.timefilter import timestamp
    from runtime.container import events

    now = time.time()
    since = timestamp(args.since, "--since", now) if args.since else None
    until = timestamp(args.until, "--until", now) if args.until else None
    filters = _filters(args.filter)
    root = ctx.paths.root

    def show(event: dict[str, Any]) -> None:
        if not matches(event, filters):
            return
        print(render(args.format, event) if args.format else line(event), flush=True)

    past, offset = events.read(root)
    for event in past:
        when = event["timeNano"] / 1e9
        if since is not None and when >= since and (until is None or when <= until):
            show(event)
    if until is not None and until <= time.time():
        return 0
    for event in events.follow(root, offset, lambda: until is not None and time.time() > until):
        if until is None or event["timeNano"] / 1e9 <= until:
            show(event)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("events", help="get real time events from the server")
    p.set_defaults(func=cmd_events)
    p.add_argument("-f", "--filter", action="append", default=[], help="filter output based on conditions provided")
    p.add_argument("--format", default="", help="format the output using the given Go template")
    p.add_argument("--since", default="", help="show all events created since timestamp")
    p.add_argument("--until", default="", help="stream events until this timestamp")
