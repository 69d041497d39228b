"""Timeouts are real: what a timed-out step started is killed (process group, and the container through the
driver), output is not read past the deadline, and the verdict says exactly what was killed. Real refrt
containers in a root of the test's own, real processes on the local target."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.errors import CommandTimeout
from conformance.targets import get_target

REPO = Path(__file__).parents[2]


def _pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def _refrt_containers(root: Path) -> list[str]:
    listed = subprocess.run([sys.executable, "-m", "runtime", "--root", str(root), "--state", f"{root}/run",
                             "ps", "-a", "-q"], capture_output=True, text=True, timeout=120, check=True)
    return listed.stdout.split()


def _run_suite(tmp_path: Path, text: str) -> tuple[subprocess.CompletedProcess[str], dict[str, object], float]:
    suite = tmp_path / "timeouts.yaml"
    suite.write_text(text)
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(tmp_path / "refrt")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", str(suite), "--report-dir",
                           str(tmp_path / "report")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    elapsed = time.monotonic() - started
    return proc, json.loads((tmp_path / "report" / "results.json").read_text()), elapsed


@pytest.mark.slow
def test_container_step_timeout_kills_the_container_and_says_so(tmp_path: Path) -> None:
    proc, results, elapsed = _run_suite(tmp_path, """\
name: timeouts
description: a container step that outlives its timeout
cases:
  - id: sleeper
    title: sleeps far longer than its step may
    timeout: 60
    steps:
      - container: run --rm busybox sleep 127
        timeout: 5
""")
    assert proc.returncode == 1, proc.stdout[-3000:]
    # The whole run (driver preparation included) ends within 25 s, not after the 127 s sleep.
    assert elapsed < 25, f"run took {elapsed:.1f} s"
    case = results["cases"][0]  # type: ignore[index]
    step = case["steps"][0]
    assert step["duration"] < 12, step
    match = re.search(r"timed out after 5 s; killed process group (\d+) and container ([0-9a-f]{12})$",
                      step["message"])
    assert match, step["message"]
    assert case["status"] == "failed"
    assert _refrt_containers(tmp_path / "refrt") == []
    assert _pids("^sleep 127$") == []
    assert not Path(f"/proc/{match.group(1)}").exists()


@pytest.mark.slow
def test_case_deadline_bounds_a_step_without_its_own_timeout(tmp_path: Path) -> None:
    proc, results, elapsed = _run_suite(tmp_path, """\
name: timeouts
description: a shell step that outlives its case
cases:
  - id: slow-shell
    title: a background child keeps the output open
    timeout: 3
    steps:
      - run: (sleep 128 &) ; sleep 129
""")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert elapsed < 25, f"run took {elapsed:.1f} s"
    message = results["cases"][0]["steps"][0]["message"]  # type: ignore[index]
    assert re.fullmatch(r"timed out after \d(\.\d)? s \(what was left of the case's timeout\); killed process group "
                        r"\d+", message), message
    assert _pids("^sleep 12[89]$") == []


def test_local_target_stops_reading_at_the_deadline_when_a_daemon_holds_the_pipe() -> None:
    """A process that left the command's session still holds stdout open: the reader gives up at the deadline
    plus a short grace, the command's own group and tree are dead, and only the escaped daemon is left (ours
    to kill: a real escaped daemon is the driver's business, or the run's)."""
    target = get_target("local")
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        target.run("setsid -f sleep 131; sh -c 'sleep 132 & sleep 133' & echo started; sleep 134", timeout=1.5)
    elapsed = time.monotonic() - started
    daemons = _pids("^sleep 131$")
    for pid in daemons:
        os.kill(pid, signal.SIGKILL)
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert re.fullmatch(r"timed out after 1\.5 s; killed process group \d+", str(info.value))
    assert info.value.killed.startswith("process group ")
    assert "started" in info.value.evidence
    assert len(daemons) == 1
    assert _pids("^sleep 13[234]$") == []


def test_local_target_returns_soon_after_exit_even_if_a_daemon_keeps_the_pipe() -> None:
    target = get_target("local")
    started = time.monotonic()
    result = target.run("setsid -f sleep 135; echo done", timeout=30)
    elapsed = time.monotonic() - started
    for pid in _pids("^sleep 135$"):
        os.kill(pid, signal.SIGKILL)
    assert (result.exit_status, result.stdout) == (0, "done\n")
    assert elapsed < 5, f"took {elapsed:.1f} s"


def test_local_target_stdin_and_streams() -> None:
    target = get_target("local")
    assert target.run("wc -c", stdin="x" * 1_000_000).stdout.strip() == "1000000"
    assert target.run("head -c 3", stdin="y" * 1_000_000).stdout == "yyy"
    result = target.run("echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")


@pytest.mark.peer
@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_peer_container_step_timeout_removes_its_container(runtime: str) -> None:
    """The same promise through podman (conmon keeps the container) and docker (containerd-shim does): the
    step's label finds the container, ``rm -f`` removes it, and the message names it."""
    import shutil
    import uuid

    from conformance.drivers import RUN_LABEL, driver_class
    from conformance.suite.model import Step
    from conformance.suite.runner import CaseRunner, ExpectationFailed

    if shutil.which("dockerd" if runtime == "docker" else "podman") is None:
        pytest.skip(f"{runtime} not installed (scripts/apt/peers.txt)")
    target = get_target("local")
    run_id = f"test-timeout-{runtime}-{uuid.uuid4().hex[:8]}"
    driver = driver_class(runtime)(target, run_id)
    try:
        driver.prepare()
        runner = CaseRunner(target, driver, {}, time.monotonic() + 120)
        started = time.monotonic()
        with pytest.raises(ExpectationFailed) as info:
            runner.run_step("steps", Step(action="container", body="run --rm busybox sleep 141", line=1, timeout=4))
        elapsed = time.monotonic() - started
        assert elapsed < 20, f"took {elapsed:.1f} s"
        assert re.search(r"timed out after 4 s; killed process group \d+ and container [0-9a-f]{12}",
                         info.value.result.message), info.value.result.message
        left = driver.cli(["ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"], timeout=60)
        assert left.stdout.split() == []
        assert _pids("^sleep 141$") == []
    finally:
        driver.cleanup()
        driver.close()
