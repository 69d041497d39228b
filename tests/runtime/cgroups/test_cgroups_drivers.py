"""Both cgroup drivers map docker's flags to their files: v1 on this kernel, v2 on a fake tree (plus the VM)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from runtime.cgroups import PARENT, Resources, V1Driver, V2Driver, driver_for_host, host_cgroup_version
from runtime.cgroups.v1 import discover_hierarchies
from runtime.cgroups.v2 import blkio_weight_to_io_weight, shares_to_weight

MOUNTINFO_HYBRID = """\
25 1 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""


def test_discover_hierarchies_reads_v1_mounts_only() -> None:
    found = discover_hierarchies(MOUNTINFO_HYBRID)
    assert found["cpu"] == Path("/sys/fs/cgroup/cpu")
    assert found["memory"] == Path("/sys/fs/cgroup/memory")
    assert found["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert "xattr" not in found and Path("/sys/fs/cgroup/unified") not in found.values()


def test_driver_for_host_picks_by_mount(tmp_path: Path) -> None:
    assert host_cgroup_version(tmp_path) == 1
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    assert host_cgroup_version(tmp_path) == 2
    assert isinstance(driver_for_host(tmp_path), V2Driver)


def test_conversions_match_runc() -> None:
    assert shares_to_weight(1024) == 39
    assert shares_to_weight(2) == 1
    assert shares_to_weight(262144) == 10000
    assert blkio_weight_to_io_weight(10) == 1
    assert blkio_weight_to_io_weight(1000) == 10000
    assert blkio_weight_to_io_weight(500) == 4950


def _fake_v2(root: Path) -> None:
    """A v2 root as the kernel presents it: files exist before anyone writes them."""
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")


def test_v2_file_mapping_on_a_fake_tree(tmp_path: Path) -> None:
    _fake_v2(tmp_path)
    d = tmp_path / PARENT / "c1"
    d.mkdir(parents=True)
    for f in ("memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "cpuset.cpus", "pids.max", "io.weight"):
        (d / f).write_text("")  # the kernel creates a group's files with it; a plain mkdir does not
    res = Resources(memory=64 << 20, memory_swap=96 << 20, nano_cpus=1_500_000_000, cpu_shares=512,
                    cpuset_cpus="0-1", pids_limit=42, blkio_weight=500)
    group = V2Driver(tmp_path).open("c1")
    group.configure(res)
    assert group.dirs() == [d]
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == str(32 << 20)  # swap limit excludes memory in v2
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert (d / "cpu.weight").read_text() == str(shares_to_weight(512))
    assert (d / "cpuset.cpus").read_text() == "0-1"
    assert (d / "pids.max").read_text() == "42"
    assert (d / "io.weight").read_text() == "default 4950"
    assert group.warnings == []


def test_v2_create_makes_parent_and_group(tmp_path: Path) -> None:
    _fake_v2(tmp_path)
    (tmp_path / PARENT).mkdir()
    _fake_v2(tmp_path / PARENT)
    group = V2Driver(tmp_path, device_filter=False).create("c3", Resources(pids_limit=-1))
    assert group.path.is_dir() and (group.path / "pids.max").read_text() == "max"
    assert (tmp_path / PARENT / "cgroup.subtree_control").read_text() == "+cpuset +cpu +io +memory +pids"


def test_v2_enables_controllers_and_reads_counters(tmp_path: Path) -> None:
    _fake_v2(tmp_path)
    from runtime.cgroups.v2 import _enable_controllers

    _enable_controllers(tmp_path)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpuset +cpu +io +memory +pids"
    group = V2Driver(tmp_path).open("c2")
    d = group.path
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.max").write_text("max\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (d / "pids.current").write_text("3\n")
    (d / "io.stat").write_text("8:0 rbytes=100 wbytes=200 rios=1 wios=2\n")
    stats = group.stats()
    assert (stats.cpu_usage_ns, stats.memory_usage, stats.memory_limit) == (2_500_000, 4096, 0)
    assert (stats.pids_current, stats.blkio_read, stats.blkio_write) == (3, 100, 200)
    assert group.oom_killed() is True


@pytest.mark.skipif(host_cgroup_version() != 1, reason="cgroup v1 hierarchies not mounted on this host")
def test_v1_real_kernel_files_and_removal() -> None:
    name = f"test-{secrets.token_hex(6)}"
    driver = V1Driver()
    res = Resources(memory=48 << 20, nano_cpus=250_000_000, cpu_shares=256, cpuset_cpus="0", pids_limit=9)
    group = driver.create(name, res)
    proc = None
    try:
        mem = driver.hierarchies["memory"] / PARENT / name
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(48 << 20)
        if (mem / "memory.memsw.limit_in_bytes").exists():  # docker's default: swap as large as memory
            assert (mem / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert "oom_kill_disable 0" in (mem / "memory.oom_control").read_text()
        cpu = driver.hierarchies["cpu"] / PARENT / name
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (cpu / "cpu.shares").read_text().strip() == "256"
        assert (driver.hierarchies["cpuset"] / PARENT / name / "cpuset.cpus").read_text().strip() == "0"
        assert (driver.hierarchies["pids"] / PARENT / name / "pids.max").read_text().strip() == "9"
        if "devices" in driver.hierarchies:  # deny all, then docker's list
            rules = (driver.hierarchies["devices"] / PARENT / name / "devices.list").read_text().splitlines()
            assert "c 1:3 rwm" in rules and "b *:* m" in rules and "a *:* rwm" not in rules
        proc = subprocess.Popen(["sleep", "30"])
        group.add(proc.pid)
        assert group.procs() == [proc.pid]
        assert f"/{PARENT}/{name}" in Path(f"/proc/{proc.pid}/cgroup").read_text()
        time.sleep(0.05)
        assert group.stats().pids_current == 1
        group.kill_all()
        proc.wait(timeout=5)
        assert group.procs() == []
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        group.remove()
    assert not any((base / PARENT / name).exists() for base in driver.hierarchies.values())
    assert not os.path.exists(driver.hierarchies["memory"] / PARENT / name)


@pytest.mark.skipif(host_cgroup_version() != 1, reason="cgroup v1 hierarchies not mounted on this host")
def test_v1_create_rolls_back_on_bad_value() -> None:
    from runtime.cgroups import CgroupError

    name = f"test-{secrets.token_hex(6)}"
    driver = V1Driver()
    with pytest.raises(CgroupError):
        driver.create(name, Resources(cpuset_cpus="999"))
    assert not any((base / PARENT / name).exists() for base in driver.hierarchies.values())


def _cgroup2_mount() -> Path | None:
    """Where cgroup2 is mounted: /sys/fs/cgroup on v2 hosts, /sys/fs/cgroup/unified on hybrid ones."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None


@pytest.mark.skipif(_cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted on this host")
def test_v2_device_filter_on_the_real_kernel() -> None:
    """The eBPF device program (what v2 uses instead of devices.allow) denies the host disk, allows /dev/null."""
    from runtime.cgroups.base import DEFAULT_DEVICE_RULES
    from runtime.cgroups.devices_bpf import attach, parse_rule

    assert parse_rule("c 136:* rwm") == (2, 136, -1, 7)
    mount = _cgroup2_mount()
    assert mount is not None
    group = mount / f"refrt-test-{secrets.token_hex(4)}"
    group.mkdir()
    dev = os.stat("/").st_dev
    try:
        attach(group, DEFAULT_DEVICE_RULES)
        probe = (f"echo $$ > {group}/cgroup.procs; echo x > /dev/null && echo null-ok; "
                 f"mknod {group.name}.node b {os.major(dev)} {os.minor(dev)} && echo mknod-ok; "
                 f"head -c 1 {group.name}.node > /dev/null; rm -f {group.name}.node")
        result = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, cwd="/tmp", timeout=30)
        assert result.stdout.split() == ["null-ok", "mknod-ok"]
        assert "Operation not permitted" in result.stderr
    finally:
        group.rmdir()


@pytest.mark.skipif(_cgroup2_mount() is None, reason="no cgroup2 hierarchy mounted on this host")
def test_v2_driver_on_the_real_cgroup2_mount() -> None:
    """Create/add/kill/remove through the real v2 driver (on hybrid hosts the unified mount lacks the resource
    controllers, so only what every cgroup2 group has is checked; limits run in the v2 VM)."""
    mount = _cgroup2_mount()
    assert mount is not None
    driver = V2Driver(mount)
    name = f"test-{secrets.token_hex(6)}"
    group = driver.create(name, Resources())
    proc = subprocess.Popen(["sleep", "30"])
    try:
        group.add(proc.pid)
        assert group.procs() == [proc.pid]
        assert f"0::/{PARENT}/{name}" in Path(f"/proc/{proc.pid}/cgroup").read_text()
        group.kill_all()
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        group.remove()
    assert not (mount / PARENT / name).exists()
