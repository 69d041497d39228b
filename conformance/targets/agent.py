"""Commands through one long-lived process on the target instead of one SSH channel each (the qemu target's way).

A suite run sends hundreds of short commands. Over SSH each costs a channel, sshd's session set-up and a shell
before it starts (0.1-0.2 s in a TCG guest), and each refrt step a new ``python3 -I -S`` besides (0.2-0.4 s).
:class:`CommandAgent` starts :mod:`conformance.targets.guest_agent` once, over one channel of the session's
connection, and sends it each command; the agent forks per command (and runs a ``python3 -I -S SCRIPT`` command
in a child of its already started interpreter). What the harness sees is the same: exit status (128+N for a
signal), stdout and stderr, the command's process group for a timeout to kill.

One reader thread dispatches the agent's messages to the waiting commands, so a timed-out command can be killed
by another while it is still outstanding. When the agent's channel dies, every waiting command fails with a
:class:`conformance.errors.TargetError` and the session falls back to a channel per command.
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from conformance.errors import TargetError

log = logging.getLogger(__name__)

SOURCE = (Path(__file__).parent / "guest_agent.py").read_text()


class AgentGone(TargetError):
    """The agent's channel closed: the connection dropped or the agent died."""


@dataclass
class Pending:
    pid: str = ""
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    exit: int | None = None
    done: threading.Event = field(default_factory=threading.Event)


class CommandAgent:
    """The harness side: ``start(transport)``, then ``submit`` / ``wait`` per command, ``close()`` at the end."""

    def __init__(self, transport: paramiko.Transport, address: str) -> None:
        self.address = address
        self._channel = transport.open_session(timeout=30)
        self._channel.exec_command(shlex.join(["python3", "-I", "-S", "-c", SOURCE]))
        self._lock = threading.Lock()
        self._pending: dict[int, Pending] = {}
        self._next = 0
        self._dead: str | None = None
        #: Commands that ran to their end through this agent.
        self.completed = 0
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"agent-{address}")
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._channel.closed

    def submit(self, command: str, stdin: bytes) -> tuple[int, Pending]:
        with self._lock:
            if self._dead is not None:
                raise AgentGone(f"command agent on {self.address} is gone: {self._dead}")
            self._next += 1
            ident = self._next
            pending = self._pending[ident] = Pending()
            line = json.dumps({"id": ident, "cmd": command, "stdin": base64.b64encode(stdin).decode()}) + "\n"
            try:
                self._channel.sendall(line.encode())
            except (OSError, EOFError, paramiko.SSHException) as exc:
                del self._pending[ident]
                self._fail(f"sending a command failed: {exc}")
                raise AgentGone(f"command agent on {self.address}: {exc}") from exc
        return ident, pending

    def wait(self, ident: int, pending: Pending, deadline: float | None) -> bool:
        """True once the command exited (its output read); False at ``deadline``. Raises :class:`AgentGone`."""
        while not pending.done.wait(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        if pending.exit is None:
            raise AgentGone(f"command agent on {self.address} is gone: {self._dead}")
        with self._lock:
            self._pending.pop(ident, None)
        return True

    def forget(self, ident: int) -> None:
        with self._lock:
            self._pending.pop(ident, None)

    def _read(self) -> None:
        buffer = b""
        reason = "its channel closed"
        try:
            while True:
                data = self._channel.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(json.loads(line))
        except (OSError, EOFError, ValueError, paramiko.SSHException) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if self._channel.exit_status_ready():
            err = b""
            while self._channel.recv_stderr_ready():
                err += self._channel.recv_stderr(65536)
            reason += f" (agent exit status {self._channel.recv_exit_status()}: {err.decode(errors='replace')[-500:]})"
        self._fail(reason)

    def _dispatch(self, message: dict[str, object]) -> None:
        with self._lock:
            pending = self._pending.get(int(str(message["id"])))
        if pending is None:
            return
        if "pid" in message:
            pending.pid = str(message["pid"])
        elif "out" in message:
            pending.out += base64.b64decode(str(message["out"]))
        elif "err" in message:
            pending.err += base64.b64decode(str(message["err"]))
        elif "exit" in message:
            pending.exit = int(str(message["exit"]))
            self.completed += 1
            pending.done.set()

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._dead is None:
                self._dead = reason
                log.info("command agent on %s stopped: %s", self.address, reason)
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.done.set()

    def close(self) -> None:
        self._fail("closed")
        self._channel.close()
