"""The vagrant target, end to end: libvirtd, vagrant and the harness all run inside a network namespace this
test creates, so the VM's traffic (libvirt's 192.168.121.0/24 management network) never touches the host's."""

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
from conformance.targets.vagrant import VagrantTarget
from vm.vagrant import parse_ssh_config

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


def _in_ns(ns: str, *argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                          check=check)


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


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
        for kind, name in made:
            for action in ("destroy", "undefine"):
                _in_ns(ns, "virsh", "-c", "qemu:///system", f"{kind}-{action}", name, check=False)
        _kill_pidfile(pids / "libvirtd.pid")
        _kill_pidfile(pids / "virtlogd.pid")
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.vm
@pytest.mark.slow
def test_vagrant_up_run_destroy_inside_a_private_netns(libvirt_netns: str) -> None:
    script = (
        "import json\n"
        "from conformance.targets import get_target\n"
        "t = get_target('vagrant')\n"
        "t.up()\n"
        "status = t.status()\n"
        "out = {'status': status, 'hostname': t.run('hostname').stdout, 'facts': t.facts()}\n"
        "t.down()\n"
        "print(json.dumps(out))\n"
    )
    proc = _in_ns(libvirt_netns, sys.executable, "-c", script, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hostname"] == "conformance-vm\n"
    assert result["facts"]["cgroup"] == "v2"
    assert result["status"]["ssh"].split("@")[1].startswith("192.168.121.")
    # vagrant up said each step with its duration as it happened (stderr: the default progress writer).
    for step in (r"checking the guest image", r"checking the box", r"vagrant up \(qemu\)",
                 r"waiting for SSH on [\d.]+:\d+"):
        assert re.search(rf"^vagrant: {step} … (.+, )?\d+(\.\d)? s$", proc.stderr, re.MULTILINE), proc.stderr[-3000:]
    assert re.search(r"^vagrant: ready: VM ", proc.stderr, re.MULTILINE)
    domains = _in_ns(libvirt_netns, "virsh", "-c", "qemu:///system", "list", "--all", "--name").stdout.split()
    assert not [d for d in domains if d.startswith(result["status"]["vm_id"])]
    assert not Path(result["status"]["serial_log"]).parent.exists()
