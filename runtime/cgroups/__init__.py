"""Control groups for containers: ``driver_for_host()`` picks the v1 or v2 driver from the host's mounts.

A host is "v2" when the unified hierarchy is mounted at /sys/fs/cgroup itself (``cgroup.controllers`` is
there). Otherwise the v1 hierarchies are used - also on hybrid hosts, whose extra cgroup2 mount at
/sys/fs/cgroup/unified carries no resource controllers.
"""

from __future__ import annotations

from pathlib import Path

from runtime.cgroups.base import PARENT, Cgroup, CgroupDriver, CgroupError, CgroupStats, Resources
from runtime.cgroups.v1 import V1Driver
from runtime.cgroups.v2 import V2Driver

__all__ = [
    "PARENT",
    "Cgroup",
    "CgroupDriver",
    "CgroupError",
    "CgroupStats",
    "Resources",
    "V1Driver",
    "V2Driver",
    "driver_for_host",
    "host_cgroup_version",
]


def host_cgroup_version(root: Path = Path("/sys/fs/cgroup")) -> int:
    return 2 if (root / "cgroup.controllers").exists() else 1


def driver_for_host(root: Path = Path("/sys/fs/cgroup")) -> CgroupDriver:
    if host_cgroup_version(root) == 2:
        return V2Driver(root)
    return V1Driver()
