"""The qemu target on a real VM: boot from the golden snapshot, provisioning, commands, and destruction."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest

import runtime
from conformance.errors import CommandTimeout, TargetError
from conformance.targets import get_target
from conformance.targets.base import set_progress_writer
from conformance.targets.qemu import QemuTarget
from vm import paths
from vm.state import load_records

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_commands_exit_status_stdout_stderr_and_stdin(qemu_vm: QemuTarget) -> None:
    result = qemu_vm.run("echo out; echo err >&2; exit 7")
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")
    assert qemu_vm.run("tr a-z A-Z", stdin="hello\n").stdout == "HELLO\n"
    assert qemu_vm.run("sh -c 'kill -9 $$'").exit_status == 137
    big = "x" * 300_000
    assert qemu_vm.run("wc -c", stdin=big).stdout.strip() == "300000"


def test_timeout_kills_the_remote_command(qemu_vm: QemuTarget) -> None:
    """The command's process group and tree die - also a child that was orphaned but kept the group (302) -
    and reading stops at the deadline although that child held the channel open."""
    import time

    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        qemu_vm.run("(sleep 302 &); sleep 300 & sleep 301; echo never", timeout=2)
    assert time.monotonic() - started < 15
    assert re.fullmatch(r"timed out after 2 s on root@127\.0\.0\.1:\d+; killed process group \d+", str(info.value))
    left = qemu_vm.run("pgrep -f 'sleep 30[012]' || true").stdout.strip()
    assert left == ""


def test_facts_of_the_guest(qemu_vm: QemuTarget) -> None:
    facts = qemu_vm.facts()
    assert facts["cgroup"] == "v2"
    assert facts["backend"] == "qemu"
    assert facts["hostname"] == "conformance-vm"
    # What the refrt runtime needs in the guest: python3, busybox-static, overlay loaded at boot.
    probe = qemu_vm.run("python3 -c 'pass' && busybox true && grep -qw overlay /proc/filesystems && echo ok")
    assert probe.stdout.strip() == "ok", probe.stderr


def test_restored_clone_has_the_current_time(qemu_vm: QemuTarget) -> None:
    import time

    guest = float(qemu_vm.run("date +%s.%N").stdout)
    assert abs(guest - time.time()) < 30


def test_put_file_and_tree_then_run_refrt_from_it(qemu_vm: QemuTarget, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from $(hostname)\n")
    script.chmod(0o750)
    qemu_vm.put(script, "/opt/conformance-test/bin/hello.sh")
    assert qemu_vm.run("/opt/conformance-test/bin/hello.sh").stdout == "hello from conformance-vm\n"
    assert qemu_vm.run("stat -c %a /opt/conformance-test/bin/hello.sh").stdout.strip() == "750"
    package = Path(runtime.__file__).parent
    qemu_vm.put(package, "/opt/conformance-test/runtime")
    local_count = len([p for p in package.rglob("*.py") if "__pycache__" not in p.parts])
    remote_count = qemu_vm.run("find /opt/conformance-test/runtime -name '*.py' | wc -l").stdout.strip()
    assert int(remote_count) == local_count
    version = qemu_vm.run("cd /opt/conformance-test && python3 -m runtime --help >/dev/null; echo $?")
    assert version.stdout.strip() in ("0", "2"), version.stderr
    qemu_vm.run("rm -rf /opt/conformance-test")


def test_testinfra_host_uses_the_same_connection(qemu_vm: QemuTarget) -> None:
    assert qemu_vm.session is not None
    transport = qemu_vm.session.client().get_transport()
    host = qemu_vm.host
    assert host.file("/etc/hostname").content_string.strip() == "conformance-vm"
    assert host.package("openssh-server").is_installed
    assert host.check_output("id -u") == "0"
    assert qemu_vm.session.client().get_transport() is transport


def test_ssh_drop_mid_command_is_a_target_error_and_next_run_reconnects(qemu_vm: QemuTarget) -> None:
    with pytest.raises(TargetError) as info:
        # Kill the guest's sshd process serving this connection (the command agent's parent when commands go
        # through it): the TCP connection goes away mid-command.
        qemu_vm.run("p=$PPID; [ \"$(cat /proc/$p/comm)\" = python3 ] && p=$(ps -o ppid= -p $p); kill -9 $p; sleep 30",
                    timeout=60)
    assert "dropped" in str(info.value)
    assert qemu_vm.run("echo back").stdout == "back\n"


def test_command_agent_killed_mid_command_is_a_target_error_and_the_next_run_gets_a_new_one(
        qemu_vm: QemuTarget) -> None:
    assert qemu_vm.session is not None and qemu_vm.session.use_agent
    agent_pid = qemu_vm.run("echo $PPID").stdout.strip()
    assert qemu_vm.run(f"cat /proc/{agent_pid}/comm").stdout.strip() == "python3"
    with pytest.raises(TargetError) as info:
        qemu_vm.run("kill -9 $PPID; sleep 30", timeout=60)
    assert "dropped" in str(info.value)
    assert qemu_vm.run("echo back").stdout == "back\n"
    assert qemu_vm.run("echo $PPID").stdout.strip() != agent_pid
    assert qemu_vm.session.use_agent


def test_disposable_vm_leaves_no_process_overlay_or_port_forward() -> None:
    target = get_target("qemu")
    assert isinstance(target, QemuTarget)
    lines: list[str] = []
    previous = set_progress_writer(lines.append)
    try:
        target.up()
    finally:
        set_progress_writer(previous)
    # Bringing the VM up said what it did, step by step, with durations, as it happened.
    for step in (r"checking the guest image", r"(restoring snapshot \((kvm|tcg)\)|booting \((kvm|tcg), cold\))",
                 r"waiting for SSH on 127\.0\.0\.1:\d+"):
        assert any(re.fullmatch(rf"qemu: {step} …", line) for line in lines), lines
        assert any(re.fullmatch(rf"qemu: {step} … (.+, )?\d+(\.\d)? s", line) for line in lines), lines
    assert any(line.startswith("qemu: ready: VM ") for line in lines), lines
    try:
        status = target.status()
        assert target.machine is not None
        run_dir, port, pid = target.machine.run_dir, target.machine.port, status["pid"]
        assert port is not None
        assert (run_dir / "disk.qcow2").exists() and _port_open(port)
        assert target.run("echo ok").stdout == "ok\n"
    finally:
        target.down()
    assert not os.path.exists(f"/proc/{pid}")
    assert not run_dir.exists()
    assert not _port_open(port)
    assert all(record.vm_id != status["vm_id"] for record in load_records())
    target.down()  # idempotent


def test_concurrent_ups_get_their_own_ports_and_files() -> None:
    targets = [get_target("qemu") for _ in range(2)]
    errors: list[BaseException] = []

    def bring_up(target: object) -> None:
        try:
            target.up()  # type: ignore[attr-defined]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bring_up, args=(t,)) for t in targets]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        statuses = [t.status() for t in targets]  # type: ignore[attr-defined]
        assert statuses[0]["ssh"] != statuses[1]["ssh"]
        assert statuses[0]["vm_id"] != statuses[1]["vm_id"]
        names = [t.run("echo $RANDOM-$(cat /proc/sys/kernel/random/uuid)").stdout for t in targets]
        assert names[0] != names[1]
    finally:
        for target in targets:
            target.down()


def test_destroy_never_keeps_the_vm_until_vm_down() -> None:
    from conformance.cli import main

    target = get_target("qemu?destroy=never")
    assert isinstance(target, QemuTarget)
    target.up()
    status = target.status()
    target.down()
    try:
        assert os.path.exists(f"/proc/{status['pid']}")
        record = next(r for r in load_records() if r.vm_id == status["vm_id"])
        assert record.kept
        again = get_target(f"ssh://{status['ssh']}?key={status['key']}")
        again.up()
        assert again.run("hostname").stdout == "conformance-vm\n"
        again.down()
    finally:
        assert main(["vm", "down", status["vm_id"]]) == 0
    assert not os.path.exists(f"/proc/{status['pid']}")
    assert not (paths.run_root() / status["vm_id"]).exists()


def test_bad_options_are_target_errors() -> None:
    for spec in ("qemu?destroy=sometimes", "qemu?accel=xen", "qemu?snapshot=maybe", "qemu?memory=lots",
                 "qemu?warm=maybe", "qemu?agent=maybe", "qemu?cgroup=v3", "qemu:sid", "vagrant:jessie"):
        with pytest.raises(TargetError):
            get_target(spec)


def test_release_and_cgroup_layout_choose_image_kernel_command_line_and_name() -> None:
    """``qemu:RELEASE`` picks that release's recipe (its own cached image); ``cgroup=`` is a kernel command line
    choice, so each layout gets its own golden snapshot key; the name tells the targets of one run apart."""
    plain, trixie, v1 = get_target("qemu"), get_target("qemu:trixie"), get_target("qemu:bookworm?cgroup=v1")
    hybrid = get_target("qemu:bullseye?cgroup=hybrid")
    assert isinstance(plain, QemuTarget) and isinstance(trixie, QemuTarget)
    assert isinstance(v1, QemuTarget) and isinstance(hybrid, QemuTarget)
    assert (plain.name, trixie.name, v1.name, hybrid.name) == (
        "qemu", "qemu:trixie", "qemu:bookworm-cgroupv1", "qemu:bullseye-cgrouphybrid")
    assert [t.recipe.suite for t in (plain, trixie, v1, hybrid)] == ["bookworm", "trixie", "bookworm", "bullseye"]
    assert plain.recipe.key() == v1.recipe.key() != trixie.recipe.key()
    assert "unified_cgroup_hierarchy" not in plain.config.cmdline
    assert "systemd.unified_cgroup_hierarchy=0" in v1.config.cmdline
    assert "legacy_systemd_cgroup_controller=1" in v1.config.cmdline
    assert "legacy_systemd_cgroup_controller" not in hybrid.config.cmdline
    assert len({plain.config.key(), v1.config.key(), hybrid.config.key()}) == 3
    # Vagrant takes the same releases (a box per release image).
    vagrant = get_target("vagrant:trixie")
    assert vagrant.name == "vagrant:trixie" and vagrant.recipe.key() == trixie.recipe.key()  # type: ignore[attr-defined]
    # Only bullseye (Python 3.9) borrows a newer Python for refrt.
    assert hybrid.recipe.python_from == ("bookworm", "3.11") and not trixie.recipe.python_from
