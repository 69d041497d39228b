"""podman and docker for real: prepare offline (busybox loaded), run a container, clean up by label, close, and
leave nothing behind."""

from __future__ import annotations

import hashlib
import shutil
import uuid

import pytest

from conformance.drivers import RUN_LABEL, get_driver
from conformance.targets import Target

from .conftest import host_state

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_driver_runs_busybox_and_cleans_up(local_target: Target, runtime: str) -> None:
    if shutil.which("podman" if runtime == "podman" else "dockerd") is None:
        pytest.skip(f"{runtime} not installed (scripts/apt/peers.txt)")
    run_id = f"test-{runtime}-{uuid.uuid4().hex[:8]}"
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:8] if runtime == "docker" else ""
    before = host_state(run_id, tag)
    driver = get_driver(runtime, local_target, run_id)
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
    finally:
        driver.cleanup()
        driver.close()
    assert host_state(run_id, tag) == before
