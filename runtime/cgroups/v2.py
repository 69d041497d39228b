"""cgroup v2: one unified hierarchy; controllers are switched on for children via ``cgroup.subtree_control``.

Used on pure v2 hosts (cgroup2 mounted at /sys/fs/cgroup, with ``cgroup.controllers`` there), such as the
Debian 12 VM guests. Docker's v1-style values are converted the way runc converts them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups import devices_bpf
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

WANTED_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), the linear map runc uses."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc converts it."""
    return 1 + ((weight - 10) * 9999) // 990


@dataclass
class V2Cgroup(Cgroup):
    root: Path = Path("/sys/fs/cgroup")

    @property
    def path(self) -> Path:
        return self.root / PARENT / self.name

    def dirs(self) -> list[Path]:
        return [self.path]

    def add(self, pid: int) -> None:
        write(self.path / "cgroup.procs", pid)

    def configure(self, res: Resources) -> None:
        p = self.path
        if res.memory > 0:
            write(p / "memory.max", res.memory)
            if (p / "memory.swap.max").exists():
                if res.memory_swap < 0:
                    write(p / "memory.swap.max", "max")
                else:
                    swap = res.memory_swap if res.memory_swap else 2 * res.memory
                    write(p / "memory.swap.max", max(swap - res.memory, 0))
        if res.nano_cpus > 0:
            quota = CFSQuota.from_nano_cpus(res.nano_cpus)
            write(p / "cpu.max", f"{quota.quota} {quota.period}")
        if res.cpu_shares > 0:
            write(p / "cpu.weight", shares_to_weight(res.cpu_shares))
        if res.cpuset_cpus:
            write(p / "cpuset.cpus", res.cpuset_cpus)
        if res.pids_limit:
            write(p / "pids.max", "max" if res.pids_limit < 0 else res.pids_limit)
        if res.blkio_weight:
            if (p / "io.weight").exists():
                write(p / "io.weight", f"default {blkio_weight_to_io_weight(res.blkio_weight)}")
            elif (p / "io.bfq.weight").exists():
                write(p / "io.bfq.weight", res.blkio_weight)
            else:
                self.warnings.append("kernel does not support Block I/O weight: --blkio-weight discarded")

    def stats(self) -> CgroupStats:
        p = self.path
        out = CgroupStats()
        out.cpu_usage_ns = read_keyed(p / "cpu.stat").get("usage_usec", 0) * 1000
        out.memory_usage = read_int(p / "memory.current")
        out.memory_limit = read_int(p / "memory.max")
        out.memory_cache = read_keyed(p / "memory.stat").get("inactive_file", 0)
        out.pids_current = read_int(p / "pids.current")
        out.pids_limit = read_int(p / "pids.max")
        try:
            lines = (p / "io.stat").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "rbytes":
                    out.blkio_read += int(value)
                elif key == "wbytes":
                    out.blkio_write += int(value)
        return out

    def freeze(self, frozen: bool) -> None:
        if not (self.path / "cgroup.freeze").exists():
            if not frozen:
                return
            raise CgroupError("this kernel has no cgroup.freeze: cannot pause")
        write(self.path / "cgroup.freeze", 1 if frozen else 0)
        deadline = time.monotonic() + 10
        while read_keyed(self.path / "cgroup.events").get("frozen", int(frozen)) != int(frozen):
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name} did not {'freeze' if frozen else 'thaw'}")
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        return read_keyed(self.path / "memory.events").get("oom_kill", 0) > 0

    def kill_all(self, timeout: float = 5.0) -> None:
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            with contextlib.suppress(OSError):
                write(kill_file, 1)
        super().kill_all(timeout)


def _enable_controllers(group: Path) -> None:
    """Switch on, for the children of ``group``, every wanted controller that ``group`` has."""
    available = set((group / "cgroup.controllers").read_text().split())
    enabled = set((group / "cgroup.subtree_control").read_text().split())
    missing = [c for c in WANTED_CONTROLLERS if c in available and c not in enabled]
    if missing:
        write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


class V2Driver(CgroupDriver):
    version = 2

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), *, device_filter: bool = True) -> None:
        self.root = root
        self.device_filter = device_filter  # False only for a fake tree in tests (no cgroup to attach to)

    def open(self, name: str) -> V2Cgroup:
        return V2Cgroup(name=name, root=self.root)

    def create(self, name: str, resources: Resources) -> V2Cgroup:
        _enable_controllers(self.root)
        path = make_group_dir(self.root, name, _enable_controllers)
        group = self.open(name)
        try:
            if self.device_filter:
                devices_bpf.attach(path, DEFAULT_DEVICE_RULES)
            group.configure(resources)
        except BaseException:
            path.rmdir()
            raise
        return group
