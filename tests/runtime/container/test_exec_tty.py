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
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

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

    def expect_match(self, pattern: bytes, timeout: float = 20) -> re.Match[bytes]:
        """Read until ``pattern`` matches the output so far; the match."""
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.output)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen in {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                chunk = os.read(self.master, 4096)
                if not chunk:
                    raise AssertionError(f"terminal closed before {pattern!r}: {self.output!r}")
                self.output += chunk
        return found

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


# -- nothing an exec leaves behind stays a zombie ----------------------------------------------------------------
# Once its waiter is gone, an exec'd process (and the waiter of a client that went away) is re-parented. PID 1 of
# this machine, of a container or of a small VM may never reap it; refrt's zygote adopts them (a child subreaper)
# and reaps them at once. Each test watches the process's parent while it runs, then its end.


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _host_pid(container_init: int, ns_pid: int) -> int:
    """The host pid of the process that is ``ns_pid`` inside the PID namespace of ``container_init``."""
    ns = os.stat(f"/proc/{container_init}/ns/pid").st_ino
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "pid").st_ino == ns and _status(int(entry.name))["NSpid"].split()[-1] == str(
                ns_pid
            ):
                return int(entry.name)
    raise AssertionError(f"no process {ns_pid} in the namespace of {container_init}")


def _refrt_parent(pid: int) -> int:
    """``pid``'s parent, which must be one of refrt's processes (its zygote, a worker, an exec waiter), not 1."""
    parent = int(_status(pid)["PPid"])
    assert parent != 1, f"{pid} was re-parented to PID 1, which may never reap it"
    assert Path(f"/proc/{parent}/comm").read_text().startswith("refrt-"), (pid, parent)
    return parent


def _watch_until_reaped(pids: list[int], timeout: float = 15) -> None:
    """Poll until every pid is gone; none may be re-parented to 1 meanwhile or stay a zombie for long."""
    zombie_since: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _status(p)]
        if not alive:
            return
        for pid in alive:
            status = _status(pid)
            if not status:
                continue
            assert status["PPid"] != "1", f"{pid} ({status['Name']}) was re-parented to PID 1"
            if status["State"].startswith("Z"):
                since = zombie_since.setdefault(pid, time.monotonic())
                assert time.monotonic() - since < 1.0, f"{pid} ({status['Name']}) stays a zombie"
        assert time.monotonic() < deadline, f"still there: {[(p, _status(p).get('State')) for p in alive]}"
        time.sleep(0.02)


def test_exec_detach_leaves_no_zombie(refrt: Refrt, sleeper: str) -> None:
    init_pid = refrt.inspect(sleeper)["State"]["Pid"]
    result = refrt("exec", "-d", sleeper, "sh", "-c", "echo $$ > /tmp/me; exec sleep 2")
    assert result.returncode == 0, result.stderr
    ns_pid = int(wait_for(lambda: refrt("exec", sleeper, "cat", "/tmp/me").stdout.strip()))
    pid = _host_pid(init_pid, ns_pid)
    _refrt_parent(pid)
    _watch_until_reaped([pid])


def test_exec_it_whose_client_goes_away_leaves_no_zombie(refrt: Refrt, sleeper: str) -> None:
    init_pid = refrt.inspect(sleeper)["State"]["Pid"]
    term = Terminal(refrt, "exec", "-it", sleeper, "sh")
    try:
        term.expect(b"# ")
        term.type(b"echo PID=$$=\r")  # the typed line is echoed as is, the answer has digits
        ns_pid = int(term.expect_match(rb"PID=(\d+)=").group(1))
        shell = _host_pid(init_pid, ns_pid)
        waiter = _refrt_parent(shell)
        term.proc.kill()  # the client is gone: its worker kills itself, the pty hangs up, the shell ends
        term.proc.wait()
        _watch_until_reaped([shell, waiter])
    finally:
        term.close()


def _shells(refrt: Refrt, name: str) -> list[int]:
    """The pids (in the container) of its ``sh`` processes."""
    out = refrt("exec", name, "ps", "-o", "pid,args").stdout.splitlines()[1:]
    return [int(line.split()[0]) for line in out if line.split()[1:] == ["sh"]]


def test_exec_detach_with_tty_keeps_a_terminal_and_leaves_no_zombie(refrt: Refrt, sleeper: str) -> None:
    """docker 20.10, seen here: ``exec -d -it C sh`` and ``exec -d -t C sh`` leave a shell waiting on a terminal
    nobody types on; ``exec -d -i`` and ``exec -d`` give it no terminal, so it reads EOF and ends."""
    init_pid = refrt.inspect(sleeper)["State"]["Pid"]
    for flags in (("-d", "-i"), ("-d",)):
        assert refrt("exec", *flags, sleeper, "sh").returncode == 0
    time.sleep(0.5)
    assert _shells(refrt, sleeper) == []
    for flags in (("-d", "-it"), ("-d", "-t")):
        result = refrt("exec", *flags, sleeper, "sh")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), flags
    shells = wait_for(lambda: (found := _shells(refrt, sleeper)) and len(found) == 2 and found)
    time.sleep(0.5)
    assert _shells(refrt, sleeper) == shells  # still waiting, not ended
    for shell in shells:
        assert refrt("exec", sleeper, "readlink", f"/proc/{shell}/fd/0").stdout.startswith("/dev/pts/")
    host = [_host_pid(init_pid, p) for p in shells]
    waiters = [_refrt_parent(p) for p in host]
    refrt("exec", sleeper, "kill", "-HUP", *map(str, shells), check=True)
    _watch_until_reaped(host + waiters)
