"""The product's promise end to end: ``conformance run suites/ --target qemu`` runs every suite in a disposable VM
(a clone of the warm golden snapshot), under the guest's pure cgroup v2, with the registry suite pushing to and
pulling from the harness's registry (bound to the host's loopback, reached through the run's SSH connection),
reports the guest's kernel, and destroys the VM: no qemu process, overlay, run directory or port forward remains.
With ``-n 2`` two guests run at once, one per pytest-xdist worker, and leave nothing either.

The same session runs ``--target local`` first: every case that passes locally must pass in the guest, except a
case the guest skips for a cgroup-layout feature (this host is hybrid, the guest pure v2). Both wall times and
their ratio are printed (issue #15's goal is 2x, 1.5x ideal; under TCG emulation it is not reached, and the test
does not pretend it is: it reports the figure).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parents[2]
RUN_DIR = Path("/run/conformance-vm")

pytestmark = [pytest.mark.vm, pytest.mark.slow]

#: The full run uses one guest: on this 2-core host two TCG guests of 2 vCPUs each (``-n 2``) did not finish the
#: suites sooner (830 s against 649 s for one, measured the same afternoon on the shared machine): the emulation
#: is CPU-bound. ``-n 2`` is checked on a smaller run below.
PARALLEL = 2
PASSING = ("passed", "flaky")
#: A case the guest may skip although it passes here: it names a cgroup layout the guest does not have.
LAYOUT_SKIP = re.compile(r"^missing feature cgroup\.(v1|v2)\b")


def _left_of(vm_id: str) -> list[str]:
    """What is left of one VM: its qemu process (``-name <vm id>``) and its run directory (overlay, serial log,
    QMP socket)."""
    found = subprocess.run(["pgrep", "-f", "--", f"-name {vm_id}"], capture_output=True, text=True)
    return found.stdout.split() + ([str(RUN_DIR / vm_id)] if (RUN_DIR / vm_id).exists() else [])


def _run(paths: str, target: str, report_dir: Path, extra: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", *paths.split(), "--target", target,
                           "--report-dir", str(report_dir), *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=3600)
    return proc, time.monotonic() - started


def _statuses(report_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    document = json.loads((report_dir / "results.json").read_text())
    return document, {f"{c['suite']}::{c['case']}": c for c in document["cases"]}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_every_suite_passes_in_a_qemu_vm_as_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The reference is what passes here: a case failing locally too (a runtime change in progress) is the local
    # suites' business, not the VM's. Exit 1 is "some case failed"; 2 and up would be a harness error.
    local, local_wall = _run("suites/", "local", tmp_path / "local", [])
    assert local.returncode in (0, 1), local.stdout[-5000:]
    proc, vm_wall = _run("suites/", "qemu", tmp_path / "qemu", [])
    output = proc.stdout
    ratio = vm_wall / local_wall
    with capsys.disabled():
        print(f"\nconformance run suites/: --target local {local_wall:.0f} s, --target qemu {vm_wall:.0f} s, "
              f"ratio {ratio:.1f}x (issue #15 goal: <= 2x)", flush=True)
    assert proc.returncode in (0, 1), output[-6000:]

    # The run was never silent while each VM came up: each step as it happened, with its duration, although the
    # target came up inside a case whose output pytest captured. The snapshot restored is the warm one: refrt's
    # daemon is up in the clone at once, nothing is provisioned.
    for step in (r"checking the guest image", r"(making the )?warm golden snapshot \(refrt provisioned\)( ready)?",
                 r"restoring snapshot \((kvm|tcg)\)", r"waiting for SSH on 127\.0\.0\.1:\d+",
                 r"setting the guest clock; refrt's daemon is up"):
        assert re.search(rf"^qemu: {step} … (.+, )?\d+(\.\d)? s$", output, re.MULTILINE), output[:3000]
    ready = re.findall(r"^qemu: ready: VM (qemu-\d+-[0-9a-f]+) at root@127\.0\.0\.1:(\d+)$", output, re.MULTILINE)
    assert len(ready) == 1, output[:3000]

    document, in_vm = _statuses(tmp_path / "qemu")
    assert document["target"]["backend"] == "qemu"
    assert document["target"]["cgroup"] == "v2"
    assert document["target"]["kernel"] != os.uname().release
    _, here = _statuses(tmp_path / "local")
    assert set(in_vm) == set(here)
    lost = {name: f"{case['status']}: {case['message'] or case['reason']}"[:300]
            for name, case in in_vm.items()
            if here[name]["status"] in PASSING and case["status"] not in PASSING
            and not (case["status"] == "skipped" and LAYOUT_SKIP.match(case["reason"]))}
    assert not lost, f"cases that pass locally but not in the guest: {json.dumps(lost, indent=1)}"
    # The registry suite ran in the guests (not skipped for a missing service).
    assert all(in_vm[f"registry::{c}"]["status"] in PASSING for c in ("push-pull-round-trip", "pull-by-digest"))
    masked = in_vm["isolation::proc-files-masked"]
    assert "/proc/kcore 0" in masked["steps"][0]["stdout"]  # the guest's kernel has kcore; this host's has not

    # Nothing left: no qemu process or run directory of the run's VMs, no port forward still listening.
    assert [left for name, _ in ready for left in _left_of(name)] == [], "the run's VMs outlived it"
    assert not [port for _, port in ready if _port_open(int(port))], "a VM's port forward still listens"


def test_two_guests_at_once_with_n_2_leave_nothing(tmp_path: Path) -> None:
    """``-n 2``: each pytest-xdist worker brings up a guest of its own (its own port, overlay and run directory),
    both at once within the machine's memory, and both are destroyed at the end."""
    memory: dict[str, int] = {}
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "run", "suites/host.yaml", "suites/limits.yaml",
                             "--target", "qemu", "-n", str(PARALLEL), "--report-dir", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        for vm_id, _ in re.findall(r"^qemu: ready: VM (qemu-\d+-[0-9a-f]+) at root@127\.0\.0\.1:(\d+)$", line):
            memory[vm_id] = 0
            memory = {vm: _rss_kib(vm) for vm in memory}  # every guest so far, as this one becomes ready
    output = "".join(lines)
    assert proc.wait(timeout=1800) == 0, output[-5000:]
    ready = re.findall(r"^qemu: ready: VM (qemu-\d+-[0-9a-f]+) at root@127\.0\.0\.1:(\d+)$", output, re.MULTILINE)
    assert len({vm for vm, _ in ready}) == PARALLEL and len({port for _, port in ready}) == PARALLEL, output[:3000]
    # Both guests lived at once: the first one's qemu was running when the second said it was ready.
    assert len(memory) == PARALLEL and all(rss > 0 for rss in memory.values()), memory
    assert sum(memory.values()) < 24 * 1024 * 1024, memory  # KiB: well within the 24 GiB budget
    _, in_vm = _statuses(tmp_path)
    assert {c["status"] for c in in_vm.values()} <= {"passed", "flaky", "skipped"}
    assert [left for name, _ in ready for left in _left_of(name)] == [], "the run's VMs outlived it"
    assert not [port for _, port in ready if _port_open(int(port))], "a VM's port forward still listens"


def _rss_kib(vm_id: str) -> int:
    """The resident memory of the qemu process of ``vm_id`` (0 when it is not running)."""
    found = subprocess.run(["pgrep", "-f", "--", f"-name {vm_id}"], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in found:
        with contextlib.suppress(OSError, ValueError):
            total += int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS:")))
    return total
