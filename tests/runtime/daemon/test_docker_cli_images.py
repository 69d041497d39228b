"""Debian's docker 20.10 client against refrt's daemon: images, build, tag, registry, networks and volumes.

Every check runs against refrt's daemon and a real dockerd (``engine``): a check that only passed against
refrt would be testing refrt's idea of docker, not docker's behaviour.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from conformance.services.registry import Registry
from tests.fixtures.registry import TEST_CREDENTIALS
from tests.runtime.daemon.conftest import docker

pytestmark = [pytest.mark.peer, pytest.mark.slow]

LEGACY = {"DOCKER_BUILDKIT": "0"}
PUSHED = re.compile(r"^v1: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.MULTILINE)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(result: object) -> str:
    assert getattr(result, "returncode", 1) == 0, f"{getattr(result, 'args', '')}: {getattr(result, 'stderr', '')}"
    return str(getattr(result, "stdout", ""))


def test_images_tag_and_rmi(engine: str) -> None:
    name = unique("h6cli")
    ok(docker(engine, "tag", "busybox", f"{name}:1"))
    listed = ok(docker(engine, "images", "--format", "{{.Repository}}:{{.Tag}}", name))
    assert listed.split() == [f"{name}:1"]
    table = ok(docker(engine, "images")).splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(row.split()[:2] == ["busybox", "latest"] for row in table[1:])
    assert ok(docker(engine, "images", "-q", name)) == ok(docker(engine, "images", "-q", "busybox"))
    assert ok(docker(engine, "rmi", f"{name}:1")).strip() == f"Untagged: {name}:1"
    missing = docker(engine, "image", "inspect", name)
    assert missing.returncode == 1 and f"No such image: {name}" in missing.stderr


def test_build_with_the_legacy_builder(engine: str, tmp_path: Path) -> None:
    name = unique("h6build")
    (tmp_path / "Dockerfile").write_text('FROM busybox\nARG WHO=nobody\nRUN echo "hello $WHO" > /hello\n'
                                         'CMD ["cat", "/hello"]\n')
    built = docker(engine, "build", "--build-arg", "WHO=h6", "--label", "made.by=h6", "-t", f"{name}:1",
                   str(tmp_path), env=LEGACY)
    out = ok(built)
    # --label is one more step for the legacy builder
    assert "Step 1/5 : FROM busybox" in out and "Step 3/5 : RUN echo \"hello $WHO\" > /hello" in out
    assert "Step 5/5 : LABEL made.by=h6" in out
    assert re.search(r"^Successfully built [0-9a-f]{12}$", out, re.MULTILINE), out
    assert f"Successfully tagged {name}:1" in out
    labels = ok(docker(engine, "image", "inspect", "-f", "{{json .Config.Labels}}", f"{name}:1"))
    assert json.loads(labels) == {"made.by": "h6"}
    quiet = ok(docker(engine, "build", "-q", "--iidfile", str(tmp_path / "iid"), "--build-arg", "WHO=h6",
                      "--label", "made.by=h6", str(tmp_path), env=LEGACY))
    image_id = ok(docker(engine, "image", "inspect", "-f", "{{.Id}}", f"{name}:1")).strip()
    assert quiet.strip() == image_id  # the same build again: the cache gives the same image
    assert (tmp_path / "iid").read_text().strip() == image_id  # from the stream, as dockerd sends it
    ran = docker(engine, "run", "--rm", "--pull=never", f"{name}:1")
    assert ok(ran) == "hello h6\n"
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo before-failing && exit 3\n")
    failed = docker(engine, "build", str(tmp_path), env=LEGACY)
    assert failed.returncode == 3 and "before-failing" in failed.stdout  # the CLI exits with the error code
    assert "The command '/bin/sh -c echo before-failing && exit 3' returned a non-zero code: 3" in failed.stderr
    ok(docker(engine, "rmi", f"{name}:1"))


def test_login_push_pull_against_the_local_registry(engine: str, auth_registry: Registry, tmp_path: Path) -> None:
    config = {"DOCKER_CONFIG": str(tmp_path / "docker-config")}
    host = auth_registry.host
    ref = f"{host}/h6/cli:v1"
    ok(docker(engine, "tag", "busybox", ref))
    refused = docker(engine, "push", ref, env=config)
    assert refused.returncode == 1, refused.stdout
    wrong = docker(engine, "login", "-u", TEST_CREDENTIALS.username, "--password-stdin", host, input="wrong\n",
                   env=config)
    assert wrong.returncode == 1 and "401 Unauthorized" in wrong.stderr
    login = docker(engine, "login", "-u", TEST_CREDENTIALS.username, "--password-stdin", host,
                   input=TEST_CREDENTIALS.password + "\n", env=config)
    assert "Login Succeeded" in ok(login)
    assert host in json.loads((tmp_path / "docker-config" / "config.json").read_text())["auths"]
    pushed = ok(docker(engine, "push", ref, env=config))
    assert pushed.startswith(f"The push refers to repository [{host}/h6/cli]")
    match = PUSHED.search(pushed)
    assert match is not None, pushed
    digest = match.group(1)
    ok(docker(engine, "rmi", ref))
    pulled = ok(docker(engine, "pull", ref, env=config))
    assert f"Digest: {digest}" in pulled and pulled.splitlines()[-1] == ref
    digests = ok(docker(engine, "images", "--digests", "--format", "{{.Repository}} {{.Digest}}", f"{host}/h6/cli"))
    assert digests.split() == [f"{host}/h6/cli", digest]
    missing = docker(engine, "pull", f"{host}/h6/cli:nope", env=config)
    assert missing.returncode == 1 and "not found" in missing.stderr
    ok(docker(engine, "logout", host, env=config))
    ok(docker(engine, "rmi", ref))


def test_network_create_then_run_on_it(engine: str) -> None:
    name = unique("h6net")
    net_id = ok(docker(engine, "network", "create", "--subnet", "10.214.9.0/24", "--label", "h6=1", name)).strip()
    bridges = {f"rf-{net_id[:12]}", f"br-{net_id[:12]}"}  # refrt's and docker's names for the network's bridge
    assert bridges & set(os.listdir("/sys/class/net"))
    try:
        assert ok(docker(engine, "network", "ls", "-q", "--filter", f"name={name}")).strip()
        subnet = ok(docker(engine, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", name))
        assert subnet.strip() == "10.214.9.0/24"
        again = docker(engine, "network", "create", name)
        assert again.returncode == 1 and "already exists" in again.stderr
        shown = ok(docker(engine, "run", "--rm", "--pull=never", "--network", name, "busybox",
                          "ip", "-4", "-o", "addr", "show", "eth0"))
        assert "inet 10.214.9." in shown
        box = unique("h6netbox")
        ok(docker(engine, "run", "-d", "--pull=never", "--network", "none", "--name", box, "busybox", "sleep", "60"))
        try:
            refused = docker(engine, "network", "connect", name, box)
            assert refused.returncode == 1  # a container on --network none cannot join networks
        finally:
            docker(engine, "rm", "-f", box)
        ok(docker(engine, "run", "-d", "--pull=never", "--name", box, "busybox", "sleep", "60"))
        try:
            ok(docker(engine, "network", "connect", name, box))
            members = ok(docker(engine, "network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", name))
            assert members.strip() == box
            inside = ok(docker(engine, "exec", box, "ip", "-4", "-o", "addr"))
            assert "inet 10.214.9." in inside
            ok(docker(engine, "network", "disconnect", name, box))
            assert "inet 10.214.9." not in ok(docker(engine, "exec", box, "ip", "-4", "-o", "addr"))
        finally:
            docker(engine, "rm", "-f", box)
    finally:
        removed = docker(engine, "network", "rm", name)
    assert ok(removed).strip() == name
    gone = docker(engine, "network", "inspect", name)
    assert gone.returncode == 1
    assert not bridges & set(os.listdir("/sys/class/net")), "the network's bridge is left behind"


def test_a_volume_carries_data_from_one_container_to_the_next(engine: str) -> None:
    name = unique("h6vol")
    ok(docker(engine, "volume", "create", name))
    mountpoint = Path(ok(docker(engine, "volume", "inspect", "-f", "{{.Mountpoint}}", name)).strip())
    assert mountpoint.is_dir()
    try:
        ok(docker(engine, "run", "--rm", "--pull=never", "-v", f"{name}:/data", "busybox",
                  "sh", "-c", "echo shared-by-volume > /data/note"))
        read = docker(engine, "run", "--rm", "--pull=never", "-v", f"{name}:/data:ro", "busybox", "cat", "/data/note")
        assert ok(read) == "shared-by-volume\n"
        names = ok(docker(engine, "volume", "ls", "-q", "--filter", f"name={name}")).split()
        assert names == [name]
    finally:
        removed = docker(engine, "volume", "rm", name)
    assert ok(removed).strip() == name
    assert not mountpoint.exists() and not mountpoint.parent.exists()


def test_commit_a_container_then_run_the_new_image(engine: str) -> None:
    name, repo = unique("h6commit"), unique("h6committed")
    ok(docker(engine, "run", "--name", name, "--pull=never", "busybox", "sh", "-c", "echo committed > /made"))
    try:
        new_id = ok(docker(engine, "commit", "-c", 'CMD ["cat", "/made"]', "-c", "ENV STAGE=committed",
                           "-m", "by h6", "-a", "h6 <h6@example.org>", name, f"{repo}:1")).strip()
        assert new_id.startswith("sha256:")
        shown = ok(docker(engine, "image", "inspect", "-f", "{{.Comment}}|{{.Author}}|{{json .Config.Cmd}}",
                          f"{repo}:1"))
        assert shown.strip() == 'by h6|h6 <h6@example.org>|["cat","/made"]'
        assert ok(docker(engine, "run", "--rm", "--pull=never", f"{repo}:1")) == "committed\n"
        env = ok(docker(engine, "run", "--rm", "--pull=never", f"{repo}:1", "sh", "-c", "echo $STAGE"))
        assert env == "committed\n"
        # a running container is paused for the commit, then runs on
        ok(docker(engine, "run", "-d", "--name", f"{name}-live", "--pull=never", "busybox", "sh", "-c",
                  "echo live > /live; exec sleep 60"))
        ok(docker(engine, "exec", f"{name}-live", "cat", "/live"))  # the file is there before the commit
        ok(docker(engine, "commit", f"{name}-live", f"{repo}:live"))
        state = ok(docker(engine, "inspect", "-f", "{{.State.Status}}", f"{name}-live"))
        assert state.strip() == "running"
        assert ok(docker(engine, "run", "--rm", "--pull=never", f"{repo}:live", "cat", "/live")) == "live\n"
    finally:
        docker(engine, "rm", "-f", name, f"{name}-live")
        docker(engine, "rmi", f"{repo}:1", f"{repo}:live")


def test_build_from_a_private_base_image_uses_the_clients_login(engine: str, auth_registry: Registry,
                                                                  tmp_path: Path) -> None:
    config = {"DOCKER_CONFIG": str(tmp_path / "docker-config"), **LEGACY}
    host, name = auth_registry.host, unique("h6private")
    base = f"{host}/h6/base:1"
    login = docker(engine, "login", "-u", TEST_CREDENTIALS.username, "--password-stdin", host,
                   input=TEST_CREDENTIALS.password + "\n", env=config)
    ok(login)
    ok(docker(engine, "tag", "busybox", base))
    ok(docker(engine, "push", base, env=config))
    ok(docker(engine, "rmi", base))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {base}\nRUN echo private > /p\n")
    try:
        built = ok(docker(engine, "build", "-t", f"{name}:1", str(tmp_path / "ctx"), env=config))
        assert f"Successfully tagged {name}:1" in built
        ok(docker(engine, "rmi", base))
        ok(docker(engine, "logout", host, env=config))
        anonymous = docker(engine, "build", "--no-cache", str(tmp_path / "ctx"), env=config)
        # without the client's login the base cannot be pulled (dockerd: "no basic auth credentials")
        assert anonymous.returncode != 0 and re.search(r"unauthorized|no basic auth", anonymous.stderr), anonymous
    finally:
        docker(engine, "rmi", f"{name}:1", base)
