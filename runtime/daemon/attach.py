"""Starting containers for API clients: attaches made before ``start``, the exit watcher, and ``wait``.

docker's ``run`` is four requests: create, attach (a hijacked connection), wait (``condition=next-exit`` or
``removed``), start. The monitor takes the descriptors it copies the container's output to when it is spawned,
so an attach must exist before the start: it is parked here (:func:`park`) and :func:`start` hands the monitor
pipes whose other ends this daemon relays to the parked clients (:mod:`runtime.daemon.streams`), in threads.

The daemon keeps the monitor's status pipe of every container it started and a thread reading it
(:func:`_watch`), so the exit code is known even when ``--rm`` removes the container at once; ``wait`` is woken
by it. Containers this daemon did not start (started by the plain CLI, or before the daemon was restarted) are
followed through their state file instead.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.container import lifecycle, monitor
from runtime.container.state import Container, load_state
from runtime.daemon import Daemon
from runtime.daemon.streams import STDERR, STDIN, STDOUT, Client, pump_input, pump_output, start_thread


@dataclass
class ExitBoard:
    """Exits seen by the watchers: a counter per container (to tell a *next* exit) and the last code."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    count: dict[str, int] = field(default_factory=dict)
    last: dict[str, tuple[int, str]] = field(default_factory=dict)
    watched: set[str] = field(default_factory=set)  # a watcher holds the monitor's status pipe

    def watch(self, cid: str) -> None:
        with self.cond:
            self.watched.add(cid)

    def unwatch(self, cid: str) -> None:
        with self.cond:
            self.watched.discard(cid)
            self.cond.notify_all()

    def record(self, cid: str, code: int, error: str) -> None:
        with self.cond:
            self.count[cid] = self.count.get(cid, 0) + 1
            self.last[cid] = (code, error)
            self.watched.discard(cid)
            self.cond.notify_all()


def _board(daemon: Daemon) -> ExitBoard:
    board: ExitBoard = daemon.state.setdefault("exits", ExitBoard())
    return board


def _pending(daemon: Daemon) -> tuple[threading.Lock, dict[str, list[Client]]]:
    lock: threading.Lock = daemon.state.setdefault("pending_lock", threading.Lock())
    pending: dict[str, list[Client]] = daemon.state.setdefault("pending_attach", {})
    return lock, pending


def park(daemon: Daemon, container: Container, client: Client) -> None:
    """Keep ``client`` until the container starts; the caller then waits on ``client.done``."""
    lock, pending = _pending(daemon)
    with lock:
        pending.setdefault(container.id, []).append(client)


def unpark(daemon: Daemon, container_id: str, client: Client) -> None:
    lock, pending = _pending(daemon)
    with lock:
        clients = pending.get(container_id, [])
        if client in clients:
            clients.remove(client)
        if not clients:
            pending.pop(container_id, None)


def start(daemon: Daemon, container: Container, publish: Any) -> None:
    """Start ``container``, wiring its output and input to the clients parked for it, and watch its exit."""
    lock, pending = _pending(daemon)
    with lock:
        clients = pending.pop(container.id, [])
    board = _board(daemon)
    pipes: list[int] = []  # every descriptor made here, for the failure path
    theirs: list[int] = []  # the monitor's ends, closed here once it has its own copies
    attach: monitor.Attach | None = None
    outputs: list[tuple[int, int]] = []
    stdin_w = -1
    try:
        if clients:
            out_r, out_w = os.pipe()
            pipes += [out_r, out_w]
            theirs.append(out_w)
            outputs.append((out_r, STDOUT))
            err_w: int | None = None
            if not container.spec.tty:
                err_r, err_w = os.pipe()
                pipes += [err_r, err_w]
                theirs.append(err_w)
                outputs.append((err_r, STDERR))
            stdin_r: int | None = None
            if container.spec.interactive and any(c.wants[STDIN] for c in clients):
                stdin_r, stdin_w = os.pipe()
                pipes += [stdin_r, stdin_w]
                theirs.append(stdin_r)
            attach = monitor.Attach(stdin=stdin_r, stdout=out_w, stderr=err_w)
        board.watch(container.id)  # before the start: a --rm container may be gone before it returns
        handle = lifecycle.start(daemon.ctx, container, attach)
    except BaseException:
        board.unwatch(container.id)
        for fd in pipes:
            with contextlib.suppress(OSError):
                os.close(fd)
        for client in clients:
            client.finish()
        raise
    for fd in theirs:
        os.close(fd)
    publish("start")
    start_thread(_watch, daemon, container, handle, publish, name="refrt-watch")
    if not clients:
        return
    relays = [start_thread(pump_output, fd, stream, clients) for fd, stream in outputs]
    tty = container.spec.tty
    if stdin_w >= 0:
        feeder = next(c for c in clients if c.wants[STDIN])
        start_thread(pump_input, feeder, stdin_w, not tty)

    def finish_when_drained() -> None:
        for relay in relays:
            relay.join()
        for client in clients:
            client.finish()
        if tty and stdin_w >= 0:  # kept open while the container ran (see pump_input)
            with contextlib.suppress(OSError):
                os.close(stdin_w)

    start_thread(finish_when_drained)


