"""``GET /containers/{id}/stats`` in docker's JSON shape, from :mod:`runtime.container.stats` samples.

docker's clients compute CPU % themselves: the container's CPU time delta over the host's CPU time delta
(``system_cpu_usage``, from /proc/stat) times the number of CPUs, so both counters and the previous sample
(``precpu_stats``) are sent. Memory "usage" minus the inactive file pages is what they show as MEM USAGE; the
same figure is sent under every key the client versions look for (``cache``, ``total_inactive_file``,
``inactive_file``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from runtime.container import stats as st
from runtime.container.state import Container, now_iso

_ZERO_TIME = "0001-01-01T00:00:00Z"
INTERVAL = 1.0


def system_cpu_ns() -> int:
    """All CPUs' time since boot (user+nice+system+idle+...), in nanoseconds, as docker reads it."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields) * 1_000_000_000 // ticks


def _cpu(sample: st.Sample | None, system: int) -> dict[str, Any]:
    usage = sample.cgroup.cpu_usage_ns if sample else 0
    return {"cpu_usage": {"total_usage": usage, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": system if sample else 0, "online_cpus": os.cpu_count() or 1 if sample else 0,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def document(c: Container, now: st.Sample | None, system: int, before: st.Sample | None,
             before_system: int, before_read: str) -> dict[str, Any]:
    """One stats object; ``now`` None for a container that is not running (docker's zeros)."""
    cg = now.cgroup if now else None
    memory: dict[str, Any] = {}
    if cg is not None:
        cache = cg.memory_cache
        memory = {"usage": cg.memory_usage, "limit": cg.memory_limit or st.host_memory(),
                  "stats": {"cache": cache, "total_inactive_file": cache, "inactive_file": cache}}
    blkio = []
    if cg is not None:
        blkio = [{"major": 0, "minor": 0, "op": "read", "value": cg.blkio_read},
                 {"major": 0, "minor": 0, "op": "write", "value": cg.blkio_write}]
    return {
        "read": now_iso() if now else _ZERO_TIME,
        "preread": before_read,
        "pids_stats": {"current": cg.pids_current, **({"limit": cg.pids_limit} if cg.pids_limit else {})}
        if cg else {},
        "blkio_stats": {"io_service_bytes_recursive": blkio},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu(now, system),
        "precpu_stats": _cpu(before, before_system),
        "memory_stats": memory,
        "name": "/" + c.name,
        "id": c.id,
        "networks": {"eth0": {"rx_bytes": now.net_rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                              "tx_bytes": now.net_tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0}}
        if now else {},
    }


def _sample(c: Container) -> st.Sample | None:
    if not c.directory.exists():
        return None
    c.reload_state()
    if not c.state.running:
        return None
    try:
        return st.sample(c)
    except OSError:
        return None


def stats_stream(c: Container, *, once: bool, one_shot: bool = False) -> Iterator[dict[str, Any]]:
    """Samples every second (``once``: a single one, with a previous sample taken a moment before unless
    ``one_shot``, so the client can compute CPU %)."""
    before: st.Sample | None = None
    before_system, before_read = 0, _ZERO_TIME
    if not (once and one_shot):
        before, before_system, before_read = _sample(c), system_cpu_ns(), now_iso()
        time.sleep(0.5 if once else INTERVAL)
    while True:
        now, system = _sample(c), system_cpu_ns()
        yield document(c, now, system, before, before_system, before_read)
        if once or now is None:
            return
        before, before_system, before_read = now, system, now_iso()
        time.sleep(INTERVAL)
