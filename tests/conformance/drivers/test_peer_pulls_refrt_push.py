"""Interop: an image refrt pushed to the real registry is pulled and run by podman (and docker), unchanged."""

from __future__ import annotations

import shutil
import uuid

import pytest

from conformance.drivers import driver_class
from conformance.services.registry import Registry
from conformance.targets import Target
from tests.fixtures.registry import World

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.mark.parametrize("runtime", ["podman", "docker"])
def test_peer_pulls_and_runs_what_refrt_pushed(runtime: str, local_target: Target, registry: Registry,
                                               registry_world: World) -> None:
    if shutil.which("dockerd" if runtime == "docker" else "podman") is None:
        pytest.skip(f"{runtime} not installed (scripts/apt/peers.txt)")
    ref = f"{registry.host}/cf/interop-{runtime}:1"
    registry_world.make_image(ref)
    pushed = registry_world.refrt("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    driver = driver_class(runtime)(local_target, f"interop-{uuid.uuid4().hex[:8]}")
    try:
        driver.prepare()
        pulled = driver.cli(["pull", ref], timeout=180)
        assert pulled.exit_status == 0, pulled.stderr
        ran = driver.cli(["run", "--rm", ref, "/bin/busybox", "echo", "interop"], timeout=180)
        assert ran.exit_status == 0, ran.stderr
        assert ran.stdout.strip() == "interop"
        digests = driver.cli(["image", "inspect", "--format", "{{json .RepoDigests}}", ref], timeout=60)
        assert pushed.stdout.split("digest: ")[1].split()[0] in digests.stdout
    finally:
        driver.cli(["rmi", "-f", ref], timeout=120)
        driver.cleanup()
        driver.close()
