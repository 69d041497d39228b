"""One disposable qemu VM for the whole module set (restored from the golden snapshot): booting is the expensive
part, so the target tests share it and only the tests about a VM's own life cycle start clones of their own."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from conformance.targets import get_target
from conformance.targets.qemu import QemuTarget


@pytest.fixture(scope="session")
def qemu_vm() -> Iterator[QemuTarget]:
    target = get_target("qemu")
    assert isinstance(target, QemuTarget)
    target.up()
    try:
        yield target
    finally:
        status = target.status()
        target.down()
        # Nothing may outlive the session: no qemu process, no run directory (overlay, serial log, socket).
        assert not os.path.exists(f"/proc/{status['pid']}")
        assert target.machine is None
