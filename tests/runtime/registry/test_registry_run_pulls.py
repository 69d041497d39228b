"""``refrt run`` of an image that is not in the store pulls it first, as docker does; a failed pull is 125."""

from __future__ import annotations

from conformance.services.registry import Registry
from tests.fixtures.registry import World


def test_run_pulls_a_missing_image(registry: Registry, registry_world: World) -> None:
    ref = f"{registry.host}/cf/run-pulls:1"
    image = registry_world.make_image(ref)
    assert registry_world.refrt("push", ref).returncode == 0
    registry_world.rmi(image)
    result = registry_world.refrt("run", "--rm", "--network", "none", ref, "/bin/busybox", "echo", "ran")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran"
    assert f"Unable to find image '{ref}' locally" in result.stderr
    assert registry_world.store.resolve(ref).id == image.id


def test_run_of_an_image_nobody_has_is_125(registry: Registry, registry_world: World) -> None:
    result = registry_world.refrt("run", "--rm", f"{registry.host}/cf/absent:1", "true")
    assert result.returncode == 125
    assert result.stderr.strip().splitlines()[-1].startswith("refrt: Unable to find image")
