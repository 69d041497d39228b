"""The ssh:// target, against the session's qemu VM (the same VM, a second connection) and a closed port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conformance.errors import TargetError
from conformance.targets import TargetSpec, get_target
from conformance.targets.qemu import QemuTarget
from conformance.targets.ssh import SshTarget


def test_spec_parsing_and_options() -> None:
    target = get_target("ssh://alice@example.invalid:2222?key=~/id&sudo=true&destroy=never")
    assert isinstance(target, SshTarget)
    args = target.session_args
    assert (args["host"], args["port"], args["user"], args["sudo"]) == ("example.invalid", 2222, "alice", True)
    assert args["key"] == Path("~/id").expanduser()
    assert not target.disposable
    assert SshTarget(TargetSpec.parse("ssh://example.invalid")).session_args["user"] == "root"


@pytest.mark.parametrize("raw", ["ssh://", "ssh://h?sudo=perhaps", "ssh://h?destroy=later", "ssh://h?host_key=x"])
def test_bad_specs_are_target_errors(raw: str) -> None:
    with pytest.raises(TargetError):
        SshTarget(TargetSpec.parse(raw))


def test_unreachable_host_is_a_target_error_within_the_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        target = get_target(f"ssh://root@127.0.0.1:{port}?timeout=2")
        with pytest.raises(TargetError, match="not reachable"):
            target.up()


@pytest.mark.vm
@pytest.mark.slow
def test_ssh_target_on_the_vm_runs_copies_and_is_never_destroyed(qemu_vm: QemuTarget, tmp_path: Path) -> None:
    target = get_target(qemu_vm.ssh_url())
    target.up()
    try:
        assert target.run("hostname").stdout == "conformance-vm\n"
        assert target.facts()["cgroup"] == "v2"
        (tmp_path / "tree" / "sub").mkdir(parents=True)
        (tmp_path / "tree" / "sub" / "f.txt").write_text("data\n")
        target.put(tmp_path / "tree", "/tmp/ssh-put-test")
        assert qemu_vm.run("cat /tmp/ssh-put-test/sub/f.txt").stdout == "data\n"
        assert target.host.file("/tmp/ssh-put-test/sub/f.txt").exists
    finally:
        target.down()
    # down() of an ssh:// target only disconnects: the VM still answers its owner.
    assert qemu_vm.run("rm -rf /tmp/ssh-put-test && echo alive").stdout == "alive\n"


@pytest.mark.vm
@pytest.mark.slow
def test_ssh_target_as_a_sudo_user(qemu_vm: QemuTarget, tmp_path: Path) -> None:
    assert qemu_vm.image is not None
    public = qemu_vm.image.ssh_key.public_text()
    user = "conformance-sudo"
    setup = qemu_vm.run(
        f"id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}; "
        f"mkdir -p /home/{user}/.ssh && echo '{public}' > /home/{user}/.ssh/authorized_keys && "
        f"chown -R {user} /home/{user}/.ssh && echo '{user} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{user}"
    )
    assert setup.exit_status == 0, setup.stderr
    url = qemu_vm.ssh_url().replace("ssh://root@", f"ssh://{user}@")
    try:
        plain = get_target(url + "&sudo=false")
        plain.up()
        assert plain.run("id -u").stdout.strip() != "0"
        plain.down()
        elevated = get_target(url)  # sudo is the default for a non-root user
        elevated.up()
        assert elevated.run("id -u").stdout.strip() == "0"
        source = tmp_path / "owned-by-root"
        source.write_text("x")
        elevated.put(source, "/root/put-by-sudo")
        assert qemu_vm.run("stat -c %U /root/put-by-sudo").stdout.strip() == "root"
        elevated.down()
    finally:
        qemu_vm.run(f"rm -f /root/put-by-sudo /etc/sudoers.d/{user}; userdel -r {user} 2>/dev/null; true")
