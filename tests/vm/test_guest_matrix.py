"""The guest matrix end to end: one ``conformance run`` over three guests - Debian bullseye (Linux 5.10, with a
borrowed Python for refrt), trixie (6.12) and bookworm booted with the cgroup v1 hierarchies - exits 0, and its
one results file and matrix name each guest's kernel and cgroup layout; ``check-kernel`` reports bullseye's
kernel; no VM is left afterwards.

A cut of the host and limits suites keeps the CI cost to about a minute per guest once each guest's golden
snapshots exist (the first run of an image makes them: a cold boot and a warm-up each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
RUN_DIR = Path("/run/conformance-vm")
CASES = "ns-cgroup or cgroup-v1-layout or cgroup-v2-layout or memory-oom-kill or pids-limit"

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def _vms_of(pid: int) -> list[str]:
    found = subprocess.run(["pgrep", "-f", "--", f"-name qemu-{pid}-"], capture_output=True, text=True)
    dirs = [p.name for p in RUN_DIR.iterdir() if p.name.startswith(f"qemu-{pid}-")] if RUN_DIR.exists() else []
    return found.stdout.split() + dirs


def _conformance(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.Popen([sys.executable, "-m", "conformance", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_one_run_over_bullseye_trixie_and_bookworm_with_cgroup_v1(tmp_path: Path) -> None:
    proc = _conformance("run", "suites/host.yaml", "suites/limits.yaml", "-k", CASES,
                        "--target", "qemu:bullseye", "--target", "qemu:trixie", "--target", "qemu:bookworm?cgroup=v1",
                        "--report-dir", str(tmp_path))
    output = proc.communicate(timeout=1800)[0]
    assert proc.returncode == 0, output[-6000:]
    document = json.loads((tmp_path / "results.json").read_text())
    targets = {t["name"]: t for t in document["targets"]}
    assert targets["qemu:bullseye"]["kernel"].startswith("5.10.")
    assert targets["qemu:trixie"]["kernel"].startswith("6.12.")
    assert targets["qemu:bookworm?cgroup=v1"]["kernel"].startswith("6.1.")
    assert targets["qemu:bookworm?cgroup=v1"]["cgroup"] == "v1"
    assert targets["qemu:bullseye"]["cgroup"] == targets["qemu:trixie"]["cgroup"] == "v2"
    per_target: dict[str, dict[str, str]] = {}
    for case in document["cases"]:
        per_target.setdefault(case["target"]["name"], {})[case["case"]] = case["status"]
    assert set(per_target) == set(targets)
    for name, cases in per_target.items():
        # refrt's limits pass on every guest; the layout case of the other layout skips, naming it.
        assert cases["memory-oom-kill"] == cases["pids-limit"] == cases["ns-cgroup"] == "passed", (name, cases)
        layout = "cgroup-v1-layout" if targets[name]["cgroup"] == "v1" else "cgroup-v2-layout"
        other = "cgroup-v2-layout" if layout == "cgroup-v1-layout" else "cgroup-v1-layout"
        assert (cases[layout], cases[other]) == ("passed", "skipped"), (name, cases)
    matrix = (tmp_path / "matrix.md").read_text()
    assert "refrt@qemu:bullseye (Linux 5.10." in matrix and "cgroup v2)" in matrix
    assert "refrt@qemu:bookworm?cgroup=v1 (Linux 6.1." in matrix and "cgroup v1)" in matrix
    assert _vms_of(proc.pid) == []


def test_check_kernel_reports_the_bullseye_guest_kernel() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "check-kernel", "--target", "qemu:bullseye",
                             "--format", "json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    assert json.loads(out)["kernel"]["release"].startswith("5.10.")
    assert _vms_of(proc.pid) == []
