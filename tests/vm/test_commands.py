"""``conformance vm ...`` by hand: build (cached), up, status, ssh-config, down, clean."""

from __future__ import annotations

import os
import re

import pytest

from conformance.cli import main
from vm.state import load_records

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_build_when_current_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from vm.image import ensure_image

    ensure_image()
    assert main(["vm", "build"]) == 0
    assert "is up to date" in capsys.readouterr().out


def test_up_status_ssh_config_down(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vm", "up"]) == 0
    out = capsys.readouterr().out
    vm_id = re.search(r"VM (\S+) up in", out)
    assert vm_id, out
    name = vm_id.group(1)
    try:
        assert main(["vm", "status"]) == 0
        listing = capsys.readouterr().out
        assert name in listing and "running" in listing and "kept" in listing
        assert main(["vm", "ssh-config", name]) == 0
        config = capsys.readouterr().out
        port = re.search(r"Port (\d+)", config)
        assert port and f"Host {name}" in config and "IdentityFile /" in config
        # Kept VMs are not leftovers: clean without --all leaves them.
        assert main(["vm", "clean"]) == 0
        assert name in {r.vm_id for r in load_records()}
    finally:
        pid = next((r.pid for r in load_records() if r.vm_id == name), None)
        assert main(["vm", "down", name]) == 0
    assert name not in {r.vm_id for r in load_records()}
    assert pid is not None and not os.path.exists(f"/proc/{pid}")


def test_down_of_an_unknown_vm_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vm", "down", "no-such-vm"]) == 2
    assert "no such VM" in capsys.readouterr().err
    assert main(["vm", "ssh-config", "no-such-vm"]) == 2