def attach_running(container: Container, client: Client) -> bool:
    """``attach`` to a running container through its monitor's attach socket (:mod:`runtime.container.attach`):
    pipes for the monitor to write the output to (and to read input from, for a ``-i`` container), relayed to
    ``client``. Returns when the container ended or the client went away; False when no monitor listens."""
    from runtime.container import attach as monitor_attach

    sock = monitor_attach.connect(container.directory)
    if sock is None:
        return False
    tty = container.spec.tty
    mine: list[tuple[int, int]] = []
    theirs: list[int] = []
    request: dict[str, Any] = {"detach_keys": ""}  # docker's client reads the detach keys itself
    stdin_w = -1
    if client.wants[STDIN] and container.spec.interactive:
        stdin_r, stdin_w = os.pipe()
        theirs.append(stdin_r)
        request["stdin"] = True
    for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr")):
        if client.wants[stream] and not (tty and stream == STDERR):
            r, w = os.pipe()
            mine.append((r, stream))
            theirs.append(w)
            request[name] = True
    with sock:
        try:
            monitor_attach.send_request(sock, request, theirs)
        finally:
            for fd in theirs:
                os.close(fd)
        relays = [start_thread(pump_output, fd, stream, [client], False) for fd, stream in mine]
        if stdin_w >= 0:
            start_thread(pump_input, client, stdin_w)
        for relay in relays:
            relay.join()
    client.finish()
    return True


def _watch(daemon: Daemon, container: Container, handle: monitor.StartHandle, publish: Any) -> None:
    """Read the monitor's status pipe to its end: each ``exited`` is recorded (``wait``) and published (``die``);
    a restart policy's new run is a ``start``. A monitor that vanished without reporting is reconciled."""
    reported = False
    try:
        while True:
            event = handle.next_event()
            kind = event.get("event")
            if kind == "exited":
                code = int(event.get("code", 0))
                _board(daemon).record(container.id, code, str(event.get("remove_error") or ""))
                publish("die", exitCode=str(code))
                reported = True
                if container.spec.auto_remove and not container.directory.exists():
                    publish("destroy")
            elif kind == "started":
                reported = False
                publish("start")
    except monitor.MonitorLost:
        pass
    finally:
        handle.close()
    if not reported:
        if container.directory.exists():
            lifecycle.reconcile(daemon.ctx, container)
        state = load_state(container.directory)
        _board(daemon).record(container.id, state.exit_code, state.error)
        publish("die", exitCode=str(state.exit_code))


def _active(status: str) -> bool:
    return status in ("running", "paused")


def wait(daemon: Daemon, container: Container, condition: str,
         alive: Callable[[], bool] = lambda: True) -> tuple[int, str] | None:
    """docker's wait conditions: ``not-running`` (now, if it is not), ``next-exit``, ``removed``. None when
    ``alive()`` says the client gave up first."""
    board = _board(daemon)
    cid, directory = container.id, container.directory
    with board.cond:
        seen = board.count.get(cid, 0)
    state = load_state(directory)
    if condition == "not-running" and not _active(state.status) and not (
            state.status == "created" and state.monitor_pid):
        return state.exit_code, state.error
    first_finish = state.finished_at
    last = (state.exit_code, state.error)
    exited = False
    while True:
        with board.cond:
            if board.count.get(cid, 0) <= seen:
                board.cond.wait(0.05)
            if board.count.get(cid, 0) > seen:
                last, exited = board.last[cid], True
            watched = cid in board.watched
        if not directory.exists() and not watched:  # (--rm: the monitor removes it before it reports the exit)
            return last
        if not exited:
            state = load_state(directory)
            if state.status == "exited" and state.finished_at != first_finish:
                last, exited = (state.exit_code, state.error), True
            elif _active(state.status) and state.monitor_pid and not monitor.is_alive(
                    state.monitor_pid, state.monitor_start):
                lifecycle.reconcile(daemon.ctx, container)
        if exited and condition != "removed":
            _settle(container)
            return last
        if not alive():
            return None


def _settle(container: Container, timeout: float = 5.0) -> None:
    """Let the monitor finish its exit (it reports before it is gone): after ``wait``, ``rm`` must not find it
    still there and refuse, as it never does with docker."""
    import time

    deadline = time.monotonic() + timeout
    state = load_state(container.directory)
    while monitor.is_alive(state.monitor_pid, state.monitor_start) and time.monotonic() < deadline:
        time.sleep(0.002)
