"""Progress lines of targets that take long to come up: their format, and that a run's lines reach the stderr it
started with even while pytest captures file descriptor 2 (the target comes up inside the first case)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.targets.base import progress_step, set_progress_writer

REPO = Path(__file__).parents[3]


def test_progress_step_says_start_end_notes_and_failure() -> None:
    lines: list[str] = []
    set_progress_writer(lines.append)
    try:
        with progress_step("qemu", "restoring snapshot") as notes:
            notes.append("VM qemu-1-ab")
        with pytest.raises(RuntimeError), progress_step("qemu", "waiting for SSH"):
            raise RuntimeError("no banner")
    finally:
        set_progress_writer(None)
    assert lines[0] == "qemu: restoring snapshot …"
    assert re.fullmatch(r"qemu: restoring snapshot … VM qemu-1-ab, \d+(\.\d)? s", lines[1])
    assert lines[2] == "qemu: waiting for SSH …"
    assert re.fullmatch(r"qemu: waiting for SSH … failed after \d+(\.\d)? s", lines[3])


_CAPTURED = """
import os, tempfile
from conformance.session import RunSession
from conformance.targets.base import progress_step
session = RunSession("local", ["refrt"])
# What pytest's fd capture does while a case runs: file descriptor 2 goes to a file.
sink = tempfile.TemporaryFile()
os.dup2(sink.fileno(), 2)
with progress_step("qemu", "booting"):
    pass
session.close()
"""


def test_a_runs_progress_reaches_its_stderr_through_fd_capture() -> None:
    result = subprocess.run([sys.executable, "-c", _CAPTURED], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("qemu:")]
    assert lines[0] == "qemu: booting …"
    assert re.fullmatch(r"qemu: booting … \d+(\.\d)? s", lines[1])
