"""docker-py and testcontainers-python, the Python ecosystem's Engine API clients, against refrt's daemon.

Each check also runs against a real dockerd (``engine``), so it tests docker's behaviour, not refrt's reading of
it. docker-py negotiates the API version (``version="auto"``): refrt and dockerd 20.10 both serve 1.41.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import docker
import pytest

from conformance.services.registry import Registry
from tests.fixtures.registry import TEST_CREDENTIALS

pytestmark = [pytest.mark.peer, pytest.mark.slow]


@pytest.fixture
def client(engine: str) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=engine, version="auto", timeout=120)
    try:
        yield c
    finally:
        c.close()


def test_containers_run_returns_the_output(client: docker.DockerClient) -> None:
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as failed:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 3"], remove=True)
    assert failed.value.exit_status == 3 and b"oops" in (failed.value.stderr or b"")


def test_images_build_then_run_the_image(client: docker.DockerClient) -> None:
    tag = f"h6py-{uuid.uuid4().hex[:8]}:1"
    dockerfile = b'FROM busybox\nARG WHO\nRUN echo "built for $WHO" > /msg\nCMD ["cat", "/msg"]\n'
    image, logs = client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, buildargs={"WHO": "docker-py"},
                                      labels={"h6": "py"}, rm=True)
    try:
        assert tag in image.tags and image.labels == {"h6": "py"}
        text = "".join(entry.get("stream", "") for entry in logs)
        assert "Step 1/5 : FROM busybox" in text and f"Successfully tagged {tag}" in text
        assert client.containers.run(tag, remove=True) == b"built for docker-py\n"
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN exit 7\n"), rm=True)
        assert "returned a non-zero code: 7" in str(failed.value)
    finally:
        client.images.remove(tag, force=True)


def test_images_push_pull_save_load(client: docker.DockerClient, auth_registry: Registry) -> None:
    repo = f"{auth_registry.host}/h6/py"
    auth = {"username": TEST_CREDENTIALS.username, "password": TEST_CREDENTIALS.password}
    assert client.images.get("busybox").tag(repo, "v1")
    assert client.login(registry=auth_registry.host, **auth)["Status"] == "Login Succeeded"
    progress = list(client.images.push(repo, "v1", auth_config=auth, stream=True, decode=True))
    assert not [p for p in progress if "error" in p], progress
    [aux] = [p["aux"] for p in progress if "aux" in p]
    client.images.remove(f"{repo}:v1")
    pulled = client.images.pull(repo, "v1", auth_config=auth)
    assert f"{repo}:v1" in pulled.tags and f"{repo}@{aux['Digest']}" in pulled.attrs["RepoDigests"]
    assert [i.id for i in client.images.list(name=repo)] == [pulled.id]
    archive = b"".join(client.api.get_image(f"{repo}:v1"))  # named: Image.save picks the image's first tag
    client.images.remove(f"{repo}:v1")
    [loaded] = client.images.load(archive)
    assert loaded.id == pulled.id and f"{repo}:v1" in loaded.tags
    client.images.remove(f"{repo}:v1")


def test_containers_list_shows_a_running_container(client: docker.DockerClient) -> None:
    name = f"h6py-{uuid.uuid4().hex[:8]}"
    container = client.containers.run("busybox", "sleep 60", name=name, detach=True)
    try:
        listed = {c.id: c.name for c in client.containers.list()}
        assert listed.get(container.id) == name
        assert client.containers.get(name).status == "running"
        container.stop(timeout=1)
        assert container.id not in {c.id for c in client.containers.list()}
        assert container.id in {c.id for c in client.containers.list(all=True)}
    finally:
        container.remove(force=True)
    assert container.id not in {c.id for c in client.containers.list(all=True)}


def test_testcontainers_starts_and_stops_a_busybox_container(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", engine)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image would come from Docker Hub
    from testcontainers.core.container import DockerContainer

    with DockerContainer("busybox").with_command("sleep 60") as box:
        wrapped = box.get_wrapped_container()
        wrapped.reload()
        assert wrapped.status == "running"
        code, output = box.exec(["echo", "inside"])
        assert code == 0 and output == b"inside\n"
        container_id = wrapped.id
    check = docker.DockerClient(base_url=engine, version="auto")
    try:
        assert container_id not in {c.id for c in check.containers.list(all=True)}
    finally:
        check.close()
