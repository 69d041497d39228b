"""Streams of the Engine API: docker's multiplexed frames, hijacked client connections, pipe relays, events.

Why a module of its own: ``attach``, ``exec start`` and ``logs`` all move a container's bytes to a client the
same way, and the rules that keep a container safe live here once:

- A relay always reads its pipe to the end, whether or not the client is still there: a container (or the
  monitor writing for it) must never block on a full pipe because a client went away.
- Writes to a client are serialized per connection (stdout and stderr come from two threads), and the first
  failed write marks the client gone; later writes are dropped.
- Without a TTY docker's clients expect each chunk in a frame: one byte stream id (0 stdin, 1 stdout, 2 stderr),
  three zero bytes, a big-endian 32-bit length. With a TTY the bytes go raw.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}
_READ_SIZE = 65536


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame (docker's stdcopy format)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


class Client:
    """A hijacked connection and which of the container's streams it asked for."""

    def __init__(self, sock: socket.socket, *, multiplex: bool, stdin: bool = False, stdout: bool = True,
                 stderr: bool = True, opened: bool = True) -> None:
        self.sock = sock
        self.multiplex = multiplex
        self.wants = {STDIN: stdin, STDOUT: stdout, STDERR: stderr}
        self.gone = False
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._open = threading.Event()
        if opened:
            self._open.set()

    def opened(self, ok: bool = True) -> None:
        """The connection is hijacked (the 101 answer is out): output may flow. ``ok`` False: it never will."""
        self.gone = self.gone or not ok
        self._open.set()

    def send(self, stream: int, data: bytes) -> None:
        if self.gone or not self.wants.get(stream) or not data:
            return
        payload = frame(stream, data) if self.multiplex else data
        self._open.wait()  # a relay may start before the handler has sent the 101 answer
        with self._lock:
            if self.gone:
                return
            try:
                self.sock.sendall(payload)
            except OSError:
                self.gone = True

    def read_input(self, sink: Callable[[bytes], bool]) -> None:
        """Feed what the client sends to ``sink`` until the client closes its side (or ``sink`` says stop)."""
        while True:
            try:
                data = self.sock.recv(_READ_SIZE)
            except OSError:
                return
            if not data or not sink(data):
                return

    def finish(self) -> None:
        """All output sent: end the connection both ways (other processes may hold copies of the socket, so
        only a shutdown is sure to reach the client), and release the handler thread waiting on ``done``."""
        with self._lock, contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.done.set()


def pump_output(fd: int, stream: int, clients: list[Client], drain: bool = True) -> None:
    """Copy ``fd`` to every client that asked for ``stream`` until EOF; closes ``fd``. ``drain``: read to the end
    even when every client is gone (a command must not block on its output); otherwise stop then, so the writer
    (a monitor serving a late attach) gets EPIPE and drops this reader."""
    try:
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except OSError:
                break  # EIO: a pty whose last slave closed
            if not data:
                break
            for client in clients:
                client.send(stream, data)
            if not drain and all(client.gone for client in clients):
                break
    finally:
        os.close(fd)


def pump_input(client: Client, fd: int, close_at_eof: bool = True) -> None:
    """The client's input into ``fd`` until the client stops sending. Then, as dockerd does: without a TTY ``fd``
    is closed so the reader sees end-of-file (docker's clients attach stdin "once"); with a TTY it stays open (the
    caller closes it when the command ends), so a client that detaches or goes away leaves the session running,
    and end-of-file is the ^D a user types."""

    def sink(data: bytes) -> bool:
        try:
            _write_all(fd, data)
            return True
        except OSError:
            return False

    try:
        client.read_input(sink)
    finally:
        if close_at_eof:
            with contextlib.suppress(OSError):
                os.close(fd)


def start_thread(target: Callable[..., Any], *args: Any, name: str = "refrt-relay") -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------------------------------------------ events
class EventBus:
    """docker's ``/events``: what the daemon did, to every subscriber, plus a short history for ``since``.

    Only actions done through this daemon are seen (containers started by the plain CLI on the same root are
    not); a container's ``die`` is seen when this daemon started it (it holds the monitor's status pipe)."""

    HISTORY = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[dict[str, Any]]] = []
        self._history: deque[dict[str, Any]] = deque(maxlen=self.HISTORY)

    def publish(self, kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> None:
        now = time.time_ns()
        attrs = dict(attributes or {})
        event: dict[str, Any] = {"Type": kind, "Action": action,
                                 "Actor": {"ID": actor_id, "Attributes": attrs},
                                 "scope": "local", "time": now // 1_000_000_000, "timeNano": now}
        if kind == "container":  # the pre-1.22 fields docker still sends for containers
            event.update({"status": action, "id": actor_id, "from": attrs.get("image", "")})
        with self._lock:
            self._history.append(event)
            for subscriber in self._subscribers:
                subscriber.put(event)

    def subscribe(self, since: float | None) -> tuple[queue.Queue[dict[str, Any]], list[dict[str, Any]]]:
        """A queue of future events and the past ones at or after ``since`` (seconds), atomically."""
        q: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            past = [e for e in self._history if since is not None and e["timeNano"] >= since * 1e9]
            self._subscribers.append(q)
        return q, past

    def unsubscribe(self, q: queue.Queue[dict[str, Any]]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(q)


def event_matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """docker's event filters: type, event/action, container (id or name), image, label (key or key=value)."""
    attrs = event["Actor"]["Attributes"]
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = event["Type"] in values
        elif key in ("event", "action"):
            ok = event["Action"].split(":")[0] in values or event["Action"] in values
        elif key in ("container", "volume", "network", "image"):
            ident = event["Actor"]["ID"]
            ok = (key == "image" and attrs.get("image") in values) or (event["Type"] == key and any(
                ident.startswith(v) or attrs.get("name") == v for v in values))
        elif key == "label":
            ok = all(attrs.get(k) == v if sep else k in attrs
                     for k, sep, v in (item.partition("=") for item in values))
        else:
            ok = True
        if not ok:
            return False
    return True


def peer_closed(sock: socket.socket) -> bool:
    """Whether the client closed its side (a waiting stream's way to notice a client that went away)."""
    import select

    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def event_lines(bus: EventBus, since: float | None, until: float | None,
                filters: dict[str, list[str]], alive: Callable[[], bool] = lambda: True) -> Iterator[bytes]:
    """Past events from ``since``, then live ones until ``until`` (forever without it, while ``alive()``)."""
    q, past = bus.subscribe(since)
    try:
        for event in past:
            if (until is None or event["timeNano"] <= until * 1e9) and event_matches(event, filters):
                yield json.dumps(event).encode() + b"\n"
        while until is None or time.time() < until:
            wait = 1.0 if until is None else max(0.0, min(1.0, until - time.time()))
            try:
                event = q.get(timeout=wait)
            except queue.Empty:
                if not alive():
                    return
                continue
            if event_matches(event, filters):
                yield json.dumps(event).encode() + b"\n"
    finally:
        bus.unsubscribe(q)
