"""The event journal behind ``refrt events``: what happened to containers, as docker's event messages.

Why a file: refrt's commands run in separate processes (workers, monitors), and a container's ``die`` is seen
only by its monitor. Each appends one JSON line to ``<root>/events.jsonl`` (O_APPEND; a line stays far under
PIPE_BUF, so lines never interleave); ``events`` reads and follows it. The message has docker's fields
(``Type``, ``Action``, ``Actor.ID``, ``Actor.Attributes``, ``time``, ``timeNano``, and for containers ``status``,
``id``, ``from``). The journal keeps its last half when it passes :data:`MAX_BYTES`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

JOURNAL = "events.jsonl"
MAX_BYTES = 4 << 20


def message(kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    now = time.time_ns()
    attrs = dict(attributes or {})
    event: dict[str, Any] = {"Type": kind, "Action": action, "Actor": {"ID": actor_id, "Attributes": attrs},
                             "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
    if kind == "container":
        event.update({"status": action, "id": actor_id, "from": attrs.get("image", "")})
    return event


def record(root: Path, kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> None:
    """Append one event; never fails the command that had it happen."""
    line = json.dumps(message(kind, action, actor_id, attributes), separators=(",", ":")).encode() + b"\n"
    path = Path(root) / JOURNAL
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            if os.fstat(fd).st_size > MAX_BYTES:
                _trim(path)
        finally:
            os.close(fd)


def container_event(root: Path, c: Any, action: str, **extra: str) -> None:
    """An event about container ``c``: its image, name and labels as attributes, as docker's."""
    attrs = {**(c.image_config.get("Labels") or {}), **c.spec.labels, "image": c.spec.image, "name": c.name,
             **extra}
    record(root, "container", action, c.id, attrs)


def _trim(path: Path) -> None:
    data = path.read_bytes()
    half = data[len(data) // 2:]
    cut = half.find(b"\n") + 1
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(half[cut:])
    os.replace(tmp, path)


def read(root: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events from ``offset``, and the offset after them."""
    try:
        with open(Path(root) / JOURNAL, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out, offset + end


def follow(root: Path, offset: int, stop: Callable[[], bool], interval: float = 0.1) -> Iterator[dict[str, Any]]:
    while not stop():
        with contextlib.suppress(OSError):
            if (Path(root) / JOURNAL).stat().st_size < offset:  # trimmed meanwhile: from its new beginning
                offset = 0
        events, offset = read(root, offset)
        yield from events
        time.sleep(interval)
