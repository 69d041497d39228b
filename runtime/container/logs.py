"""The container log: one JSON object per line, ``{"stream", "log", "time"}``, like docker's json-file driver.

Bytes that are not UTF-8 survive the round trip (surrogateescape, which JSON carries as \\udcXX escapes), so
``logs`` gives back exactly what the container wrote.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.container.state import now_iso


@dataclass
class Record:
    stream: str
    data: bytes
    time: str


class LogWriter:
    """Appends records; each output line becomes one record (a partial last line becomes its own)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes) -> None:
        stamp = now_iso()
        lines = data.splitlines(keepends=True)
        payload = b"".join(
            json.dumps({"stream": stream, "log": line.decode("utf-8", "surrogateescape"), "time": stamp}).encode()
            + b"\n"
            for line in lines
        )
        os.write(self.fd, payload)

    def close(self) -> None:
        os.close(self.fd)


def _parse(line: bytes) -> Record | None:
    try:
        obj = json.loads(line)
        return Record(obj["stream"], obj["log"].encode("utf-8", "surrogateescape"), obj.get("time", ""))
    except (ValueError, KeyError):
        return None


def read_records(path: Path, tail: int | None = None) -> tuple[list[Record], int]:
    """All (or the last ``tail``) complete records, and the file offset after them (for following)."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return [], 0
    end = content.rfind(b"\n") + 1
    lines = content[:end].splitlines()
    selected: Iterator[bytes] | deque[bytes] = iter(lines) if tail is None else deque(lines, maxlen=max(tail, 0))
    records = [r for r in (_parse(line) for line in selected) if r is not None]
    return records, end


def follow(path: Path, offset: int, still_running: Callable[[], bool], interval: float = 0.05) -> Iterator[Record]:
    """Records appended after ``offset`` until the container stops (then what is left is drained)."""
    buffer = b""
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read()
            if chunk:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    record = _parse(line)
                    if record is not None:
                        yield record
                continue
            if not still_running():
                rest = f.read()
                for line in (buffer + rest).split(b"\n"):
                    record = _parse(line) if line else None
                    if record is not None:
                        yield record
                return
            time.sleep(interval)


def emit(record: Record, timestamps: bool = False) -> None:
    """Write a record to our own stdout or stderr, as it came from the container."""
    out = sys.stderr.buffer if record.stream == "stderr" else sys.stdout.buffer
    if timestamps:
        out.write(record.time.encode() + b" ")
    out.write(record.data)
    out.flush()
