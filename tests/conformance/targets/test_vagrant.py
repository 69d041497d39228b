"""The vagrant target, end to end: libvirtd, vagrant and the harness all run inside a network namespace this
test creates, so the VM's traffic (libvirt's 192.168.121.0/24 management network) never touches the host's.

One run over two releases (bullseye, Linux 5.10, and trixie, 6.12) also covers the default release's path: the
same box building, Vagrantfile, ``vagrant up``/``destroy`` and SSH, with another box name."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.targets import TargetSpec
from conformance.targets.qemu import CGROUP_CMDLINE
from conformance.targets.vagrant import VagrantTarget
from vm.image import recipe_for
from vm.paths import run_root
from vm.vagrant import CMDLINE, base_volume_prefix, box_name, domain_log, parse_ssh_config, vagrant_home

REPO = Path(__file__).parents[3]


def test_ssh_config_parsing() -> None:
    text = (
        "Host default\n  HostName 192.168.121.7\n  User root\n  Port 22\n  UserKnownHostsFile /dev/null\n"
        '  IdentityFile "/var/key one"\n  IdentitiesOnly yes\n'
    )
    endpoint = parse_ssh_config(text)
    assert (endpoint.host, endpoint.port, endpoint.user, str(endpoint.key)) == ("192.168.121.7", 22, "root",
                                                                                 "/var/key one")


def test_options() -> None:
    target = VagrantTarget(TargetSpec.parse("vagrant?memory=1024&cpus=1&destroy=never"))
    assert (target.memory_mb, target.cpus, target.destroy, target.disposable) == (1024, 1, "never", True)
    from conformance.errors import TargetError

    with pytest.raises(TargetError):
        VagrantTarget(TargetSpec.parse("vagrant?driver=xen"))
    with pytest.raises(TargetError, match="cgroup='v3'"):
        VagrantTarget(TargetSpec.parse("vagrant:bullseye?cgroup=v3"))
    # The release and cgroup layout are spelled as for the qemu target, and given to the box's kernel the same way.
    v1 = VagrantTarget(TargetSpec.parse("vagrant:bullseye?cgroup=v1"))
    assert (v1.name, v1.release) == ("vagrant:bullseye-cgroupv1", "bullseye")
    assert v1.cmdline == f"{CMDLINE} {CGROUP_CMDLINE['v1']}"
    assert VagrantTarget(TargetSpec.parse("vagrant?release=trixie")).name == "vagrant:trixie"
    assert VagrantTarget(TargetSpec.parse("vagrant")).cmdline == CMDLINE


def _in_ns(ns: str, *argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                          check=check)


def _kill_pidfile(path: Path) -> int | None:
    """Stop the daemon whose pid ``path`` holds (SIGTERM, then SIGKILL after 10 s); its pid."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    return pid


@pytest.fixture
def libvirt_netns(tmp_path: Path) -> Iterator[str]:
    for program, package in (("libvirtd", "libvirt-daemon-system"), ("virtlogd", "libvirt-daemon-system"),
                             ("vagrant", "vagrant"), ("virsh", "libvirt-clients")):
        if shutil.which(program) is None:
            pytest.skip(f"{program} not installed (Debian package {package})")
    if Path("/run/libvirt/libvirt-sock").exists():
        probe = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            pytest.fail("a libvirtd already runs on this host; this test starts its own inside a namespace")
    ns = f"conf-vagrant-{uuid.uuid4().hex[:6]}"
    made: list[tuple[str, str]] = []
    pids = tmp_path / "pids"
    pids.mkdir()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        _in_ns(ns, "virtlogd", "-d", "-p", str(pids / "virtlogd.pid"))
        _in_ns(ns, "libvirtd", "-d", "-p", str(pids / "libvirtd.pid"))
        deadline = time.monotonic() + 60
        while _in_ns(ns, "virsh", "-c", "qemu:///system", "version", check=False).returncode != 0:
            assert time.monotonic() < deadline, "libvirtd did not answer within 60 s"
            time.sleep(0.5)
        # libvirt keeps pool and network definitions in /etc/libvirt: remove only those this test made.
        made = [(kind, name) for kind, name in (("pool", "default"), ("net", "vagrant-libvirt"))
                if _in_ns(ns, "virsh", "-c", "qemu:///system", f"{kind}-info", name, check=False).returncode != 0]
        yield ns
    finally:
        # Stopped in any case (the network's dnsmasq runs in this namespace); undefined when this test made them.
        for kind, name in (("net", "vagrant-libvirt"), ("pool", "default")):
            actions = ("destroy", "undefine") if (kind, name) in made else ("destroy",)
            for action in actions:
                _in_ns(ns, "virsh", "-c", "qemu:///system", f"{kind}-{action}", name, check=False)
        daemons = [_kill_pidfile(pids / "libvirtd.pid"), _kill_pidfile(pids / "virtlogd.pid")]
        left = _processes_in(ns, also_daemons=True)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    # The daemons this test started are gone, nothing else ran on in the namespace, and the namespace is gone.
    assert not [pid for pid in daemons if pid is not None and os.path.exists(f"/proc/{pid}")]
    assert left == []
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def _virsh(ns: str, *args: str) -> list[str]:
    return _in_ns(ns, "virsh", "-c", "qemu:///system", *args).stdout.split()


