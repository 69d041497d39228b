"""The image depth limit, measured on docker 20.10 and held by refrt (runtime.store.overlay.MAX_IMAGE_LAYERS).

docker 20.10 (overlay2) loads and runs a 125-layer image and refuses a 126th layer, at ``load`` and at ``build``,
with "max depth exceeded" (exit 1). refrt must do the same before anything is mounted; ``run``/``create`` of an
image that got deeper some other way is refused too (exit 125). refrt cannot make such an image any more, so the
test writes one with the store's own API, as an older refrt (whose ceiling was 500 layers) left it on disk. The
peer test measures docker's limit here.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.paths import Paths
from runtime.store.overlay import MAX_IMAGE_LAYERS
from runtime.store.store import Store
from tests.runtime.cli.layers import deep_archive, tiny_layer
from tests.runtime.container.conftest import Refrt, mounts_mentioning

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


def _api_post(sock: Path, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(str(sock))
    data = json.dumps(body).encode()
    conn.sendall(f"POST {url} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    raw = b""
    while chunk := conn.recv(65536):
        raw += chunk
    conn.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


@pytest.fixture
def too_deep(refrt: Refrt) -> Iterator[str]:
    """A 126-layer image in the root, written as an older refrt stored it: busybox and tiny layers on top."""
    store = Store(Paths.resolve(str(refrt.root)))
    base = store.resolve("busybox")
    layers = list(base.layers)
    for i in range(MAX_IMAGE_LAYERS + 1 - len(layers)):
        layers.append(store.add_layer_from_tar(io.BytesIO(tiny_layer(i))))
    ref = "deep:older-refrt"
    store.commit_image(json.loads(json.dumps(base.config)), layers, [ref])
    assert len(store.resolve(ref).layers) == MAX_IMAGE_LAYERS + 1
    yield ref
    refrt("rmi", "-f", ref)


def test_run_and_create_refuse_an_image_past_the_limit(refrt: Refrt, too_deep: str) -> None:
    """docker: "Error response from daemon: max depth exceeded", exit 125, and no container."""
    before = sorted(p.name for p in (refrt.root / "containers").glob("*"))
    for args in (("run", "--rm", too_deep, "true"), ("create", too_deep, "true"),
                 ("run", "-d", "--name", "too-deep", too_deep, "sleep", "60")):
        result = refrt(*args)
        assert result.returncode == 125, (args, result)
        assert "max depth exceeded" in result.stderr, (args, result.stderr)
        assert result.stdout == "", args  # no container id: nothing was created
    # the Engine API of the root's daemon (started on demand by the commands above): dockerd's 500, in its words
    status, answer = _api_post(refrt.root / "run" / "refrt.sock", "/v1.41/containers/create",
                               {"Image": too_deep, "Cmd": ["true"]})
    assert status == 500 and "max depth exceeded" in answer["message"], (status, answer)
    assert sorted(p.name for p in (refrt.root / "containers").glob("*")) == before
    assert mounts_mentioning(str(refrt.root / "containers")) == []
    assert refrt("ps", "-a", "--filter", f"ancestor={too_deep}", "-q").stdout == ""
