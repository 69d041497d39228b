"""The product's promise end to end: ``conformance run --target qemu`` boots a disposable VM (a clone of the
golden snapshot), provisions refrt into it over SSH, runs isolation and cgroup-limit cases under the guest's
pure cgroup v2, reports the guest's kernel, and destroys the VM: no qemu process and no run directory remain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
RUN_DIR = Path("/run/conformance-vm")

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# A small cut of the suites: each refrt call in a TCG guest costs seconds, the full suites take ~8 minutes.
CASES = "pid-1 or capability-bounding-set or network-none or memory-oom-kill or pids-limit or cpu-quota"


def _qemu_pids() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True)
    return set(found.stdout.split())


def _run_dirs() -> set[str]:
    return {p.name for p in RUN_DIR.iterdir()} if RUN_DIR.exists() else set()


def test_suites_run_in_a_disposable_qemu_vm_under_cgroup_v2(tmp_path: Path) -> None:
    before_pids, before_dirs = _qemu_pids(), _run_dirs()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "suites/isolation.yaml", "suites/limits.yaml",
         "--target", "qemu", "-k", CASES, "--report-dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["target"]["backend"] == "qemu"
    assert document["target"]["cgroup"] == "v2"
    assert document["target"]["kernel"] != os.uname().release
    names = {case["case"]: case["status"] for case in document["cases"]}
    assert names == dict.fromkeys(("pid-1", "capability-bounding-set", "network-none", "memory-oom-kill",
                                   "pids-limit", "cpu-quota"), "passed")
    assert _qemu_pids() <= before_pids, "the run's VM outlived it"
    assert _run_dirs() <= before_dirs, "the run's VM left its overlay/serial log/socket directory"
