"""cgroup limits seen from the outside: OOM kill, pids limit, CPU quota - measured on the real counters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runtime.cgroups import driver_for_host
from tests.runtime.container.conftest import Refrt, assert_nothing_left, unique, wait_for

# busybox sh keeps a command substitution's output in memory: 64 MiB of anonymous memory, no swap tricks.
ALLOCATE_64M = 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo survived ${#x}'


def test_memory_limit_oom_kills_with_137(refrt: Refrt) -> None:
    name = unique("oom")
    result = refrt("run", "--name", name, "--network", "none", "-m", "32m", "busybox", "sh", "-c", ALLOCATE_64M)
    try:
        assert result.returncode == 137, result.stdout + result.stderr
        assert "survived" not in result.stdout
        info = refrt.inspect(name)
        assert info["State"]["OOMKilled"] is True
        assert info["State"]["ExitCode"] == 137
        assert info["HostConfig"]["Memory"] == 32 * 1024 * 1024
    finally:
        refrt("rm", name)


def test_memory_under_limit_is_not_oom(refrt: Refrt) -> None:
    name = unique("nooom")
    result = refrt("run", "--name", name, "--network", "none", "-m", "512m", "busybox", "sh", "-c", ALLOCATE_64M)
    try:
        assert result.returncode == 0, result.stderr
        assert "survived 67108864" in result.stdout
        assert refrt.inspect(name)["State"]["OOMKilled"] is False
    finally:
        refrt("rm", name)


def test_pids_limit_stops_a_fork_loop(refrt: Refrt) -> None:
    name = unique("pids")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "--pids-limit", "20", "busybox", "sh", "-c",
                # the inner shell forks until the kernel refuses; the outer one survives it (exec, no fork)
                'sh -c "for i in \\$(seq 1 60); do sleep 30 & done"; exec sleep 30', check=True).stdout.strip()
    try:
        group = driver_for_host().open(cid)
        wait_for(lambda: "can't fork" in refrt("logs", name).stderr, timeout=15)
        stats = group.stats()
        assert stats.pids_limit == 20
        assert 15 <= stats.pids_current <= 20, stats
        assert refrt.inspect(name)["State"]["Running"] is True
    finally:
        refrt("rm", "-f", name, check=True)
    assert_nothing_left(refrt, cid, [])


@pytest.mark.slow
def test_cpus_half_gets_at_most_half_a_cpu(refrt: Refrt) -> None:
    name = unique("cpu")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "--cpus", "0.5", "busybox", "sh", "-c",
                "while :; do :; done", check=True).stdout.strip()
    try:
        group = driver_for_host().open(cid)
        start_usage, start = group.stats().cpu_usage_ns, time.monotonic()
        time.sleep(3)
        used = (group.stats().cpu_usage_ns - start_usage) / ((time.monotonic() - start) * 1e9)
        assert used <= 0.55, f"container used {used:.2f} CPUs"
        assert used >= 0.1, f"the busy loop barely ran ({used:.2f} CPUs): is the container running?"
        info = refrt.inspect(name)
        assert info["HostConfig"]["NanoCpus"] == 500_000_000
    finally:
        refrt("rm", "-f", name, check=True)


def test_limit_files_written(refrt: Refrt) -> None:
    """The flags reach the cgroup files of this host's driver (values as docker maps them)."""
    name = unique("limits")
    cid = refrt("run", "-d", "--name", name, "--network", "none", "-m", "48m", "--memory-swap", "96m",
                "--cpus", "1.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "33",
                "busybox", "sleep", "30", check=True).stdout.strip()
    try:
        group = driver_for_host().open(cid)
        dirs = {d.parent.parent.name: d for d in group.dirs()}
        if driver_for_host().version == 1:
            assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
            if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                assert (dirs["memory"] / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 << 20)
            assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "150000"
            assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
            assert (dirs["cpu"] / "cpu.shares").read_text().strip() == "512"
            assert (dirs["cpuset"] / "cpuset.cpus").read_text().strip() == "0"
            assert (dirs["pids"] / "pids.max").read_text().strip() == "33"
        else:
            d = group.dirs()[0]
            assert (d / "memory.max").read_text().strip() == str(48 << 20)
            assert (d / "cpu.max").read_text().strip() == "150000 100000"
            assert (d / "pids.max").read_text().strip() == "33"
        # the container sees its own group, read-only, at /sys/fs/cgroup (docker's layout for v1 and v2)
        inside = "/sys/fs/cgroup/pids/pids.max" if driver_for_host().version == 1 else "/sys/fs/cgroup/pids.max"
        seen = refrt("exec", name, "sh", "-c", f"cat {inside}; echo 1 > {inside} || echo read-only")
        assert seen.stdout.split() == ["33", "read-only"]
        pid = refrt.inspect(name)["State"]["Pid"]
        cgroup_lines = Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/refrt/{cid}" in cgroup_lines
    finally:
        refrt("rm", "-f", name, check=True)


def test_stats_no_stream_reports_real_counters(refrt: Refrt) -> None:
    name = unique("stats")
    refrt("run", "-d", "--name", name, "--network", "none", "-m", "64m", "busybox", "sh", "-c",
          "x=$(head -c 8388608 /dev/zero | tr '\\0' a); sleep 30; echo ${#x}", check=True)
    try:
        wait_for(lambda: refrt("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true")
        time.sleep(0.5)
        result = refrt("stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}", name)
        assert result.returncode == 0, result.stderr
        got_name, mem, pids, cpu = result.stdout.strip().split("|")
        assert got_name == name
        used, limit = mem.split(" / ")
        assert limit == "64MiB"
        assert used.endswith("MiB") and float(used[:-3]) >= 4
        assert int(pids) >= 2
        assert cpu.endswith("%")
        table = refrt("stats", "--no-stream", name).stdout.splitlines()
        assert table[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    finally:
        refrt("rm", "-f", name, check=True)
