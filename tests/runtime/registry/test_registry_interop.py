"""Interoperability with skopeo through the same real registry: what refrt pushes, skopeo pulls with the same
manifest digest; what skopeo pushes (from an OCI layout umoci builds, with no refrt involved), refrt pulls and
runs - or, while refrt has no ``run`` command, unpacks into runnable layers."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.services.registry import Registry
from tests.fixtures.registry import DIGEST_LINE, World, login_cli

pytestmark = pytest.mark.peer


def _skopeo_creds(reg: Registry, flag: str) -> list[str]:
    if reg.auth is None:
        return []
    return [flag, f"{reg.auth.username}:{reg.auth.password}"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _umoci_layout(tmp_path: Path) -> tuple[Path, str]:
    """A one-layer busybox image in an OCI layout, built by umoci; returns (layout, manifest digest)."""
    layout, src = tmp_path / "layout", tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", src / "bin" / "busybox")
    os.symlink("busybox", src / "bin" / "true")
    (src / "bin" / "marker").write_text("made by umoci\n")
    for argv in (
        ["umoci", "init", "--layout", str(layout)],
        ["umoci", "new", "--image", f"{layout}:t"],
        ["umoci", "insert", "--image", f"{layout}:t", str(src / "bin"), "/bin"],
        ["umoci", "config", "--image", f"{layout}:t", "--config.cmd", "/bin/true", "--os", "linux"],
    ):
        res = _run(argv)
        assert res.returncode == 0, f"{argv}: {res.stderr}"
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "t"]
    return layout, str(entry["digest"])


def test_skopeo_pulls_what_refrt_pushed(any_registry: Registry, registry_world: World, tmp_path: Path) -> None:
    login_cli(registry_world, any_registry)
    ref = f"{any_registry.host}/interop/from-refrt:1"
    registry_world.make_image(ref)
    pushed = registry_world.cli("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    match = DIGEST_LINE.search(pushed.stdout)
    assert match is not None
    dest = tmp_path / "skopeo-oci"
    res = _run(
        ["skopeo", "copy", "--src-tls-verify=false", *_skopeo_creds(any_registry, "--src-creds"),
         f"docker://{ref}", f"oci:{dest}:copied"]
    )
    assert res.returncode == 0, res.stderr
    [entry] = json.loads((dest / "index.json").read_text())["manifests"]
    assert entry["digest"] == match["digest"]
    inspect = _run(
        ["skopeo", "inspect", "--tls-verify=false", *_skopeo_creds(any_registry, "--creds"), f"docker://{ref}"]
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Digest"] == match["digest"]


def test_refrt_pulls_and_runs_what_skopeo_pushed(any_registry: Registry, registry_world: World, tmp_path: Path) -> None:
    layout, digest = _umoci_layout(tmp_path)
    ref = f"{any_registry.host}/interop/from-skopeo:1"
    res = _run(
        ["skopeo", "copy", "--dest-tls-verify=false", *_skopeo_creds(any_registry, "--dest-creds"),
         f"oci:{layout}:t", f"docker://{ref}"]
    )
    assert res.returncode == 0, res.stderr
    login_cli(registry_world, any_registry)
    pulled = registry_world.refrt("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    image = registry_world.store.resolve(ref)
    assert image.manifest_digest == digest
    assert image.config["config"]["Cmd"] == ["/bin/true"]
    [lower] = registry_world.store.lower_dirs(image)
    assert (lower / "bin" / "marker").read_text() == "made by umoci\n"
    assert os.access(lower / "bin" / "busybox", os.X_OK)
    if importlib.util.find_spec("runtime.cli.containers") is not None:  # refrt has a ``run`` command
        ran = registry_world.refrt("run", "--rm", "--network", "none", ref, "/bin/true")
        assert ran.returncode == 0, ran.stderr


def test_docker_schema2_image_round_trips_with_its_media_type(
    registry: Registry, registry_world: World, tmp_path: Path
) -> None:
    layout, _ = _umoci_layout(tmp_path)
    src = f"{registry.host}/interop/v2s2:1"
    res = _run(["skopeo", "copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{layout}:t", f"docker://{src}"])
    assert res.returncode == 0, res.stderr
    raw = _run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{src}"])
    assert json.loads(raw.stdout)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    pulled = registry_world.cli("pull", src)
    assert pulled.returncode == 0, pulled.stderr
    image = registry_world.store.resolve(src)
    assert image.manifest_media_type == "application/vnd.docker.distribution.manifest.v2+json"
    # Pushed elsewhere, the same bytes go up with the same media type: same digest, and skopeo reads back the
    # very bytes it pushed.
    dst = f"{registry.host}/interop/v2s2-copy:1"
    registry_world.store.tag(image, dst)
    pushed = registry_world.cli("push", dst)
    assert pushed.returncode == 0, pushed.stderr
    assert f"digest: {image.manifest_digest} " in pushed.stdout
    copy = _run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{dst}"])
    assert copy.stdout == raw.stdout
