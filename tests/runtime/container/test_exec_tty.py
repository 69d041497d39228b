"""Interactive terminals as docker has them: ``exec -it``/``run -it`` under a real pty, window sizes, detach keys,
``attach``, hang-ups, ``exec -d`` and the refusal of ``-it`` without a terminal.

Each test drives refrt's CLI (the thin client, so the daemon's worker path is the one exercised) on the slave
of a pty this test owns, as a user's terminal emulator would: keys are written to the master, output is read
from it. The outputs and exit codes expected here are docker 20.10's, seen on the same machine: ``run -it``
detach exits 0 quietly, ``attach``/``exec`` detach print "read escape sequence" and exit 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from tests.runtime.container.conftest import REPO, Refrt, unique, wait_for

pytestmark = pytest.mark.slow


class Terminal:
    """A pty whose slave is the controlling terminal of one refrt command."""

    def __init__(self, refrt: Refrt, *args: str, rows: int = 33, cols: int = 111) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, slave)

        def controlling() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(refrt.argv(*args), stdin=slave, stdout=slave, stderr=slave, env=refrt.env,
                                     cwd=REPO, preexec_fn=controlling)
        os.close(slave)
        self.output = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        """As a terminal emulator does: set the size; the kernel sends SIGWINCH to the foreground group."""
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, marker: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} not seen in {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {marker!r}: {self.output!r}")
                self.output += chunk

    def wait(self, timeout: float = 20) -> int:
        """The command's exit code, reading what is left on the terminal meanwhile."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self.master < 0:
                time.sleep(0.05)
                continue
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):
                    self.output += os.read(self.master, 4096)
        return self.proc.wait(timeout=1)

    def hang_up(self) -> None:
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.master >= 0:
            os.close(self.master)


@pytest.fixture
def sleeper(refrt: Refrt) -> Iterator[str]:
    name = unique("tty")
    refrt("run", "-d", "--name", name, "busybox", "sleep", "300", check=True)
    yield name
    refrt("rm", "-f", name)


def _shell_session(term: Terminal) -> None:
    """A marker, the window size, a resize that the shell sees, and exit 3 — within seconds."""
    started = time.monotonic()
    term.expect(b"# ")
    term.type(b"echo MARK$((40+2)); stty size\r")
    term.expect(b"MARK42")
    term.expect(b"33 111")
    term.resize(44, 99)
    time.sleep(0.3)  # the resize travels as a signal: client -> worker -> pty
    term.type(b"stty size; exit 3\r")
    term.expect(b"44 99")
    assert term.wait() == 3
    assert time.monotonic() - started < 15


def test_exec_it_relays_input_and_window_size(refrt: Refrt, sleeper: str) -> None:
    term = Terminal(refrt, "exec", "-it", sleeper, "sh")
    try:
        _shell_session(term)
    finally:
        term.close()


def test_run_it_relays_input_and_window_size(refrt: Refrt) -> None:
    term = Terminal(refrt, "run", "-it", "--rm", "busybox", "sh")
    try:
        _shell_session(term)
    finally:
        term.close()


def test_exec_detach_runs_in_background(refrt: Refrt, sleeper: str) -> None:
    result = refrt("exec", "-d", sleeper, "sh", "-c", "echo done > /tmp/detached")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: refrt("exec", sleeper, "cat", "/tmp/detached").stdout == "done\n")


def test_it_without_a_terminal_is_refused(refrt: Refrt, sleeper: str) -> None:
    for args in (("run", "-it", "--rm", "busybox", "true"), ("exec", "-it", sleeper, "sh")):
        result = refrt(*args, input="echo hi\n")
        assert result.returncode == 1, (args, result)
        assert "the input device is not a TTY" in result.stderr


def test_detach_keys_leave_the_container_running(refrt: Refrt) -> None:
    name = unique("detach")
    term = Terminal(refrt, "run", "-it", "--name", name, "busybox", "sh")
    try:
        term.expect(b"# ")
        term.type(b"\x10\x11")
        assert term.wait() == 0  # docker: run exits 0, says nothing
        assert b"read escape sequence" not in term.output
        assert refrt.inspect(name)["State"]["Running"] is True
        # attach again, type, detach with custom keys: "read escape sequence", exit 1
        again = Terminal(refrt, "attach", "--detach-keys", "ctrl-x,y", name)
        try:
            time.sleep(0.5)
            again.type(b"echo BACK$((1+1))\r")
            again.expect(b"BACK2")
            again.type(b"\x18y")
            assert again.wait() == 1
            assert b"read escape sequence" in again.output
        finally:
            again.close()
        assert refrt.inspect(name)["State"]["Running"] is True
        # a client that hangs up leaves it running too
        third = Terminal(refrt, "attach", name)
        try:
            time.sleep(0.5)
            third.hang_up()
            third.wait()
        finally:
            third.close()
        time.sleep(0.5)
        assert refrt.inspect(name)["State"]["Running"] is True
        # and attach ends with the container's exit code
        last = Terminal(refrt, "attach", name)
        try:
            time.sleep(0.5)
            last.type(b"exit 7\r")
            assert last.wait() == 7
        finally:
            last.close()
    finally:
        term.close()
        refrt("rm", "-f", name)


def test_run_it_survives_a_hang_up(refrt: Refrt) -> None:
    name = unique("hup")
    term = Terminal(refrt, "run", "-it", "--name", name, "busybox", "sh")
    try:
        term.expect(b"# ")
        term.hang_up()
        term.wait()
        time.sleep(0.5)
        assert refrt.inspect(name)["State"]["Running"] is True
    finally:
        term.close()
        refrt("rm", "-f", name)


def test_attach_without_tty_proxies_signals(refrt: Refrt) -> None:
    name = unique("proxy")
    refrt("run", "-d", "--name", name, "busybox", "sh", "-c",
          "trap 'echo got-term; exit 9' TERM; while true; do sleep 0.1; done", check=True)
    try:
        proc = refrt.popen("attach", name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(1)
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 9
        assert "got-term" in out
    finally:
        refrt("rm", "-f", name)


def test_attach_to_a_stopped_container_is_refused(refrt: Refrt) -> None:
    name = unique("stopped")
    refrt("create", "--name", name, "busybox", "true", check=True)
    try:
        result = refrt("attach", name)
        assert result.returncode == 1
        assert "You cannot attach to a stopped container, start it first" in result.stderr
    finally:
        refrt("rm", "-f", name)
