"""``stats``: CPU %, memory, network and block I/O and pids from the real counters, in docker's units."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups import CgroupStats, driver_for_host
from runtime.container.state import Container
from runtime.humanize import binary_size, human_size


@dataclass
class Sample:
    when: float
    cgroup: CgroupStats
    net_rx: int
    net_tx: int


def host_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def net_io(pid: int) -> tuple[int, int]:
    """Bytes received and sent on every interface but ``lo`` of the container's network namespace."""
    rx = tx = 0
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = counters.split()
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx


def sample(c: Container) -> Sample:
    group = driver_for_host().open(c.id)
    rx, tx = net_io(c.state.pid) if c.state.running else (0, 0)
    return Sample(time.monotonic(), group.stats(), rx, tx)


def row(c: Container, before: Sample, after: Sample, no_trunc: bool = False) -> dict[str, str]:
    """One ``stats`` line. CPU % is usage over wall time between the samples (100% = one CPU busy)."""
    wall = (after.when - before.when) * 1e9
    cpu = 100.0 * (after.cgroup.cpu_usage_ns - before.cgroup.cpu_usage_ns) / wall if wall > 0 else 0.0
    cg = after.cgroup
    usage = max(cg.memory_usage - cg.memory_cache, 0)
    limit = cg.memory_limit or host_memory()
    mem_pct = 100.0 * usage / limit if limit else 0.0
    return {
        "Container": c.id if no_trunc else c.short_id,
        "ID": c.id if no_trunc else c.short_id,
        "Name": c.name,
        "CPUPerc": f"{cpu:.2f}%",
        "MemUsage": f"{binary_size(usage)} / {binary_size(limit)}",
        "MemPerc": f"{mem_pct:.2f}%",
        "NetIO": f"{human_size(after.net_rx)} / {human_size(after.net_tx)}",
        "BlockIO": f"{human_size(cg.blkio_read)} / {human_size(cg.blkio_write)}",
        "PIDs": str(cg.pids_current),
    }


HEADERS = {
    "Container": "CONTAINER",
    "ID": "CONTAINER ID",
    "Name": "NAME",
    "CPUPerc": "CPU %",
    "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %",
    "NetIO": "NET I/O",
    "BlockIO": "BLOCK I/O",
    "PIDs": "PIDS",
}
DEFAULT_FORMAT = (
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"
)


