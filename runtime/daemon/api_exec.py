"""The exec part of the Engine API: create, start (hijacked, or detached), resize, inspect.

An exec is created as a record only (docker's two steps); ``start`` runs it with
:func:`runtime.container.exec.spawn` on pipes (or a pty of the container's) that this daemon relays to the
hijacked connection. The exit code is recorded *before* the connection is closed: docker's client asks for it
(``GET /exec/{id}/json``) as soon as the stream ends. A command that cannot start (not found: 127, not
executable: 126, as ``refrt exec`` exits) ends the stream with the error on stderr and that exit code.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from runtime.container.state import Container, find
from runtime.daemon import Daemon
from runtime.daemon.api_containers import RAW_STREAM, lookup, publisher, set_window_fd
from runtime.daemon.http import ApiError, Handler, Request, Response
from runtime.daemon.streams import STDERR, STDOUT, Client, pump_input, pump_output, start_thread
from runtime.errors import RefrtError

MAX_FINISHED = 1000


@dataclass
class ExecSession:
    id: str
    container_id: str
    argv: list[str]
    env: list[str]
    workdir: str
    user: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    privileged: bool = False
    started: bool = False
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    master: int = -1
    window: tuple[int, int] = (0, 0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.id, "ContainerID": self.container_id, "Running": self.running,
            "ExitCode": self.exit_code, "Pid": self.pid if self.running else 0, "CanRemove": False,
            "DetachKeys": "", "OpenStdin": self.stdin, "OpenStdout": self.stdout, "OpenStderr": self.stderr,
            "ProcessConfig": {"tty": self.tty, "entrypoint": self.argv[0], "arguments": self.argv[1:],
                              "privileged": self.privileged, "user": self.user},
        }

    def set_window(self, rows: int, cols: int) -> None:
        """Resize now, or as soon as the pty exists (the client may ask before the command started)."""
        with self.lock:
            self.window = (rows, cols)
            if self.master >= 0:
                set_window_fd(self.master, rows, cols)

    def take_master(self, master: int) -> None:
        with self.lock:
            self.master = master
            if self.window != (0, 0):
                set_window_fd(master, *self.window)

    def finished(self, code: int) -> None:
        with self.lock:
            self.exit_code, self.running = code, False
            if self.master >= 0:
                os.close(self.master)
                self.master = -1


def _sessions(daemon: Daemon) -> dict[str, ExecSession]:
    sessions: dict[str, ExecSession] = daemon.state.setdefault("execs", {})
    return sessions


def _wait_exit(pid: int) -> int:
    status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _detached(s: ExecSession, pid: int, master: int) -> None:
    """A detached exec until it ends. With ``Tty`` it has a terminal, as under dockerd (a shell there waits for
    input instead of reading EOF): we hold the master, read what it prints (nobody sees it) and resize it."""
    if master >= 0:
        s.take_master(master)
        start_thread(_drain, os.dup(master), name="refrt-exec-drain")
    s.finished(_wait_exit(pid))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # EIO: the last process on the pty has gone
        pass
    finally:
        os.close(fd)


def _launch(daemon: Daemon, c: Container, s: ExecSession, client: Client | None) -> None:
    """Run the command; relay its streams to ``client`` (None: detached) until it ends; record its exit."""
    from runtime.container.exec import spawn

    mine: list[int] = []  # our ends, relayed
    theirs: list[int] = []  # the command's ends, closed here once it has them
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    theirs.append(null)
    stdio = (null, null, null)
    if client is not None and not s.tty:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine += [out_r, err_r]
        theirs += [out_w, err_w]
        stdin = null
        if s.stdin:
            stdin, in_w = os.pipe()
            theirs.append(stdin)
            mine.append(in_w)
        stdio = (stdin, out_w, err_w)
    try:
        proc = spawn(daemon.ctx, c, s.argv, env=s.env, stdio=stdio, workdir=s.workdir, user=s.user,
                     tty=s.tty, keep_fds_only=True)
    except RefrtError as exc:
        for fd in mine + theirs:
            os.close(fd)
        s.finished(exc.exit_code if exc.exit_code in (126, 127) else 126)
        if client is not None:
            client.wants[STDERR] = True
            client.send(STDERR, f"OCI runtime exec failed: {exc}\r\n".encode())
            client.finish()
        return
    for fd in theirs:
        os.close(fd)
    with s.lock:
        s.pid, s.running = proc.pid, True
    if client is None:
        start_thread(lambda: _detached(s, proc.pid, proc.master), name="refrt-exec")
        return
    inputs: list[threading.Thread] = []
    if s.tty:
        s.take_master(proc.master)
        relays = [start_thread(pump_output, os.dup(proc.master), STDOUT, [client])]
        if s.stdin:
            typed = os.dup(proc.master)
            mine.append(typed)
            inputs.append(start_thread(pump_input, client, typed, False))
    else:
        relays = [start_thread(pump_output, mine[0], STDOUT, [client]),
                  start_thread(pump_output, mine[1], STDERR, [client])]
        if s.stdin:
            inputs.append(start_thread(pump_input, client, mine[2]))
    for relay in relays:
        relay.join()
    s.finished(_wait_exit(proc.pid))
    client.finish()
    for thread in inputs:
        thread.join(5)
    if s.tty and s.stdin:
        os.close(mine[-1])  # the pty input, kept open by pump_input


def routes(daemon: Daemon) -> list[tuple[str, str, Handler]]:
    def session(request: Request) -> ExecSession:
        s = _sessions(daemon).get(request.params["id"])
        if s is None:
            raise ApiError(404, f"No such exec instance: {request.params['id']}")
        return s

    def create(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        body = request.json()
        argv = body.get("Cmd") or []
        if isinstance(argv, str):
            argv = [argv]
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ApiError(400, "No exec command specified")
        if body.get("Privileged"):
            raise ApiError(400, "refrt does not support exec --privileged (the exec gets the container's privileges)")
        if not c.state.running:
            raise ApiError(409, f"Container {c.id} is not running")
        if c.state.paused:
            raise ApiError(409, f"Container {c.id} is paused, unpause the container before exec")
        s = ExecSession(id=secrets.token_hex(32), container_id=c.id, argv=list(argv), env=body.get("Env") or [],
                        workdir=body.get("WorkingDir") or "", user=body.get("User") or "",
                        tty=bool(body.get("Tty")), stdin=bool(body.get("AttachStdin")),
                        stdout=bool(body.get("AttachStdout")), stderr=bool(body.get("AttachStderr")),
                        privileged=bool(body.get("Privileged")))
        sessions = _sessions(daemon)
        if len(sessions) > MAX_FINISHED:  # docker forgets execs with their container; we forget old finished ones
            for old in [k for k, v in sessions.items() if v.exit_code is not None][: len(sessions) // 2]:
                sessions.pop(old, None)
        sessions[s.id] = s
        publisher(daemon, c)("exec_create: " + " ".join(s.argv), execID=s.id)
        return Response({"Id": s.id}, status=201)

    def start(request: Request) -> Response | None:
        s = session(request)
        body = request.json()
        with s.lock:
            if s.started:
                raise ApiError(409, f"Error: Exec command {s.id} is already running")
            s.started = True
        if "Tty" in body:
            s.tty = bool(body["Tty"])
        c = find(daemon.paths, s.container_id)
        publisher(daemon, c)("exec_start: " + " ".join(s.argv), execID=s.id)
        if body.get("Detach"):
            _launch(daemon, c, s, None)
            return Response(status=200, body=b"", content_type="text/plain")
        sock = request.hijack(RAW_STREAM)
        client = Client(sock, multiplex=not s.tty, stdin=s.stdin, stdout=s.stdout, stderr=s.stderr)
        try:
            _launch(daemon, c, s, client)
        finally:
            client.finish()
            publisher(daemon, c)("exec_die", execID=s.id, exitCode=str(s.exit_code))
        return None

    def resize(request: Request) -> Response:
        s = session(request)
        s.set_window(request.int_arg("h", 0) or 0, request.int_arg("w", 0) or 0)
        return Response(status=200, body=b"", content_type="text/plain")

    def inspect(request: Request) -> Response:
        return Response(session(request).inspect())

    return [
        ("POST", "/containers/{id}/exec", create),
        ("POST", "/exec/{id}/start", start),
        ("POST", "/exec/{id}/resize", resize),
        ("GET", "/exec/{id}/json", inspect),
    ]

