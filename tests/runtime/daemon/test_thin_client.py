"""The thin client through the daemon: exit codes, stdio, signals, terminals, and what it imports.

Every command here goes through the root's on-demand daemon (the default path), with the lean invocation the
harness uses (``python -I -S runtime/__main__.py``). After each test the daemon is stopped and no daemon, zygote
or worker of the root may be left.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.runtime.daemon.cli_helpers import (
    MAIN,
    REPO,
    env,
    lean,
    processes,
    refrt,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("no_daemon_left")


@pytest.fixture
def root(busybox_root: Path) -> Path:
    return busybox_root


def test_exit_code_stdout_and_stderr_pass_through(root: Path) -> None:
    result = refrt(root, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert processes(root, ("refrt-daemon",)), "the command did not go through a daemon"


def test_stdin_passes_through(root: Path) -> None:
    result = refrt(root, "run", "-i", "--rm", "busybox", "cat", input="data\n")
    assert (result.returncode, result.stdout) == (0, "data\n")


def test_errors_keep_their_exit_code_and_one_line(root: Path) -> None:
    result = refrt(root, "frobnicate")
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "frobnicate" in result.stderr
    result = refrt(root, "rm", "no-such-container")
    assert result.returncode == 1


def test_cwd_and_environment_are_the_clients(root: Path, tmp_path: Path) -> None:
    (tmp_path / "envfile").write_text("FROM_FILE=yes\n")
    result = subprocess.run(lean(root, "run", "--rm", "--env-file", "envfile", "-e", "MINE", "busybox", "sh", "-c",
                                 "echo $FROM_FILE $MINE"), cwd=tmp_path, env=env(MINE="mine"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (0, "yes mine\n"), result.stderr


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGINT, 7), (signal.SIGTERM, 9)])
def test_signals_of_the_client_reach_the_container(root: Path, signum: int, expected: int) -> None:
    script = ("trap 'echo got INT; exit 7' INT; trap 'echo got TERM; exit 9' TERM; echo ready; "
              "while true; do sleep 0.1; done")
    proc = subprocess.Popen(lean(root, "run", "--rm", "busybox", "sh", "-c", script), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == expected, err
    assert out.startswith("got ")


def test_sigkill_of_the_client_leaves_no_worker(root: Path) -> None:
    proc = subprocess.Popen(lean(root, "run", "--name", "orphaned", "busybox", "sleep", "300"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: processes(root, ("refrt-worker",)), timeout=30)
        assert wait_until(lambda: "orphaned" in refrt(root, "ps").stdout, timeout=30)
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not processes(root, ("refrt-worker",)), timeout=10), "the worker survived"
    finally:
        refrt(root, "rm", "-f", "orphaned")


def test_run_t_under_a_pty_gets_a_terminal(root: Path) -> None:
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the client
        os.execve(lean(root)[0], [*lean(root, "run", "-t", "--rm", "busybox", "sh", "-c", "tty; exit 5")], env())
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the client closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert b"/dev/pts/" in output, output
    assert os.waitstatus_to_exitcode(status) == 5


def test_the_client_imports_nothing_heavy(root: Path) -> None:
    """The lean client imports the runtime's client module and built-ins only, not the runtime."""
    result = subprocess.run([*lean(root, "ps")[:3], "-X", "importtime", *lean(root, "ps")[3:]], env=env(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "runtime.client" in imported
    heavy = {"runtime.cli", "socket", "signal", "json", "argparse", "enum", "re", "subprocess", "site"} & imported
    assert not heavy, f"the thin client imported {heavy}"


def test_no_daemon_runs_in_process(tmp_path: Path) -> None:
    result = refrt(tmp_path, "ps", "-a", environ=env(REFRT_NO_DAEMON="1"))
    assert result.returncode == 0, result.stderr
    result = refrt(tmp_path, "--no-daemon", "version", "--format", "{{.Server.ApiVersion}}")
    assert (result.returncode, result.stdout) == (0, "1.41\n")
    assert not (tmp_path / "run" / "refrt.sock").exists()
    assert not processes(tmp_path)


def test_launchers(root: Path) -> None:
    """``bin/refrt`` (shebang with -I -S) and ``python -m runtime`` reach the same daemon."""
    via_bin = subprocess.run([str(REPO / "bin" / "refrt"), "--root", str(root), "ps", "-q"], env=env(),
                             capture_output=True, text=True, timeout=60, check=False)
    assert via_bin.returncode == 0, via_bin.stderr
    via_m = subprocess.run([lean(root)[0], "-m", "runtime", "--root", str(root), "ps", "-q"], env=env(),
                           cwd=MAIN.parents[1], capture_output=True, text=True, timeout=60, check=False)
    assert via_m.returncode == 0, via_m.stderr
    assert len(processes(root, ("refrt-daemon",))) == 1


def test_an_explicit_host_that_does_not_answer_is_an_error(root: Path, tmp_path: Path) -> None:
    result = refrt(root, "--host", f"unix://{tmp_path}/none.sock", "ps")
    assert result.returncode == 125
    assert "cannot connect to the refrt daemon" in result.stderr
    result = refrt(root, "ps", environ=env(REFRT_HOST="tcp://127.0.0.1:1"))
    assert result.returncode == 125 and "only unix://" in result.stderr
    assert not processes(root)
