"""The image depth limit, measured on docker 20.10 and held by refrt (runtime.store.overlay.MAX_IMAGE_LAYERS).

docker 20.10 (overlay2) loads and runs a 125-layer image and refuses a 126th layer, at ``load`` and at ``build``,
with "max depth exceeded" (exit 1). refrt must do the same before anything is mounted; ``run``/``create`` of an
image that got deeper some other way is refused too (exit 125). The peer test measures docker's limit here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.store.overlay import MAX_IMAGE_LAYERS
from tests.runtime.cli.layers import deep_archive
from tests.runtime.container.conftest import Refrt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    from conformance.drivers.dockerlike import busybox_archive

    base, kind = busybox_archive()
    assert kind == "load", "needs the busybox docker-archive"
    out = tmp_path_factory.mktemp("deep")
    yield {n: deep_archive(base, n, out / f"deep{n}.tar", f"deep:{n}") for n in (MAX_IMAGE_LAYERS,
                                                                                  MAX_IMAGE_LAYERS + 1)}


def test_limit_is_dockers() -> None:
    assert MAX_IMAGE_LAYERS == 125


def test_refrt_runs_the_limit_and_refuses_one_more(refrt: Refrt, archives: dict[int, Path],
                                                    tmp_path: Path) -> None:
    at, past = MAX_IMAGE_LAYERS, MAX_IMAGE_LAYERS + 1
    loaded = refrt("load", "-i", str(archives[at]), timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    try:
        ran = refrt("run", "--rm", f"deep:{at}", "cat", "/layers/0123")
        assert (ran.returncode, ran.stdout) == (0, "123\n"), ran.stderr
        refused = refrt("load", "-i", str(archives[past]), timeout=300)
        assert refused.returncode == 1 and "max depth exceeded" in refused.stderr, refused
        assert f"deep:{past}" not in refrt("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        (tmp_path / "Dockerfile").write_text(f"FROM deep:{at}\nRUN echo deeper > /x\n")
        built = refrt("build", "-t", "deep:built", str(tmp_path), timeout=300)
        assert built.returncode != 0 and "max depth exceeded" in built.stdout + built.stderr, built
        assert refrt("image", "inspect", "deep:built").returncode != 0
    finally:
        refrt("rmi", "-f", f"deep:{at}")


@pytest.mark.peer
def test_docker_limit_measured(archives: dict[int, Path], request: pytest.FixtureRequest) -> None:
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd")
    at, past = MAX_IMAGE_LAYERS, MAX_IMAGE_LAYERS + 1
    try:
        loaded = docker(host, "load", "-i", str(archives[at]), timeout=600)
        assert loaded.returncode == 0, loaded.stderr
        ran = docker(host, "run", "--rm", "--pull=never", f"deep:{at}", "cat", "/layers/0123")
        assert (ran.returncode, ran.stdout) == (0, "123\n"), ran.stderr
        refused = docker(host, "load", "-i", str(archives[past]), timeout=600)
        assert refused.returncode == 1 and "max depth exceeded" in refused.stderr, refused
    finally:
        docker(host, "rmi", "-f", f"deep:{at}", f"deep:{past}")
