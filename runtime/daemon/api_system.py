"""The system part of the Engine API: ``/_ping``, ``/version``, ``/info``, ``/events``.

``/version`` and ``/info`` answer with the very data ``refrt version`` and ``refrt info`` print
(:mod:`runtime.sysinfo`), so the CLI and the daemon cannot disagree. ``/events`` streams what
:class:`runtime.daemon.streams.EventBus` collects: container create, start, attach, die, destroy, stop, kill,
pause, unpause, rename, resize, restart and exec_create/exec_start/exec_die, for actions done through this
daemon, and the health checks' events from the containers' monitors (relayed from their journal).
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from runtime.daemon import Daemon
from runtime.daemon.http import API_VERSION, MIN_API_VERSION, ApiError, Handler, Request, Response
from runtime.daemon.streams import EventBus, event_lines, peer_closed


def events(daemon: Daemon) -> EventBus:
    """The daemon's one event bus (made on first use)."""
    bus: EventBus = daemon.state.setdefault("events", EventBus())
    return bus


def relay_monitor_events(daemon: Daemon, interval: float = 0.5) -> None:
    """What only a container's monitor sees, from the journal it writes (runtime.container.events) to the bus:
    ``health_status: ...`` and the health probes' ``exec_*`` events (those carry an execID; the CLI's own exec
    events have none, and the daemon's are on the bus already). From the daemon's start on, at the time the
    relay reads them (within ``interval``)."""
    import os
    import threading

    from runtime.container import events as journal

    root = daemon.paths.root
    try:
        offset = os.stat(root / journal.JOURNAL).st_size  # lines are appended whole: this is a line boundary
    except OSError:
        offset = 0
    bus = events(daemon)

    def relay() -> None:
        for event in journal.follow(root, offset, lambda: not root.is_dir(), interval):  # until the root goes
            action = str(event.get("Action") or "")
            actor = event.get("Actor") or {}
            attributes = actor.get("Attributes") or {}
            if action.startswith("health_status") or (action.startswith("exec_") and "execID" in attributes):
                bus.publish(str(event.get("Type") or "container"), action, str(actor.get("ID") or ""), attributes)

    threading.Thread(target=relay, name="event-relay", daemon=True).start()


def _when(value: str | None) -> float | None:
    """docker's ``since``/``until``: Unix seconds (with fractions) or an RFC 3339 time."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        main = value.rstrip("Z").split(".")[0]
        return float(calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        raise ApiError(400, f"invalid time {value!r}: use Unix seconds or RFC 3339") from None


def normalized_filters(request: Request) -> dict[str, list[str]]:
    """docker sends ``filters`` as ``{"key": {"value": true}}`` (or, from old clients, ``{"key": ["value"]}``)."""
    raw = request.json_arg("filters") or {}
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid filters: expected a JSON object")
    result: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            result[key] = [k for k, on in value.items() if on]
        elif isinstance(value, list):
            result[key] = [str(v) for v in value]
        else:
            raise ApiError(400, f"invalid filter {key!r}")
    return result


def routes(daemon: Daemon) -> list[tuple[str, str, Handler]]:
    from runtime import sysinfo

    relay_monitor_events(daemon)

    def ping(request: Request) -> Response:
        return Response(b"OK", content_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
                                 "Builder-Version": "1"})

    def version(request: Request) -> Response:
        data: dict[str, Any] = dict(sysinfo.version_data()["Server"])
        data["MinAPIVersion"] = MIN_API_VERSION
        data["ApiVersion"] = API_VERSION
        data["Components"] = [{"Name": "Engine", "Version": data["Version"],
                               "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                                           "GitCommit": "", "GoVersion": data["GoVersion"], "Os": data["Os"],
                                           "Arch": data["Arch"], "KernelVersion": data["KernelVersion"],
                                           "BuildTime": "", "Experimental": "false"}}]
        data["Platform"] = {"Name": "refrt"}
        return Response(data)

    def info(request: Request) -> Response:
        data = sysinfo.info_data(daemon.ctx)
        data.setdefault("Plugins", {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Log": ["json-file"]})
        data.setdefault("RegistryConfig", {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {},
                                           "Mirrors": []})
        data.setdefault("Swarm", {"LocalNodeState": "inactive"})
        data.setdefault("LoggingDriver", "json-file")
        data.setdefault("IndexServerAddress", "https://index.docker.io/v1/")
        data.setdefault("Warnings", [])
        return Response(data)

    def event_stream(request: Request) -> None:
        filters = normalized_filters(request)
        since, until = _when(request.arg("since")), _when(request.arg("until"))
        connection = request.handler.connection
        request.stream(event_lines(events(daemon), since, until, filters, lambda: not peer_closed(connection)))

    return [
        ("GET", "/_ping", ping),
        ("GET", "/version", version),
        ("GET", "/info", info),
        ("GET", "/events", event_stream),
    ]
