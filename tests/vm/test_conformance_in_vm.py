"""The product's promise end to end: ``conformance run --target qemu`` boots a disposable VM (a clone of the
golden snapshot), provisions refrt into it over SSH, runs isolation and cgroup-limit cases under the guest's
pure cgroup v2, pushes to and pulls from the harness's registry (bound to the host's loopback, reached through the
run's SSH connection), reports the guest's kernel, and destroys the VM: no qemu process and no run directory
remain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
RUN_DIR = Path("/run/conformance-vm")

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# A small cut of the suites: each refrt call in a TCG guest costs seconds, the full suites take ~8 minutes.
CASES = ("pid-1 or capability-bounding-set or network-none or proc-files-masked or memory-oom-kill or pids-limit "
         "or cpu-quota or push-pull-round-trip")


def _machines_of(harness_pid: int) -> list[str]:
    """qemu processes and run directories of the VMs a harness process made (named ``qemu-<pid>-<hex>``)."""
    name = f"qemu-{harness_pid}-"
    found = subprocess.run(["pgrep", "-f", "--", f"-name {name}"], capture_output=True, text=True)
    dirs = [p.name for p in RUN_DIR.iterdir() if p.name.startswith(name)] if RUN_DIR.exists() else []
    return found.stdout.split() + dirs


def test_suites_run_in_a_disposable_qemu_vm_under_cgroup_v2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "suites/isolation.yaml", "suites/limits.yaml",
         "suites/registry.yaml", "--target", "qemu", "-k", CASES, "--report-dir", str(tmp_path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.communicate(timeout=1500)[0]
    assert proc.returncode == 0, output[-5000:]
    # The run was never silent while the VM came up: each step as it happened, with its duration, although the
    # target came up inside a case whose output pytest captured.
    # The snapshot restored is the warm one: refrt answers in the clone at once, nothing is provisioned.
    for step in (r"checking the guest image", r"(making the )?warm golden snapshot \(refrt provisioned\)( ready)?",
                 r"restoring snapshot \((kvm|tcg)\)", r"waiting for SSH on 127\.0\.0\.1:\d+",
                 r"setting the guest clock; refrt's daemon is up", r"refrt: provisioned in the warm snapshot"):
        assert re.search(rf"^qemu: {step} … (.+, )?\d+(\.\d)? s$", output, re.MULTILINE), output[:3000]
    assert re.search(r"^qemu: ready: VM qemu-\d+-[0-9a-f]+ at root@127\.0\.0\.1:\d+$", output, re.MULTILINE)
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["target"]["backend"] == "qemu"
    assert document["target"]["cgroup"] == "v2"
    assert document["target"]["kernel"] != os.uname().release
    names = {case["case"]: case["status"] for case in document["cases"]}
    assert names == dict.fromkeys(("pid-1", "capability-bounding-set", "network-none", "proc-files-masked",
                                   "memory-oom-kill", "pids-limit", "cpu-quota", "push-pull-round-trip"), "passed")
    masked = next(c for c in document["cases"] if c["case"] == "proc-files-masked")
    assert "/proc/kcore 0" in masked["steps"][0]["stdout"]  # the guest's kernel has kcore; this host's has not
    assert _machines_of(proc.pid) == [], "the run's VM (process, overlay, serial log, socket) outlived it"
