"""check-kernel against a disposable VM guest (Debian 12, pure cgroup v2): the same probe program over SSH finds
the v2 layout, enforces limits through v2 scratch cgroups it removes, and reads /boot/config-$(uname -r)."""

from __future__ import annotations

import shutil

import pytest

from conformance.kernel import check, features
from conformance.targets import get_target

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_check_kernel_on_a_pure_v2_vm_guest() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 absent (Debian package qemu-system-x86, scripts/apt/vm.txt)")
    target = get_target("qemu")
    target.up()
    try:
        manifest = check(target)
        leftovers = target.run("ls -d /sys/fs/cgroup/conformance-probe-* /tmp/conformance-overlay-* 2>/dev/null",
                               timeout=60).stdout
    finally:
        target.down()
    keys = features(manifest)
    assert manifest.probes["cgroup.hybrid"].value == "v2"
    assert keys["cgroup.v2"] and not keys["cgroup.v1"] and not keys["cgroup.hybrid"]
    assert keys["cgroup.v2.memory"] and keys["cgroup.v2.pids"] and keys["cgroup.v2.freezer"]
    assert keys["cgroup.memory.enforced"], manifest.probes["cgroup.memory.enforced"].evidence
    assert "v2 scratch cgroup" in manifest.probes["cgroup.pids.enforced"].evidence
    assert manifest.config_source == f"/boot/config-{manifest.release}"
    assert manifest.config["CONFIG_CGROUP_BPF"] in ("enabled", "module")
    assert manifest.config["CONFIG_CGROUP_FREEZER"] == "n/a"  # v1-only, and this guest is pure v2
    assert keys["overlay"] and keys["ns.user"] and keys["net.veth"] and keys["net.bridge"]
    assert manifest.verdict.ok, manifest.verdict.summary
    assert leftovers.strip() == ""
