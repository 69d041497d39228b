"""``local``: this host, as the user running the harness (root in CI). Needs nothing else.

A command runs in a session of its own, so a timeout can kill its whole process group - and, found through
``/proc`` before anything is killed, every descendant that moved to another group. Output is read until the
deadline and no longer: a grandchild that escaped (a daemon, a container's monitor) may hold the pipes open for
ever, so after the kill the reader waits a short grace period for the rest and then closes its ends.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance.errors import CommandTimeout
from conformance.targets.base import CommandResult, Target, register_target, seconds

#: After the command's shell exited (or was killed), how long to wait for the rest of its output.
GRACE = 2.0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from ``/proc`` (children first found, then theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found.extend(children)
        pending.extend(children)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and every descendant of ``pid``, stopped first so none forks."""
    tree = descendants(pid)
    for member in tree:
        _signal(member, signal.SIGSTOP)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for member in [pid, *tree]:
        _signal(member, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def communicate(proc: subprocess.Popen[bytes], stdin: bytes | None, deadline: float | None,
                on_timeout: Callable[[], None]) -> tuple[bytes, bytes, bool]:
    """Feed ``stdin`` and read both pipes until EOF, the command's exit plus :data:`GRACE`, or the deadline.

    At the deadline ``on_timeout()`` is called (it kills) and reading goes on for at most :data:`GRACE`.
    Returns stdout, stderr and whether the deadline passed. Every pipe is closed on return.
    """
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray()}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin or b"")
    in_fd = -1
    if proc.stdin is not None:
        if pending:
            in_fd = proc.stdin.fileno()
            os.set_blocking(in_fd, False)
            selector.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
    timed_out = False
    stop_at: float | None = None  # once the shell exited or was killed: the end of the grace period
    try:
        while selector.get_map():
            now = time.monotonic()
            if stop_at is None and proc.poll() is not None:
                stop_at = now + GRACE
            if not timed_out and deadline is not None and now >= deadline and stop_at is None:
                timed_out = True
                on_timeout()
                stop_at = time.monotonic() + GRACE
            if stop_at is not None and now >= stop_at:
                break
            for key, _ in selector.select(0.1):
                fd = int(key.fd)
                if fd == in_fd:
                    try:
                        written = os.write(fd, pending[:65536])
                    except BlockingIOError:
                        written = 0
                    except BrokenPipeError:  # the command stopped reading: the rest of its input is moot
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(fd)
                        assert proc.stdin is not None
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if chunk:
                    buffers[fd] += chunk
                else:
                    selector.unregister(fd)
    finally:
        selector.close()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
    return bytes(buffers[out_fd]), bytes(buffers[err_fd]), timed_out


@register_target
class LocalTarget(Target):
    scheme = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host: Any = None

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        started = time.monotonic()
        # A new session so that a timeout kills the whole process group, not just the shell.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = None if timeout is None else started + timeout
        out, err, timed_out = communicate(proc, stdin.encode() if stdin is not None else None, deadline,
                                          lambda: kill_tree(proc.pid))
        try:
            status = proc.wait(timeout=GRACE if timed_out else None)
        except subprocess.TimeoutExpired:  # unkillable (D state): say so rather than hang
            status = -9
        if timed_out:
            raise CommandTimeout(
                f"timed out after {seconds(timeout or 0)} s; killed process group {proc.pid}",
                evidence=(out + err).decode(errors="replace")[-2000:], killed=f"process group {proc.pid}")
        return CommandResult(command=command, exit_status=status,
                             stdout=out.decode(errors="surrogateescape"), stderr=err.decode(errors="surrogateescape"),
                             duration=time.monotonic() - started)

    def put(self, local: Path, remote: str) -> None:
        destination = Path(remote)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, destination, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(local, destination)

    @property
    def host(self) -> Any:
        if self._host is None:
            import testinfra

            self._host = testinfra.get_host("local://")
        return self._host
