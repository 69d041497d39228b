"""What a process inside ``refrt run`` sees: its own PID 1, hostname, network, a masked /proc, docker's caps."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.runtime.container.conftest import Refrt, unique

PROBE = r"""
echo "pid=$$"
echo "procs=$(ls -d /proc/[0-9]* | wc -l)"
echo "hostname=$(hostname)"
echo "links=$(ip -o link | awk -F': ' '{print $2}' | tr '\n' ' ')"
echo "keys=$(wc -c < /proc/keys)"
echo "timer_list=$(wc -c < /proc/timer_list)"
if [ -e /proc/kcore ]; then echo "kcore=$(wc -c < /proc/kcore)"; else echo "kcore=absent"; fi
echo "firmware=$(ls /sys/firmware | wc -l)"
if echo x > /proc/sys/kernel/domainname 2>/dev/null; then echo "procsys=writable"; else echo "procsys=ro"; fi
if touch /sys/x 2>/dev/null; then echo "sys=writable"; else echo "sys=ro"; fi
grep -E '^Cap(Bnd|Eff|Prm|Inh)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
grep NoNewPrivs /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "ptmx=$(readlink /dev/ptmx)"
echo "etc_hostname=$(cat /etc/hostname)"
"""


def parse(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def test_container_sees_only_itself(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "--network", "none", "busybox", "sh", "-c", PROBE)
    assert result.returncode == 0, result.stderr
    seen = parse(result.stdout)
    assert seen["pid"] == "1"
    assert int(seen["procs"]) <= 4  # sh, the $(...) subshell, ls; never the host's hundreds
    assert seen["hostname"] != socket.gethostname()
    assert len(seen["hostname"]) == 12 and seen["etc_hostname"] == seen["hostname"]
    assert seen["links"].split() == ["lo"]
    # masked paths: /dev/null over files, an empty tmpfs over directories
    assert seen["keys"] == "0" and seen["timer_list"] == "0"
    assert seen["kcore"] in ("0", "absent")
    if Path("/proc/kcore").exists():  # this kernel may be built without CONFIG_PROC_KCORE
        assert seen["kcore"] == "0"
    assert seen["firmware"] == "0"
    assert seen["procsys"] == "ro" and seen["sys"] == "ro"
    assert seen["CapBnd"] == "00000000a80425fb"
    assert seen["CapEff"] == seen["CapPrm"] == "00000000a80425fb"
    assert seen["CapInh"] == "0000000000000000"
    assert seen["NoNewPrivs"] == "0"  # as docker: only with --security-opt no-new-privileges
    assert set(seen["dev"].split()) >= {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
                                         "mqueue", "fd", "stdin", "stdout", "stderr"}
    assert seen["ptmx"] == "pts/ptmx"


def test_non_root_user_has_no_effective_capabilities(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "--network", "none", "-u", "65534:65534", "busybox", "sh", "-c",
                   "id -u; id -g; grep -E '^Cap(Eff|Bnd)' /proc/self/status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[:2] == ["65534", "65534"]
    assert "00000000a80425fb" in lines  # bounding set unchanged
    assert lines[lines.index("CapEff:") + 1] == "0000000000000000"


def test_cap_add_and_drop(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "--network", "none", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "busybox",
                   "grep", "CapBnd", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == f"{1 << 12:016x}"


def test_writes_stay_in_the_container_layer(refrt: Refrt) -> None:
    first, second = unique("writer"), unique("reader")
    r1 = refrt("run", "--name", first, "--network", "none", "busybox", "sh", "-c",
               "echo secret > /written-here; stat -c %i /bin/busybox")
    assert r1.returncode == 0, r1.stderr
    r2 = refrt("run", "--name", second, "--network", "none", "busybox", "sh", "-c",
               "cat /written-here 2>/dev/null || echo absent; stat -c %i /bin/busybox")
    assert r2.returncode == 0, r2.stderr
    try:
        out1, out2 = r1.stdout.split(), r2.stdout.split()
        assert out2[0] == "absent"
        info1, info2 = refrt.inspect(first), refrt.inspect(second)
        upper1 = Path(info1["GraphDriver"]["Data"]["UpperDir"])
        assert (upper1 / "written-here").read_text() == "secret\n"
        lowers = info1["GraphDriver"]["Data"]["LowerDir"].split(":")
        assert lowers == info2["GraphDriver"]["Data"]["LowerDir"].split(":")
        assert all(not (Path(lower) / "written-here").exists() for lower in lowers)
        # one copy on disk: both containers see the very inode of the unpacked layer
        layer_inode = next(os.stat(Path(lo) / "bin/busybox").st_ino for lo in lowers
                           if (Path(lo) / "bin/busybox").exists())
        assert int(out1[0]) == int(out2[1]) == layer_inode
    finally:
        refrt("rm", first, second)


def test_read_only_rootfs(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "--network", "none", "--read-only", "busybox", "sh", "-c",
                   "touch /x 2>&1 || echo denied; touch /dev/shm/ok && echo shm-ok")
    assert "Read-only file system" in result.stdout
    assert "shm-ok" in result.stdout


def test_bind_mount_and_tmpfs(refrt: Refrt, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    result = refrt("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data", "-v", f"{tmp_path}:/ro:ro",
                   "--tmpfs", "/scratch:size=1m", "busybox", "sh", "-c",
                   "cat /data/in.txt; echo back > /data/out.txt; touch /ro/x 2>/dev/null || echo ro-denied; "
                   "grep ' /scratch ' /proc/mounts | cut -d' ' -f3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["from host", "ro-denied", "tmpfs"]
    assert (tmp_path / "out.txt").read_text() == "back\n"


def test_privileged_keeps_host_capabilities_and_unmasks(refrt: Refrt) -> None:
    result = refrt("run", "--rm", "--network", "none", "--privileged", "busybox", "sh", "-c",
                   "grep CapBnd /proc/self/status; wc -c < /proc/keys; grep -c ' /proc/sys ' /proc/mounts")
    lines = result.stdout.split()
    host_bounding = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapBnd"))
    assert lines[1] == host_bounding
    assert lines[3] == "0"  # /proc/sys not remounted read-only


def test_parallel_containers_get_their_own_cgroups(refrt: Refrt) -> None:
    import subprocess

    names = [unique("par") for _ in range(4)]
    procs = [refrt.popen("run", "-d", "--name", n, "--network", "none", "busybox", "sleep", "30",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in names]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ids.append(out.strip())
    try:
        from runtime.cgroups import driver_for_host

        driver = driver_for_host()
        for cid in ids:
            pid = refrt.state(cid)["pid"]
            assert driver.open(cid).procs() == [pid]
    finally:
        assert refrt("rm", "-f", *names).returncode == 0
    from tests.runtime.container.conftest import assert_nothing_left

    for cid in ids:
        assert_nothing_left(refrt, cid, [])


def test_mknod_of_a_host_disk_cannot_be_opened(refrt: Refrt) -> None:
    """CAP_MKNOD is in docker's default set; the devices cgroup is what keeps the host's disks out of reach."""
    import pytest

    from runtime.cgroups import driver_for_host

    if driver_for_host().version != 1:
        pytest.skip("device access rules are implemented for the cgroup v1 devices controller only (no v2 eBPF)")
    dev = os.stat("/").st_dev
    result = refrt("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                   f"mknod /dev/hostdisk b {os.major(dev)} {os.minor(dev)} && echo made; "
                   "head -c 1 /dev/hostdisk > /dev/null; echo null-ok > /dev/null && echo null-ok")
    assert "made" in result.stdout and "null-ok" in result.stdout
    assert "Operation not permitted" in result.stderr


def test_userns_private_maps_root_to_an_unprivileged_range(refrt: Refrt) -> None:
    from runtime.container.userns import ranges

    uids, _ = ranges()
    name = unique("userns")
    result = refrt("run", "--name", name, "--userns", "private", "--network", "none", "busybox", "sh", "-c",
                   "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox; echo hi > /etc/new && stat -c %u /etc/new;"
                   " hostname other 2>/dev/null && echo renamed || echo no-sethostname")
    try:
        assert result.returncode == 0, result.stderr
        out = result.stdout.split()
        assert out[0] == "0"  # root inside ...
        assert out[1:4] == ["0", str(uids.base), str(uids.size)]  # ... is uid base on the host
        assert out[4] == "0" and out[5] == "0"  # image files (idmapped) and new files are root's inside
        assert out[6] == "no-sethostname"  # no capability over the host-owned UTS namespace
        upper = Path(refrt.inspect(name)["GraphDriver"]["Data"]["UpperDir"])
        assert (upper / "etc/new").stat().st_uid == uids.base  # and unprivileged on the host
        lowers = refrt.inspect(name)["GraphDriver"]["Data"]["LowerDir"].split(":")
        assert all((Path(lo) / "bin/busybox").stat().st_uid == 0 for lo in lowers if (Path(lo) / "bin").exists())
    finally:
        refrt("rm", name)


def test_subordinate_range_parsing(tmp_path: Path) -> None:
    from runtime.container.userns import DEFAULT_BASE, subordinate_range

    (tmp_path / "subuid").write_text("alice:100000:65536\nrefrt:300000:65536\n")
    assert (subordinate_range(str(tmp_path / "subuid")).base, subordinate_range(str(tmp_path / "subuid")).size) \
        == (300000, 65536)
    assert subordinate_range(str(tmp_path / "missing")).base == DEFAULT_BASE
