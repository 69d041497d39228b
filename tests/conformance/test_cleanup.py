"""Nothing leaks: Ctrl-C and SIGTERM of the harness remove what the run created; after a SIGKILL the next run
does. Real refrt containers in a root of the test's own."""

from __future__ import annotations

import os
import re
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


def _sleepers(seconds: str = "613") -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True, text=True)
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


def _record_of(pid: int) -> Path | None:
    from conformance.session import STATE_DIR

    found = list(STATE_DIR.glob(f"*.{pid}.json"))
    return found[0] if found else None


def _case_dirs() -> set[str]:
    return {str(p) for p in Path("/tmp").glob("conformance-case.*")}


def _registry_serving(workdir: str) -> bool:
    """A live (not zombie) docker-registry serving the config in ``workdir``."""
    for entry in Path("/proc").iterdir():
        try:
            if f"{workdir}/config.yml".encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def test_sigkill_of_a_registry_run_then_a_normal_run_leaves_nothing(tmp_path: Path) -> None:
    """The killed run pushed blobs into its registry's data dir and had a case temp dir and containers; the next
    run (a normal one) removes all of it and says so in one line - unless a concurrent run on this machine got
    to the dead run's record first, which is then gone before the next run starts."""
    import json

    root = tmp_path / "refrt"
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(root)}
    before = _case_dirs()
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "run", "suites/registry.yaml", "--report-dir",
                             str(tmp_path / "killed")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    record_path: Path | None = None
    record: dict[str, object] = {}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        record_path = record_path or _record_of(proc.pid)
        if record_path is not None:
            try:
                record = json.loads(record_path.read_text() or "{}")
            except (OSError, ValueError):
                record = {}
            dirs = record.get("registry_dirs") or []
            if dirs and list(Path(str(dirs[0])).glob("storage/docker/registry/v2/blobs/sha256/*/*/data")):
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it pushed anything"
    proc.kill()
    proc.wait(timeout=30)
    registry_dir = str(record["registry_dirs"][0])  # type: ignore[index]
    # Only the killed run's own dirs (other runs on this machine may be making theirs right now).
    killed_case_dirs = {d for d in _case_dirs() - before if f".{record['case_tmp_tag']}." in d}
    assert Path(registry_dir).is_dir(), "a SIGKILLed harness cannot clean up: its registry data is expected here"
    assert killed_case_dirs, "the killed run had a case temp dir"
    assert record_path is not None
    still_recorded = record_path.exists()

    again = subprocess.run([sys.executable, "-m", "conformance", "run", "suites/registry.yaml", "-k", "pull-unknown",
                            "--report-dir", str(tmp_path / "again")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    notices = [line for line in again.stderr.splitlines() if "cleaned up after" in line]
    if still_recorded:
        assert len(notices) == 1, again.stderr
        assert re.match(r"conformance: cleaned up after (an interrupted run|\d+ interrupted runs): ", notices[0])
        assert re.search(r"\b\d+ registry data dirs?\b", notices[0]), notices[0]
        assert re.search(r"\b\d+ temp dirs?\b", notices[0]), notices[0]
    assert not Path(registry_dir).exists()
    assert not _registry_serving(registry_dir)
    assert not record_path.exists()
    assert _containers(root) == []
    assert not (killed_case_dirs & _case_dirs())


_HOLDER = """
import sys, time
from conformance.session import RunSession
session = RunSession("local", ["refrt"])
tmp = session.case_tmp()
registry = session.service("registry")
driver = session.driver("refrt")
started = driver.cli(["run", "-d", "busybox", "sleep", "614"], timeout=120)
assert started.exit_status == 0, started.stderr
print(tmp, registry.workdir, session.record.path, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_sigkilled_session_is_reclaimed_by_the_next_with_one_line(tmp_path: Path) -> None:
    """The mechanism itself: a real RunSession with a tagged case dir, a registry and a refrt container is
    SIGKILLed; the next run's reclaim removes all three, counts them in one line, and drops the record."""
    from conformance.session import reclaim_interrupted_runs

    root = tmp_path / "refrt"
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert len(line) == 3, "the session never got ready"
    tmp, workdir, record = line
    proc.kill()
    proc.wait(timeout=30)
    assert Path(tmp).is_dir() and Path(workdir).is_dir() and Path(record).exists()
    assert len(_containers(root)) == 1
    assert Path(tmp).name.count(".") == 2 and len(Path(tmp).name.split(".")[1]) == 10
    recorded = Path(record).exists()
    notice = reclaim_interrupted_runs("local")
    if recorded:  # else a concurrent run on this machine took the dead record first (and cleaned it)
        assert re.match(r"cleaned up after (an interrupted run|\d+ interrupted runs): \d+ temp dirs?, "
                        r"\d+ registry data dirs?, \d+ containers?", notice), notice
        assert "\n" not in notice
    assert not Path(tmp).exists()
    assert not Path(workdir).exists()
    assert not _registry_serving(workdir)
    assert _containers(root) == []
    assert _sleepers("614") == []
    assert not Path(record).exists()
