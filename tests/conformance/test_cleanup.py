"""Nothing leaks: Ctrl-C and SIGTERM of the harness remove what the run created; after a SIGKILL the next run
does. Real refrt containers in a root of the test's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parents[2]

pytestmark = pytest.mark.slow


def _refrt(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", "--root", str(root), "--state", f"{root}/run", *args],
                          capture_output=True, text=True, timeout=120)


def _containers(root: Path) -> list[str]:
    return _refrt(root, "ps", "-a", "-q").stdout.split()


def _sleepers() -> list[str]:
    found = subprocess.run(["pgrep", "-f", "^sleep 613$"], capture_output=True, text=True)
    return found.stdout.split()


def _start_run(root: Path, report: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "run", str(DATA / "long_running.yaml"),
                             "--report-dir", str(report)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _sleepers() and _containers(root):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"run ended early:\n{proc.communicate()[0]}")
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the container never started")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupt_removes_containers(tmp_path: Path, signum: int) -> None:
    root = tmp_path / "refrt"
    proc = _start_run(root, tmp_path / "report")
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 2, output
    assert _containers(root) == []
    assert _sleepers() == []


def test_next_run_cleans_up_after_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "refrt"
    proc = _start_run(root, tmp_path / "report")
    proc.kill()
    proc.wait(timeout=30)
    assert len(_containers(root)) == 1, "a SIGKILLed harness cannot clean up: the leftover is expected here"
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(root)}
    again = subprocess.run([sys.executable, "-m", "conformance", "run", "suites/isolation.yaml", "-k", "pid-1",
                            "--report-dir", str(tmp_path / "again")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:]
    assert _containers(root) == []
    assert _sleepers() == []
