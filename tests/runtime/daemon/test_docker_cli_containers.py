"""Debian's docker 20.10 client driving containers through refrt's daemon, and the very same checks against a real
dockerd (``engine``), so no check can pass for the wrong reason.

``--pull=never`` everywhere: a client must never reach Docker Hub (busybox exists in both engines).
"""

from __future__ import annotations

import os
import pty
import select
import struct
import time
import uuid
from pathlib import Path

import pytest

from tests.runtime.daemon.conftest import DOCKER, docker

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def in_terminal(host: str, *args: str, timeout: float = 60, answer: bytes = b"") -> tuple[str, int]:
    """Run the docker client with a pty as its terminal (30 rows, 100 columns); its output and exit code.
    ``answer`` is typed once the container printed "ready"."""
    import fcntl
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the client
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execve(DOCKER, [DOCKER, *args], {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": "/nonexistent"})
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
        if answer and b"ready" in out:
            os.write(fd, answer)
            answer = b""
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_run_prints_exits_and_reads_stdin(engine: str) -> None:
    hi = docker(engine, "run", "--pull=never", "--rm", "busybox", "echo", "hi")
    assert (hi.returncode, hi.stdout) == (0, "hi\n"), hi.stderr
    three = docker(engine, "run", "--pull=never", "--rm", "busybox", "sh", "-c", "echo err >&2; exit 3")
    assert (three.returncode, three.stdout, three.stderr) == (3, "", "err\n")
    piped = docker(engine, "run", "--pull=never", "-i", "--rm", "busybox", "cat", input="data\n")
    assert (piped.returncode, piped.stdout) == (0, "data\n"), piped.stderr


def test_run_reports_what_cannot_start(engine: str) -> None:
    missing = docker(engine, "run", "--pull=never", "--rm", "busybox", "no-such-command")
    assert missing.returncode == 127, missing.stderr
    assert "executable file not found" in missing.stderr
    image = docker(engine, "run", "--pull=never", "--rm", "no-such-image-cf:1", "true")
    assert image.returncode == 125 and "No such image: no-such-image-cf:1" in image.stderr, image.stderr


def test_detached_container_life(engine: str) -> None:
    name = unique("cli-life")
    started = docker(engine, "run", "--pull=never", "-d", "--name", name, "busybox", "sh", "-c",
                     "echo started; echo warn >&2; exec sleep 60")
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        listed = docker(engine, "ps", "--filter", f"name={name}", "--format", "{{.ID}} {{.Names}} {{.Status}}")
        assert listed.stdout.startswith(f"{cid[:12]} {name} Up"), listed.stdout
        assert docker(engine, "exec", name, "echo", "inside").stdout == "inside\n"
        assert docker(engine, "exec", name, "sh", "-c", "exit 5").returncode == 5
        assert docker(engine, "exec", "-i", name, "cat", input="through exec\n").stdout == "through exec\n"
        deadline = time.monotonic() + 10
        while "started" not in (logs := docker(engine, "logs", name)).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (logs.stdout, logs.stderr) == ("started\n", "warn\n")
        stats = docker(engine, "stats", "--no-stream", name)
        assert stats.returncode == 0, stats.stderr
        header, row = stats.stdout.splitlines()
        assert "CPU %" in header and "MEM USAGE / LIMIT" in header
        assert name in row and "%" in row and " / " in row
        top = docker(engine, "top", name)
        assert "sleep 60" in top.stdout, top.stdout
        stopped = docker(engine, "stop", "-t", "1", name)
        assert stopped.returncode == 0, stopped.stderr
        state = docker(engine, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
        assert state[0] == "exited" and state[1] in ("137", "143")
    finally:
        removed = docker(engine, "rm", "-f", name)
    assert removed.returncode == 0, removed.stderr
    assert docker(engine, "ps", "-aq", "--filter", f"name={name}").stdout == ""


def test_tty_under_a_terminal(engine: str) -> None:
    out, code = in_terminal(engine, "run", "--pull=never", "-t", "--rm", "busybox", "sh", "-c",
                            "tty; sleep 0.5; stty size; exit 4")
    assert code == 4, out
    assert "/dev/pts/" in out and "30 100" in out, out
    out, code = in_terminal(engine, "run", "--pull=never", "-it", "--rm", "busybox", "sh", "-c",
                            "echo ready; read x; echo got-$x", answer=b"typed\r")
    assert code == 0 and "got-typed" in out, out
    name = unique("cli-tty")
    assert docker(engine, "run", "--pull=never", "-d", "--name", name, "busybox", "sleep", "60").returncode == 0
    try:
        out, code = in_terminal(engine, "exec", "-it", name, "sh", "-c", "tty; sleep 0.5; stty size")
        assert code == 0 and "/dev/pts/" in out and "30 100" in out, out
        out, code = in_terminal(engine, "exec", "-it", name, "sh", "-c", "echo ready; read x; exit ${#x}",
                                answer=b"four\r")
        assert code == 4, out
    finally:
        docker(engine, "rm", "-f", name)


def test_cp_both_ways(engine: str, tmp_path: Path) -> None:
    name = unique("cli-cp")
    made = docker(engine, "run", "--pull=never", "-d", "--name", name, "busybox", "sh", "-c",
                  "mkdir -p /data/sub && echo inside > /data/sub/f && exec sleep 60")
    assert made.returncode == 0, made.stderr
    try:
        deadline = time.monotonic() + 10
        while docker(engine, "exec", name, "test", "-f", "/data/sub/f").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        out = tmp_path / "out"
        assert docker(engine, "cp", f"{name}:/data", str(out)).returncode == 0
        assert (out / "sub" / "f").read_text() == "inside\n"
        source = tmp_path / "host.txt"
        source.write_text("from the host\n")
        assert docker(engine, "cp", str(source), f"{name}:/data/").returncode == 0
        assert docker(engine, "cp", str(source), f"{name}:/data/renamed.txt").returncode == 0
        listing = docker(engine, "exec", name, "sh", "-c", "cat /data/host.txt /data/renamed.txt")
        assert listing.stdout == "from the host\n" * 2
        missing = docker(engine, "cp", f"{name}:/no/such/file", str(tmp_path / "x"))
        assert missing.returncode != 0 and "No such container:path" in missing.stderr, missing.stderr
    finally:
        docker(engine, "rm", "-f", name)


def test_nothing_left_behind(refrt_daemon: str, refrt_root: Path) -> None:
    """After the checks above refrt's root holds no container, and no mount of its remains."""
    left = docker(refrt_daemon, "ps", "-aq", "--filter", "name=cli-")
    assert left.stdout == ""
    mounts = Path("/proc/mounts").read_text()
    assert str(refrt_root / "containers") not in mounts


def test_attach_to_a_running_container(engine: str) -> None:
    """``docker attach`` after ``run -d``: the rest of the output and the exit code; with ``-it``, typing, the
    window size and detaching with ctrl-p ctrl-q, after which the container runs on."""
    late = docker(engine, "run", "--pull=never", "-d", "busybox", "sh", "-c",
                  "sleep 1; for i in 1 2 3; do echo t$i; done; exit 6")
    attached = docker(engine, "attach", late.stdout.strip())
    assert (attached.returncode, attached.stdout) == (6, "t1\nt2\nt3\n"), attached.stderr
    docker(engine, "rm", "-f", late.stdout.strip())
    name = unique("cli-attach")
    assert docker(engine, "run", "--pull=never", "-d", "-it", "--name", name, "busybox", "sh").returncode == 0
    try:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - the child becomes the client
            import fcntl
            import termios

            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
            os.execve(DOCKER, [DOCKER, "attach", name],
                      {**os.environ, "DOCKER_HOST": engine, "DOCKER_CONFIG": "/nonexistent"})
        out, typed, detached = b"", False, False
        started = time.monotonic()
        deadline = started + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                out += data
            if not typed and (b"# " in out or time.monotonic() > started + 2):  # the prompt, or a moment
                os.write(fd, b"stty size; echo marker-$((6*7))\r")
                typed = True
            if typed and not detached and b"marker-42" in out:
                os.write(fd, b"\x10\x11")
                detached = True
        os.close(fd)
        os.waitpid(pid, 0)
        assert b"33 111" in out and b"marker-42" in out, out
        status = docker(engine, "inspect", "-f", "{{.State.Running}}", name)
        assert status.stdout.strip() == "true"
    finally:
        docker(engine, "rm", "-f", name)
