"""The guest side of :class:`conformance.targets.agent.CommandAgent`: one long-lived process on the target that runs
the harness's commands, so that a command costs a ``fork`` instead of an SSH channel, a login shell and, for refrt's
thin client, a new interpreter.

Why: in a TCG guest every SSH exec costs 0.1-0.2 s before the command starts and ``python3 -I -S`` another
0.2-0.4 s; a suite run sends hundreds of each. This file is sent as the program text of one ``python3 -I -S -c``
over one SSH channel (standard library only, Python 3.9 and later) and talks JSON lines over that channel's
stdin and stdout:

    harness → agent   {"id": N, "cmd": "shell text", "stdin": "<base64>"}
    agent → harness   {"id": N, "pid": P}, {"id": N, "out"|"err": "<base64>"} ..., {"id": N, "exit": CODE}

Each command runs in a session (and process group) of its own, with its stdin, stdout and stderr on pipes, as
under sshd: ``/bin/sh -c TEXT``. A command that is exactly a ``python3 -I -S SCRIPT ARGS...`` argument list (the
text is ``shlex.join`` of it) runs SCRIPT in a child forked from this interpreter, which already started and runs
with those same flags: what the new interpreter would have done, without its start-up. An exit by signal N is
reported as 128+N (what the shell wrapper reported). After a command exits its output is read until EOF, or for
2 s at most when a background process keeps the pipe open. Several commands may run at once (the harness kills a
timed-out one with another command). The agent exits when its stdin closes (the SSH connection went away).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import shlex
import signal
import sys
import time
from typing import Any

LINGER = 2.0


def _python_script(cmd: str) -> list[str] | None:
    """The ``[SCRIPT, ARGS...]`` of a pure ``python3 -I -S SCRIPT ARGS...`` command text, else None."""
    if not cmd.startswith("python3 -I -S "):
        return None
    try:
        argv = shlex.split(cmd)
    except ValueError:
        return None
    if shlex.join(argv) != cmd or len(argv) < 4 or argv[3].startswith("-"):
        return None
    return argv[3:]


def _child(cmd: str, fds: tuple[int, int, int]) -> None:
    """In the forked child: its own session, the pipes on 0, 1, 2, then the command. Never returns."""
    code = 127
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        script = _python_script(cmd)
        if script is None:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execv("/bin/sh", ["/bin/sh", "-c", cmd])
        import runpy

        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own fds, as a new interpreter has
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        sys.argv = script
        try:
            runpy.run_path(script[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # what the interpreter does with an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    finally:
        os._exit(code & 0xFF)


class Agent:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.inbox = b""
        self.commands: dict[int, dict[str, Any]] = {}
        self.selector.register(0, selectors.EVENT_READ, ("inbox", None))

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            try:
                data = data[os.write(1, data):]
            except BlockingIOError:
                time.sleep(0.001)

    def start(self, request: dict[str, Any]) -> None:
        ident = request["id"]
        pipes = [os.pipe(), os.pipe(), os.pipe()]
        child_fds = (pipes[0][0], pipes[1][1], pipes[2][1])
        pid = os.fork()
        if pid == 0:
            _child(request["cmd"], child_fds)
        for fd in child_fds:
            os.close(fd)
        state: dict[str, Any] = {"pid": pid, "open": 2, "exit": None, "exited_at": None,
                 "stdin": base64.b64decode(request.get("stdin") or ""), "pidfd": os.pidfd_open(pid)}
        self.commands[ident] = state
        self.send({"id": ident, "pid": pid})
        for name, fd in (("out", pipes[1][0]), ("err", pipes[2][0])):
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, (name, ident))
        self.selector.register(state["pidfd"], selectors.EVENT_READ, ("exit", ident))
        stdin_fd = pipes[0][1]
        if state["stdin"]:
            os.set_blocking(stdin_fd, False)
            self.selector.register(stdin_fd, selectors.EVENT_WRITE, ("stdin", ident))
        else:
            os.close(stdin_fd)

    def finish(self, ident: int) -> None:
        state = self.commands[ident]
        if state["exit"] is None or (state["open"] and time.monotonic() - state["exited_at"] < LINGER):
            return
        for key in list(self.selector.get_map().values()):
            kind, owner = key.data
            if owner == ident and kind in ("out", "err", "stdin"):
                self.selector.unregister(key.fd)
                os.close(key.fd)
        del self.commands[ident]
        self.send({"id": ident, "exit": state["exit"]})

    def event(self, key: selectors.SelectorKey) -> None:
        kind, ident = key.data
        if kind == "inbox":
            data = os.read(0, 65536)
            if not data:
                raise SystemExit(0)
            self.inbox += data
            while b"\n" in self.inbox:
                line, self.inbox = self.inbox.split(b"\n", 1)
                if line.strip():
                    self.start(json.loads(line))
            return
        state = self.commands[ident]
        if kind == "stdin":
            try:
                written = os.write(key.fd, state["stdin"][:65536])
            except (BrokenPipeError, OSError):
                written = len(state["stdin"])
            state["stdin"] = state["stdin"][written:]
            if not state["stdin"]:
                self.selector.unregister(key.fd)
                os.close(key.fd)
        elif kind == "exit":
            self.selector.unregister(key.fd)
            os.close(key.fd)
            _, status = os.waitpid(state["pid"], 0)
            state["exit"] = os.waitstatus_to_exitcode(status)
            if state["exit"] < 0:
                state["exit"] = 128 - state["exit"]
            state["exited_at"] = time.monotonic()
        else:
            data = os.read(key.fd, 65536)
            if data:
                self.send({"id": ident, kind: base64.b64encode(data).decode()})
            else:
                self.selector.unregister(key.fd)
                os.close(key.fd)
                state["open"] -= 1
        self.finish(ident)

    def serve(self) -> None:
        while True:
            lingering = [i for i, s in self.commands.items() if s["exit"] is not None]
            for key, _ in self.selector.select(0.2 if lingering else None):
                self.event(key)
            for ident in lingering:
                if ident in self.commands:
                    self.finish(ident)


if __name__ == "__main__":
    Agent().serve()
