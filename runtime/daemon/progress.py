"""Long image operations answered as docker streams them: pull, push, build and load progress, image tars.

The work (a pull, a build ...) runs in a worker thread and hands messages to the request's thread through a
bounded queue; the request's thread writes them as chunks. Why a thread: the runtime's functions report progress
by writing text lines (``out=``) or file chunks, synchronously, and the answer must go out while they run.

Like dockerd, an error that comes before anything was sent is an ordinary error answer (status and
``{"message": ...}``), so ``docker pull`` of a missing tag prints "Error response from daemon: ...". ``hold``
keeps the first messages back until more arrive, for work whose first line is written before the step that
usually fails (``pull`` announces "Pulling from" before it asks for the manifest). An error after that goes
into the stream as docker's ``{"errorDetail": {"message": ...}, "error": ...}``; a raw stream (a tar) is cut
off instead, so the client sees a truncated body rather than a well-formed short one.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from runtime.daemon.http import Request

_END = object()


class Cancelled(Exception):
    """The client went away: the worker stops at its next message."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


Emit = Callable[[Any], None]


def error_message(message: str) -> dict[str, Any]:
    """Docker's in-stream error (the CLI prints ``message`` and exits 1)."""
    return {"errorDetail": {"message": message}, "error": message}


def _encode(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return json.dumps(item).encode() + b"\n"


def produce(request: Request, work: Callable[[Emit], None], *, hold: int = 0, raw: bool = False,
            content_type: str = "application/json",
            on_error: Callable[[BaseException], dict[str, Any]] | None = None) -> None:
    """Run ``work(emit)`` in a thread and stream what it emits (dicts as JSON lines, bytes as they are).
    ``on_error`` words an error that comes mid-stream (default: :func:`error_message`)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=64)
    cancelled = threading.Event()

    def emit(item: Any) -> None:
        while True:
            if cancelled.is_set():
                raise Cancelled()
            try:
                items.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def run() -> None:
        final: Any = _END
        try:
            work(emit)
        except Cancelled:
            return
        except BaseException as exc:  # handed to the request's thread, which answers with it
            final = _Failure(exc)
        with contextlib.suppress(Cancelled):
            emit(final)

    threading.Thread(target=run, name="refrt-api-work", daemon=True).start()
    early: list[Any] = []
    done = False
    while len(early) <= hold:
        item = items.get()
        if isinstance(item, _Failure):
            cancelled.set()
            raise item.exc  # nothing was sent yet: an ordinary error answer
        if item is _END:
            done = True
            break
        early.append(item)

    def chunks() -> Iterator[bytes]:
        yield from (_encode(item) for item in early)
        while not done:
            item = items.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                if raw:
                    raise item.exc  # the connection is closed without the last chunk: a visible truncation
                yield _encode(on_error(item.exc) if on_error else error_message(str(item.exc)))
                return
            yield _encode(item)

    try:
        request.stream(chunks(), content_type=content_type)
    finally:
        cancelled.set()


class LineSink(io.TextIOBase):
    """A text file that hands each complete line to ``on_line``: the runtime's ``out=`` progress, turned into
    stream messages by the caller. Writers in several threads are serialized (a whole line is still only whole if
    each writer writes it under its own lock, as the registry client does)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self._on_line = on_line
        self._partial = ""
        self._lock = threading.Lock()  # a pull writes from its download threads too

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self._on_line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._on_line(line)
        super().close()


class ChunkWriter(io.RawIOBase):
    """A binary file whose writes become stream chunks (``docker save``'s tar, written by the store)."""

    def __init__(self, emit: Emit, block: int = 256 * 1024) -> None:
        super().__init__()
        self._emit = emit
        self._block = block
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = bytes(data)
        self._buffer += view
        if len(self._buffer) >= self._block:
            self.flush()
        return len(view)

    def flush(self) -> None:
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()


class BodyReader(io.RawIOBase):
    """The request body as a raw binary file (``readinto``), for code that wraps it in a buffered reader."""

    def __init__(self, request: Request) -> None:
        super().__init__()
        self._reader = request.reader()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data: bytes = self._reader.read(len(view))
        view[: len(data)] = data
        return len(data)
