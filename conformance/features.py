"""What the target and the runtime under test can do, as feature keys that suites ``require``.

Kernel and host keys come from the kernel check's manifest (``conformance.kernel``) when it is available, else
from a quick probe of the few keys the foundation needs; runtime keys come from the driver and service keys from
the harness. A missing key turns a case into a skip whose reason names the key and the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.targets.base import Target


@dataclass(frozen=True)
class Feature:
    ok: bool
    evidence: str


# Each line: key, then a shell test that succeeds when the feature is usable. Run in one round trip.
_QUICK_PROBES = {
    "ns.mount": "unshare --mount true",
    "ns.pid": "unshare --pid --fork true",
    "ns.net": "unshare --net true",
    "ns.ipc": "unshare --ipc true",
    "ns.uts": "unshare --uts true",
    "ns.user": "unshare --user true",
    "ns.cgroup": "unshare --cgroup true",
    "cgroup.v2": "grep -q '^cgroup2 /sys/fs/cgroup ' /proc/mounts",
    "cgroup.hybrid": "grep -q '^cgroup2 /sys/fs/cgroup/unified ' /proc/mounts",
    "cgroup.v1": "grep -q '^cgroup /sys/fs/cgroup/' /proc/mounts",
    "overlay": "grep -qw overlay /proc/filesystems || modprobe overlay",
    "net.veth": "ip link add cfprobe0 type veth peer name cfprobe1 && ip link del cfprobe0",
}


def quick_probe(target: Target) -> dict[str, Feature]:
    script = "; ".join(f"if {test} >/dev/null 2>&1; then echo '{key} 1'; else echo '{key} 0'; fi"
                       for key, test in _QUICK_PROBES.items())
    result = target.run(script, timeout=60)
    found: dict[str, Feature] = {}
    for line in result.stdout.splitlines():
        key, _, ok = line.partition(" ")
        found[key] = Feature(ok == "1", f"`{_QUICK_PROBES[key]}` {'succeeded' if ok == '1' else 'failed'}")
    return found


def target_features(target: Target) -> dict[str, Feature]:
    """Feature keys of the target host: the kernel check's manifest when present, else the quick probe."""
    try:
        from conformance.kernel.manifest import check
    except ImportError:
        return quick_probe(target)
    manifest = check(target)
    return {key: Feature(bool(probe.ok), str(probe.evidence)) for key, probe in manifest.probes.items()}


def missing(requires: list[str], features: dict[str, Feature]) -> str | None:
    """The skip reason for the first required key that is absent or not ok, else None."""
    for key in requires:
        feature = features.get(key)
        if feature is None:
            return f"missing feature {key}: not probed on this target"
        if not feature.ok:
            return f"missing feature {key}: {feature.evidence}"
    return None
