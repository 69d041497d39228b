"""Live probes on this machine (hybrid cgroups, overlay, all namespaces, veth/bridge, NAT) and that they leak
nothing: no scratch cgroup, no temp dir, no mount, no link, no NAT rule left behind."""

from __future__ import annotations

import glob
import json
import subprocess
from pathlib import Path

from conformance.kernel import Manifest, check, features, load_manifest
from conformance.kernel.manifest import _cache_path
from conformance.targets import Target


def snapshot() -> dict[str, object]:
    """What a probe could leak on the host."""
    return {
        "cgroups": sorted(glob.glob("/sys/fs/cgroup/*/conformance-probe-*")
                          + glob.glob("/sys/fs/cgroup/conformance-probe-*")),
        "tmp": sorted(glob.glob("/tmp/conformance-overlay-*")),
        "mounts": [line for line in Path("/proc/self/mounts").read_text().splitlines()
                   if "conformance-overlay" in line or (line.startswith("overlay ") and "lowerdir=00" in line)],
        "links": [line.split(":")[1].strip() for line in subprocess.run(
            ["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()
            if "cfprobe" in line],
        "nat": [line for line in subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True,
                                                check=False).stdout.splitlines() if "10.199.0.0" in line],
        "nft": "conformance_probe" in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                                     check=False).stdout,
    }


def test_finds_the_hybrid_cgroup_layout(local_manifest: Manifest) -> None:
    probes = local_manifest.probes
    hybrid = Path("/sys/fs/cgroup/unified/cgroup.controllers").exists() and Path("/sys/fs/cgroup/memory").is_dir()
    assert hybrid, "this test describes the development machine's hybrid layout"
    assert probes["cgroup.hybrid"].ok and probes["cgroup.hybrid"].value == "hybrid"
    assert probes["cgroup.v1"].ok and probes["cgroup.v2"].ok
    assert "/sys/fs/cgroup/unified" in probes["cgroup.v2"].evidence
    assert probes["cgroup.v1.memory"].ok and probes["cgroup.v1.pids"].ok and probes["cgroup.v1.cpu"].ok
    assert not probes["cgroup.v2.memory"].ok  # the unified mount here lists only hugetlb
    assert probes["cgroup.memory.enforced"].ok, probes["cgroup.memory.enforced"].evidence
    assert probes["cgroup.pids.enforced"].ok, probes["cgroup.pids.enforced"].evidence


def test_finds_every_namespace_overlay_and_network(local_manifest: Manifest) -> None:
    keys = features(local_manifest)
    for key in ("ns.mount", "ns.pid", "ns.net", "ns.ipc", "ns.uts", "ns.user", "ns.cgroup",
                "overlay", "net.veth", "net.bridge", "net.iptables_nat", "net.nft_nat", "seccomp",
                "cgroup.memory", "cgroup.pids"):
        assert keys[key], f"{key}: {local_manifest.probes.get(key)}"
    lowers = local_manifest.probes["overlay.max_lowerdirs"]
    assert isinstance(lowers.value, int) and 2 <= lowers.value <= 1024, lowers
    assert "refused" in lowers.evidence or lowers.value == 1024
    assert local_manifest.probes["kernel"].value == subprocess.run(
        ["uname", "-r"], capture_output=True, text=True, check=True).stdout.strip()


def test_verdict_and_json_shape(local_manifest: Manifest) -> None:
    data = local_manifest.to_json()
    assert data["verdict"]["status"] == "ok", data["verdict"]
    assert data["config_source"] == "/proc/config.gz"
    assert set(data["config"].values()) <= {"enabled", "module", "missing", "n/a"}
    assert data["config"]["CONFIG_OVERLAY_FS"] in ("enabled", "module")
    for probe in data["probes"].values():
        assert isinstance(probe["ok"], bool) and probe["evidence"]
    assert Manifest.from_json(data).to_json() == data


def test_probes_leave_nothing_behind(local_target: Target) -> None:
    before = snapshot()
    check(local_target)
    assert snapshot() == before


def test_cache_is_reused_while_boot_id_is_unchanged(local_target: Target, tmp_path: Path) -> None:
    first = check(local_target, cache_dir=tmp_path)
    path = _cache_path(tmp_path, local_target)
    data = json.loads(path.read_text())
    data["seconds"] = 4242.0  # a marker: only a reused manifest carries it
    path.write_text(json.dumps(data))
    assert check(local_target, cache_dir=tmp_path).seconds == 4242.0
    data["boot_id"] = "another-boot"
    path.write_text(json.dumps(data))
    assert check(local_target, cache_dir=tmp_path).seconds != 4242.0
    assert load_manifest(path).boot_id == first.boot_id
