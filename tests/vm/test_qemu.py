"""qemu machinery faults and clean-up on a real VM: a guest that cannot boot, a SIGKILLed harness, KVM probing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.errors import TargetError
from conformance.targets import get_target
from vm import paths, qemu
from vm.errors import VmBootError
from vm.image import ensure_image
from vm.initrd import NO_ROOT_MARKER
from vm.state import load_records

pytestmark = [pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).parents[2]


def test_a_guest_that_cannot_boot_is_a_target_error_with_the_serial_tail() -> None:
    before = {r.vm_id for r in load_records()}
    target = get_target("qemu?append=root%3D/dev/nonexistent%20conformance.rootwait%3D2&boot_timeout=120")
    start = time.monotonic()
    with pytest.raises(TargetError) as info:
        target.up()
    assert isinstance(info.value, VmBootError)
    assert "exited" in str(info.value)
    assert NO_ROOT_MARKER in info.value.evidence
    assert "root=/dev/nonexistent" in info.value.evidence
    assert time.monotonic() - start < 120  # the VM powered itself off: no waiting for the SSH deadline
    assert {r.vm_id for r in load_records()} <= before  # its files are gone
    target.down()  # safe after a failed up()


def test_a_silent_guest_ends_at_the_ssh_deadline_with_the_serial_tail() -> None:
    image = ensure_image()
    config = qemu.MachineConfig()
    golden = qemu.ensure_golden(image, config, qemu.detect_accel(image), boot_timeout=300)
    machine = qemu.Machine(image, config, qemu.detect_accel(image))
    try:
        machine.start(golden.disk, incoming=golden.state)
        assert machine.qmp is not None
        machine.qmp.execute("stop")  # qemu alive, port forwarded, guest frozen: sshd never answers
        with pytest.raises(VmBootError, match="did not answer SSH within 5 s") as info:
            qemu.connect_ssh(machine, 5)
        assert "serial console tail" in info.value.evidence
        assert machine.alive()
    finally:
        machine.destroy()
    assert not machine.run_dir.exists()


def test_sigkilled_harness_leaves_no_vm_after_vm_clean() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import json, sys, time\n"
         "from conformance.targets import get_target\n"
         "t = get_target('qemu'); t.up()\n"
         "print(json.dumps(t.status()), flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    status = json.loads(child.stdout.readline())
    run_dir = Path(status["serial_log"]).parent
    assert run_dir.exists() and os.path.exists(f"/proc/{status['pid']}")
    child.send_signal(signal.SIGKILL)
    child.wait()
    clean = subprocess.run(
        [sys.executable, "-c", "from conformance.cli import main; raise SystemExit(main(['vm', 'clean']))"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert clean.returncode == 0, clean.stderr
    assert status["vm_id"] in clean.stdout
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{status['pid']}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{status['pid']}")
    assert not run_dir.exists()
    assert status["vm_id"] not in {r.vm_id for r in load_records()}


def test_kvm_probe_verdict_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = ensure_image()
    # The probe mechanism itself works: under TCG the guest kernel reaches the initrd's marker.
    assert qemu.probe_accel(image, "tcg", deadline=120)
    monkeypatch.delenv("CONFORMANCE_VM_ACCEL", raising=False)
    monkeypatch.setattr(paths, "cache_root", lambda: tmp_path)
    calls: list[str] = []

    def fake_probe(img: object) -> bool:
        calls.append("probe")
        return False

    monkeypatch.setattr(qemu, "probe_kvm", fake_probe)
    first = qemu.detect_accel(image)
    second = qemu.detect_accel(image)
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert calls == ["probe"]
        assert json.loads((tmp_path / "accel.json").read_text())["accel"] == "tcg"
    else:
        assert calls == []
    assert first == second == "tcg"
    monkeypatch.setenv("CONFORMANCE_VM_ACCEL", "kvm")
    assert qemu.detect_accel(image) == "kvm"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_vm_is_destroyed_when_the_harness_is_interrupted(signum: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import json, time\n"
         "from conformance.targets import get_target\n"
         "t = get_target('qemu'); t.up()\n"
         "print(json.dumps(t.status()), flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    status = json.loads(child.stdout.readline())
    run_dir = Path(status["serial_log"]).parent
    assert run_dir.exists()
    child.send_signal(signum)
    child.wait(timeout=60)
    # Destroyed by the harness itself on its way out (not by a later reaper): files and process gone now.
    assert not run_dir.exists()
    assert not os.path.exists(f"/proc/{status['pid']}")
