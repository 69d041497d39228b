"""podman and docker for real: prepare offline (busybox loaded), run a container, clean up by label, close, and
leave nothing behind."""

from __future__ import annotations

import hashlib
import shutil
import uuid

import pytest

from conformance.drivers import RUN_LABEL, driver_class
from conformance.targets import Target

from .conftest import host_state

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.mark.parametrize("runtime", ["podman", "podman:runc", "docker"])
def test_driver_runs_busybox_and_cleans_up(local_target: Target, runtime: str) -> None:
    if shutil.which("dockerd" if runtime == "docker" else "podman") is None:
        pytest.skip(f"{runtime} not installed (scripts/apt/peers.txt)")
    run_id = f"test-{runtime.replace(':', '-')}-{uuid.uuid4().hex[:8]}"
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    before = host_state(run_id, tag)
    driver = driver_class(runtime)(local_target, run_id)
    try:
        driver.prepare()
        assert driver.version() != "unknown"
        result = driver.cli(["run", "--rm", "busybox", "sh", "-c", "echo hi from $(hostname); ulimit -n"],
                            timeout=120)
        assert result.exit_status == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith("hi from ")
        assert result.stdout.splitlines()[1] == "20000"
        assert driver.cli(["run", "-d", "busybox", "sleep", "300"], timeout=120).exit_status == 0
        labelled = driver.cli(["ps", "-q", "--filter", f"label={RUN_LABEL}={run_id}"], timeout=60)
        assert len(labelled.stdout.split()) == 1
        driver.cleanup()
        assert driver.cli(["ps", "-aq", "--filter", f"label={RUN_LABEL}={run_id}"]).stdout.split() == []
        assert driver.cli(["image", "inspect", "busybox"]).exit_status == 0
        if runtime.startswith("podman"):
            # crun through the hybrid-cgroup wrapper by default, runc when asked; a memory limit still applies
            assert driver.features()["runtime.oci.crun"] is (runtime == "podman")
            assert ("crun" in driver.version()) is (runtime == "podman")
            limit = driver.cli(["run", "--rm", "-m", "32m", "busybox", "sh", "-c",
                                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                                "cat /sys/fs/cgroup/memory.max"], timeout=120)
            assert limit.stdout.strip() == str(32 << 20), limit.stderr
    finally:
        driver.cleanup()
        driver.close()
    assert host_state(run_id, tag) == before