def _volumes(ns: str) -> set[str]:
    """The volumes of libvirt's ``default`` pool (the one vagrant-libvirt uses), none when it is not defined."""
    if _in_ns(ns, "virsh", "-c", "qemu:///system", "pool-info", "default", check=False).returncode != 0:
        return set()
    table = _in_ns(ns, "virsh", "-c", "qemu:///system", "vol-list", "default").stdout.splitlines()[2:]
    return {line.split()[0] for line in table if line.strip()}


def _processes_in(ns: str, also_daemons: bool = False) -> list[str]:
    """The processes of the namespace ``ns`` (qemu would be one), as ``pid command``: all of them, or all but
    libvirt's own (its daemons and its network's dnsmasq)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    found = []
    for pid in pids:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if also_daemons or comm not in ("libvirtd", "virtlogd", "dnsmasq"):
            found.append(f"{pid} {comm}")
    return found


#: The host suite and a limits case (refrt, on bullseye through the image's borrowed Python 3.11) keep the run to
#: ~3 minutes on an idle 2-core machine under TCG.
CASES = "host or pids-limit"


@pytest.mark.vm
@pytest.mark.slow
def test_one_run_over_vagrant_bullseye_and_trixie_inside_a_private_netns(libvirt_netns: str, tmp_path: Path) -> None:
    """``--target 'vagrant:bullseye?cgroup=v1' --target vagrant:trixie``: each release's box (built locally from
    its cached image) booted through the project's Vagrantfile, bullseye's with the cgroup v1 hierarchies (a
    kernel argument through the Vagrantfile, as for qemu); one report names Linux 5.10 (cgroup v1) and 6.12
    (cgroup v2); nothing is left."""
    ns = libvirt_netns
    pool = vagrant_home() / "pool"  # the default pool's directory (made by vagrant-libvirt when it defines it)
    volumes_before = _volumes(ns) | (set(os.listdir(pool)) if pool.is_dir() else set())
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "conformance", "run", "suites/host.yaml",
                           "suites/limits.yaml", "-k", CASES, "--target", "vagrant:bullseye?cgroup=v1",
                           "--target", "vagrant:trixie", "--report-dir", str(report)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    document = json.loads((report / "results.json").read_text())
    targets = {t["name"]: t for t in document["targets"]}
    bullseye, trixie = targets["vagrant:bullseye?cgroup=v1"], targets["vagrant:trixie"]
    assert bullseye["kernel"].startswith("5.10.") and bullseye["cgroup"] == "v1"
    assert trixie["kernel"].startswith("6.12.") and trixie["cgroup"] == "v2"
    per_target: dict[str, dict[str, str]] = {}
    for case in document["cases"]:
        per_target.setdefault(case["target"]["name"], {})[case["case"]] = case["status"]
    assert set(per_target) == set(targets)
    for name, cases in per_target.items():
        # refrt runs on both: on bullseye, whose python3 (3.9) cannot even parse refrt's match statements, through
        # the image's borrowed 3.11 (/usr/local/bin/python3, first on root's PATH over SSH), as on qemu:bullseye.
        assert cases["pids-limit"] == cases["ns-pid"] == "passed", (name, cases)
        layout = "cgroup-v1-layout" if targets[name]["cgroup"] == "v1" else "cgroup-v2-layout"
        other = "cgroup-v2-layout" if layout == "cgroup-v1-layout" else "cgroup-v1-layout"
        assert (cases[layout], cases[other]) == ("passed", "skipped"), (name, cases)
    matrix = (report / "matrix.md").read_text()
    assert "refrt@vagrant:bullseye?cgroup=v1 (Linux 5.10." in matrix and "cgroup v1)" in matrix
    assert "refrt@vagrant:trixie (Linux 6.12." in matrix
    # Each VM came up through vagrant on libvirt's network inside the namespace, saying each step as it went.
    for release in ("bullseye", "trixie"):
        assert f"vagrant: checking the guest image … {release}, " in proc.stderr, proc.stderr[-3000:]
    for step in (r"checking the box", r"vagrant up \(qemu\)", r"waiting for SSH on [\d.]+:\d+"):
        found = re.findall(rf"^vagrant: {step} … (.+, )?\d+(\.\d)? s$", proc.stderr, re.MULTILINE)
        assert len(found) == 2, (step, proc.stderr[-3000:])
    vms = re.findall(r"^vagrant: ready: VM (vagrant-\S+) at root@192\.168\.121\.\d+:22$", proc.stderr,
                     re.MULTILINE)
    assert len(vms) == 2, proc.stderr[-3000:]
    # Nothing left: no domain, no qemu (nor any other process) in the namespace, no run directory nor libvirt's
    # log of the domain, no volume but the boxes' base volumes (vagrant-libvirt's upload of each box, a cache kept
    # like the box itself and removed with it).
    assert _virsh(ns, "list", "--all", "--name") == []
    assert _processes_in(ns) == []
    assert not [vm for vm in vms if (run_root() / vm).exists() or domain_log(vm).exists()]
    boxes = [box_name(release, recipe_for(release).key()) for release in ("bullseye", "trixie")]
    left = (_volumes(ns) | set(os.listdir(pool))) - volumes_before
    assert not [v for v in left if not any(v.startswith(base_volume_prefix(box)) for box in boxes)], left
