"""cgroup v1: one directory per hierarchy, each controller with its own files.

Used on hosts where the v1 hierarchies are mounted under /sys/fs/cgroup/<controller> - including "hybrid" hosts
whose cgroup2 mount at /sys/fs/cgroup/unified holds no controllers we need. A container's group is created in
every mounted hierarchy so that it is placed completely, as docker's cgroupfs driver does.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cgroups.base import (
    DEFAULT_DEVICE_RULES,
    PARENT,
    CFSQuota,
    Cgroup,
    CgroupDriver,
    CgroupError,
    CgroupStats,
    Resources,
    make_group_dir,
    read_int,
    read_keyed,
    write,
)

# The kernel reports "unlimited" memory as the largest page-aligned long.
_UNLIMITED_MEMORY = 0x7FFFFFFFFFFFF000


# Super-block options of a v1 cgroup mount that are not controller names.
_NOT_CONTROLLERS = frozenset({"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"})


def discover_hierarchies(mountinfo: str | None = None) -> dict[str, Path]:
    """Map each v1 controller (and ``name=`` hierarchy) to its mount point, from /proc/self/mountinfo."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    result: dict[str, Path] = {}
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] != "cgroup":
            continue
        mountpoint = Path(fields[4])
        for option in rfields[2].split(","):
            if option in _NOT_CONTROLLERS or option.startswith("release_agent="):
                continue
            result.setdefault(option, mountpoint)
    return result


@dataclass
class V1Cgroup(Cgroup):
    hierarchies: dict[str, Path] = field(default_factory=dict)

    def _dir(self, controller: str) -> Path | None:
        base = self.hierarchies.get(controller)
        return None if base is None else base / PARENT / self.name

    def dirs(self) -> list[Path]:
        unique = {base for base in self.hierarchies.values()}
        return [base / PARENT / self.name for base in sorted(unique)]

    def add(self, pid: int) -> None:
        for d in self.dirs():
            write(d / "cgroup.procs", pid)

    def configure(self, res: Resources) -> None:
        """Write docker's flags to the v1 files (memory first: memsw may never be below it)."""
        devices = self._dir("devices")
        if devices is not None and (devices / "devices.deny").exists():
            restrict_devices(devices)
        mem = self._dir("memory")
        if mem is not None:
            write(mem / "memory.oom_control", 0)  # let the OOM killer act on this group (not pause it)
            if res.memory > 0:
                write(mem / "memory.limit_in_bytes", res.memory)
                swap = res.memory_swap if res.memory_swap else 2 * res.memory  # docker: swap = memory by default
                if (mem / "memory.memsw.limit_in_bytes").exists():
                    write(mem / "memory.memsw.limit_in_bytes", -1 if swap < 0 else swap)
                elif res.memory_swap:
                    self.warnings.append("memory.memsw.limit_in_bytes missing: --memory-swap discarded")
        cpu = self._dir("cpu")
        if cpu is not None:
            if res.nano_cpus > 0:
                quota = CFSQuota.from_nano_cpus(res.nano_cpus)
                write(cpu / "cpu.cfs_period_us", quota.period)
                write(cpu / "cpu.cfs_quota_us", quota.quota)
            if res.cpu_shares > 0:
                write(cpu / "cpu.shares", res.cpu_shares)
        cpuset = self._dir("cpuset")
        if cpuset is not None and res.cpuset_cpus:
            write(cpuset / "cpuset.cpus", res.cpuset_cpus)
        pids = self._dir("pids")
        if pids is not None and res.pids_limit:
            write(pids / "pids.max", "max" if res.pids_limit < 0 else res.pids_limit)
        if res.blkio_weight:
            blkio = self._dir("blkio")
            if blkio is not None and (blkio / "blkio.weight").exists():
                write(blkio / "blkio.weight", res.blkio_weight)
            else:
                self.warnings.append("kernel does not support Block I/O weight: --blkio-weight discarded")

    def stats(self) -> CgroupStats:
        out = CgroupStats()
        acct = self._dir("cpuacct")
        if acct is not None:
            out.cpu_usage_ns = read_int(acct / "cpuacct.usage")
        mem = self._dir("memory")
        if mem is not None:
            out.memory_usage = read_int(mem / "memory.usage_in_bytes")
            limit = read_int(mem / "memory.limit_in_bytes")
            out.memory_limit = 0 if limit >= _UNLIMITED_MEMORY else limit
            out.memory_cache = read_keyed(mem / "memory.stat").get("total_inactive_file", 0)
        pids = self._dir("pids")
        if pids is not None:
            out.pids_current = read_int(pids / "pids.current")
            out.pids_limit = read_int(pids / "pids.max")
        blkio = self._dir("blkio")
        if blkio is not None:
            try:
                lines = (blkio / "blkio.throttle.io_service_bytes_recursive").read_text().splitlines()
            except OSError:
                lines = []
            for line in lines:
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    out.blkio_read += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    out.blkio_write += int(parts[2])
        return out

    def freeze(self, frozen: bool) -> None:
        freezer = self._dir("freezer")
        if freezer is None or not (freezer / "freezer.state").exists():
            if not frozen:
                return
            raise CgroupError("the freezer cgroup controller is not mounted: cannot pause")
        wanted = "FROZEN" if frozen else "THAWED"
        deadline = time.monotonic() + 10
        while True:
            write(freezer / "freezer.state", wanted)
            if (freezer / "freezer.state").read_text().strip() == wanted:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name} did not reach {wanted}")
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        mem = self._dir("memory")
        if mem is None:
            return False
        return read_keyed(mem / "memory.oom_control").get("oom_kill", 0) > 0


def restrict_devices(group: Path) -> None:
    """Deny every device, then allow docker's list: CAP_MKNOD must not open the host's disks."""
    write(group / "devices.deny", "a")
    for rule in DEFAULT_DEVICE_RULES:
        write(group / "devices.allow", rule)


def _prepare_parent(parent: Path) -> None:
    """Settings the ``refrt`` parent needs before it can hold children."""
    cpus = parent / "cpuset.cpus"
    if cpus.exists():
        _inherit_cpuset(parent)
    use_hierarchy = parent / "memory.use_hierarchy"
    if use_hierarchy.exists() and read_int(use_hierarchy) != 1:
        with contextlib.suppress(CgroupError):  # so the parent's accounting includes its children
            write(use_hierarchy, 1)


def _inherit_cpuset(group: Path) -> None:
    """A new v1 cpuset group starts with no CPUs and no memory nodes; copy the parent's (else no task fits)."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (group / name).read_text().strip():
            write(group / name, (group.parent / name).read_text().strip())


class V1Driver(CgroupDriver):
    version = 1

    def __init__(self, hierarchies: dict[str, Path] | None = None) -> None:
        self.hierarchies = hierarchies if hierarchies is not None else discover_hierarchies()

    def open(self, name: str) -> V1Cgroup:
        return V1Cgroup(name=name, hierarchies=dict(self.hierarchies))

    def create(self, name: str, resources: Resources) -> V1Cgroup:
        group = self.open(name)
        created: list[Path] = []
        try:
            for base in sorted(set(self.hierarchies.values())):
                path = make_group_dir(base, name, _prepare_parent)
                created.append(path)
                if (path / "cpuset.cpus").exists():
                    _inherit_cpuset(path)
            group.configure(resources)
        except BaseException:
            for path in reversed(created):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        return group
