"""push, pull, login and logout against the real docker-registry, with and without htpasswd auth.

The CLI is run as a separate process (``python -m runtime``) the way users run it; images are made and removed
through the store's API, since ``tag`` and ``rmi`` belong to the images CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conformance.services.registry import Registry
from runtime.cli import Context
from runtime.paths import Paths
from runtime.registry import manifests, push
from runtime.registry.errors import ConnectionFailedError, UnsupportedManifestError
from runtime.registry.pull import pull
from runtime.store.images import Image
from runtime.store.store import Store
from tests.fixtures.registry import TinyServer

REPO = Path(__file__).resolve().parents[3]
BUSYBOX = Path("/bin/busybox")
DIGEST_LINE = re.compile(r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: (?P<size>\d+)$", re.M)


@dataclass
class World:
    """A temporary refrt root and client config dir."""

    root: Path
    config: Path

    @property
    def paths(self) -> Paths:
        return Paths.resolve(str(self.root))

    @property
    def store(self) -> Store:
        return Store(self.paths)

    @property
    def ctx(self) -> Context:
        return Context(paths=self.paths, config_dir=str(self.config), debug=False)

    def refrt(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
        return subprocess.run(
            [sys.executable, "-m", "runtime", "--root", str(self.root), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            input=stdin,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    def make_image(self, tag: str, payload: int = 50_000) -> Image:
        """A runnable image: busybox plus ``payload`` random bytes, so every image has its own layer."""
        tree = self.root.parent / f"tree-{os.urandom(4).hex()}"
        (tree / "bin").mkdir(parents=True)
        shutil.copy(BUSYBOX, tree / "bin" / "busybox")
        (tree / "bin" / "true").symlink_to("busybox")
        (tree / "payload").write_bytes(os.urandom(payload))
        layer = self.store.add_layer_from_dir(tree)
        shutil.rmtree(tree)
        assert layer is not None
        return self.store.commit_image({"config": {"Cmd": ["/bin/busybox", "true"]}}, [layer], [tag])

    def rmi(self, image: Image) -> None:
        """Remove the image and its content for real (no gc grace), so a pull must download everything."""
        self.store.remove(self.store.resolve(image.id), force=True)
        self.store.gc(grace_seconds=0)

    def listing(self) -> dict[str, str]:
        """Every file of the store with a hash of its content: what "the store is unchanged" compares."""
        out: dict[str, str] = {}
        for path in sorted(self.paths.store.rglob("*")):
            rel = str(path.relative_to(self.paths.store))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_file() and "layers" not in rel.split(os.sep)[:1]:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir" if path.is_dir() else "other"
        return out


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(root=tmp_path / "root", config=tmp_path / "config")


def _login(world: World, reg: Registry) -> None:
    if reg.auth is not None:
        res = world.refrt("login", "-u", reg.auth.username, "--password-stdin", reg.host, stdin=reg.auth.password)
        assert res.returncode == 0, res.stderr
        assert "Login Succeeded" in res.stdout


def _layer_digest(image: Image) -> str:
    return image.layers[-1].digest


def test_login_wrong_then_right_password(auth_registry: Registry, world: World) -> None:
    assert auth_registry.auth is not None
    user, password = auth_registry.auth.username, auth_registry.auth.password
    bad = world.refrt("login", "-u", user, "-p", "not-the-password", auth_registry.host)
    assert bad.returncode == 1
    assert "incorrect username or password" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 2  # the -p warning, then one error line
    assert not (world.config / "config.json").exists()

    good = world.refrt("login", "-u", user, "--password-stdin", auth_registry.host, stdin=password + "\n")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "Login Succeeded"
    config = world.config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    auth = json.loads(config.read_text())["auths"][auth_registry.host]["auth"]
    assert base64.b64decode(auth).decode() == f"{user}:{password}"

    out = world.refrt("logout", auth_registry.host)
    assert out.returncode == 0 and f"Removing login credentials for {auth_registry.host}" in out.stdout
    assert auth_registry.host not in json.loads(config.read_text())["auths"]


def test_push_without_login_is_refused(auth_registry: Registry, world: World) -> None:
    world.make_image(f"{auth_registry.host}/locked:1")
    res = world.refrt("push", f"{auth_registry.host}/locked:1")
    assert res.returncode == 1
    assert "authentication required" in res.stderr.splitlines()[-1]


def test_push_rmi_pull_round_trips_the_digest(any_registry: Registry, world: World) -> None:
    _login(world, any_registry)
    ref = f"{any_registry.host}/conformance/app:v1"
    image = world.make_image(ref)
    pushed = world.refrt("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    match = DIGEST_LINE.search(pushed.stdout)
    assert match and match["tag"] == "v1", pushed.stdout
    digest = match["digest"]
    assert digest == image.manifest_digest
    assert int(match["size"]) == len(world.store.manifest_bytes(image))
    assert f"{_layer_digest(image)[7:19]}: Pushed" in pushed.stdout
    assert f"{any_registry.host}/conformance/app@{digest}" in world.store.resolve(ref).repo_digests

    again = world.refrt("push", ref)
    assert again.returncode == 0 and "Layer already exists" in again.stdout

    world.rmi(image)
    assert not world.store.blobs.has(_layer_digest(image))
    pulled = world.refrt("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {digest}" in pulled.stdout
    assert pulled.stdout.strip().splitlines()[-1] == ref
    back = world.store.resolve(ref)
    assert back.manifest_digest == digest and back.id == image.id
    assert back.repo_digests == [f"{any_registry.host}/conformance/app@{digest}"]
    assert all(path.is_dir() for path in world.store.lower_dirs(back))

    by_digest = world.refrt("pull", f"{any_registry.host}/conformance/app@{digest}")
    assert by_digest.returncode == 0 and "Image is up to date" in by_digest.stdout


def test_cross_repository_mount(any_registry: Registry, world: World) -> None:
    _login(world, any_registry)
    image = world.make_image(f"{any_registry.host}/first:1")
    assert world.refrt("push", f"{any_registry.host}/first:1").returncode == 0
    world.store.tag(image, f"{any_registry.host}/second:1")
    res = world.refrt("push", f"{any_registry.host}/second:1")
    assert res.returncode == 0, res.stderr
    assert f"{_layer_digest(image)[7:19]}: Mounted from first" in res.stdout
    layer_link = any_registry.storage / "docker/registry/v2/repositories/second/_layers/sha256"
    assert (layer_link / _layer_digest(image)[7:]).is_dir()


def test_chunked_upload_of_a_big_layer(
    registry: Registry, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "CHUNKED_THRESHOLD", 64 << 10)
    monkeypatch.setattr(push, "CHUNK_SIZE", 100 << 10)
    ref = f"{registry.host}/chunky:1"
    image = world.make_image(ref, payload=600_000)
    assert push.push(world.ctx, ref) == image.manifest_digest
    world.rmi(image)
    assert pull(world.ctx, ref).manifest_digest == image.manifest_digest


def test_unknown_image_is_not_found(registry: Registry, world: World) -> None:
    res = world.refrt("pull", f"{registry.host}/nothing/here:1")
    assert res.returncode == 1
    assert res.stderr.strip() == f"refrt: manifest for {registry.host}/nothing/here:1 not found: manifest unknown"


def test_corrupted_blob_is_rejected_and_nothing_stored(any_registry: Registry, world: World) -> None:
    _login(world, any_registry)
    ref = f"{any_registry.host}/tampered:1"
    keep = world.make_image("keep:1")
    image = world.make_image(ref)
    assert world.refrt("push", ref).returncode == 0
    world.rmi(image)
    data = any_registry.blob_data_path(_layer_digest(image))
    original = data.read_bytes()
    data.write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])
    before = world.listing()
    res = world.refrt("pull", ref)
    assert res.returncode == 1
    assert f"blob {_layer_digest(image)}: digest mismatch" in res.stderr
    assert world.listing() == before
    assert [i.repo_tags for i in world.store.images()] == [["keep:1"]]
    assert world.store.resolve("keep:1").id == keep.id


def _cutting_handler(
    manifest: bytes, config: bytes, config_digest: str, layer_digest: str, layer_size: int
) -> type[BaseHTTPRequestHandler]:
    class CutsTheLayer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v2/":
                self._send(200, b"{}")
            elif self.path.startswith("/v2/cut/manifests/"):
                self._send(200, manifest, manifests.OCI_MANIFEST)
            elif self.path == f"/v2/cut/blobs/{config_digest}":
                self._send(200, config)
            elif self.path == f"/v2/cut/blobs/{layer_digest}":
                self.send_response(200)
                self.send_header("Content-Length", str(layer_size))
                self.end_headers()
                self.wfile.write(os.urandom(layer_size // 2))
                self.wfile.flush()
                self.close_connection = True
            else:
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')

        def _send(self, status: int, body: bytes, media_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return CutsTheLayer


def test_dropped_connection_mid_blob_leaves_the_store_unchanged(
    tiny_server: Callable[..., TinyServer], world: World
) -> None:
    image = world.make_image("source:1", payload=200_000)
    manifest = world.store.manifest_bytes(image)
    config = world.store.config_bytes(image)
    layer = world.store.blobs.size(_layer_digest(image))
    world.rmi(image)
    world.make_image("keep:1")
    server = tiny_server(_cutting_handler(manifest, config, image.id, _layer_digest(image), layer))
    before = world.listing()
    with pytest.raises(ConnectionFailedError, match=f"connection dropped after {layer // 2} of {layer} bytes"):
        pull(world.ctx, f"{server.host}/cut:1")
    assert world.listing() == before
    res = world.refrt("pull", f"{server.host}/cut:1")
    assert res.returncode == 1 and "connection dropped" in res.stderr
    assert world.listing() == before


def _put_index(reg: Registry, world: World, repo: str, tag: str, entries: list[dict[str, object]]) -> str:
    from runtime.registry.endpoints import client_for

    index = json.dumps({"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": entries}).encode()
    with client_for(reg.host, world.config) as client:
        client.put_manifest(repo, tag, index, manifests.OCI_INDEX, "index")
    return "sha256:" + hashlib.sha256(index).hexdigest()


def test_pull_through_an_index_picks_the_platform(any_registry: Registry, world: World) -> None:
    _login(world, any_registry)
    ref = f"{any_registry.host}/multi:1"
    image = world.make_image(ref)
    assert world.refrt("push", ref).returncode == 0
    size = len(world.store.manifest_bytes(image))
    other = world.make_image(f"{any_registry.host}/multi:other", payload=1000)
    assert world.refrt("push", f"{any_registry.host}/multi:other").returncode == 0
    decoy = other.manifest_digest
    host = manifests.Platform.host()
    entries: list[dict[str, object]] = [
        {"mediaType": manifests.OCI_MANIFEST, "digest": decoy, "size": len(world.store.manifest_bytes(other)),
         "platform": {"os": "linux", "architecture": "s390x" if host.architecture != "s390x" else "riscv64"}},
        {"mediaType": manifests.OCI_MANIFEST, "digest": image.manifest_digest, "size": size,
         "platform": {"os": "linux", "architecture": host.architecture}},
    ]
    index_digest = _put_index(any_registry, world, "multi", "all", entries)
    world.rmi(image)
    res = world.refrt("pull", f"{any_registry.host}/multi:all")
    assert res.returncode == 0, res.stderr
    assert f"Digest: {index_digest}" in res.stdout
    assert world.store.resolve(f"{any_registry.host}/multi:all").manifest_digest == image.manifest_digest

    with pytest.raises(UnsupportedManifestError, match="no matching manifest for linux/mips64"):
        pull(world.ctx, f"{any_registry.host}/multi:all", platform="linux/mips64")


def test_pull_verifies_a_digest_reference(registry: Registry, world: World) -> None:
    ref = f"{registry.host}/bydigest:1"
    image = world.make_image(ref)
    assert world.refrt("push", ref).returncode == 0
    # The manifest's stored bytes are what the registry serves under the digest; a different digest is unknown.
    res = world.refrt("pull", f"{registry.host}/bydigest@sha256:{'1' * 64}")
    assert res.returncode == 1 and "not found" in res.stderr
    world.rmi(image)
    res = world.refrt("pull", f"{registry.host}/bydigest@{image.manifest_digest}")
    assert res.returncode == 0, res.stderr
    pulled = world.store.resolve(f"{registry.host}/bydigest@{image.manifest_digest}")
    assert pulled.id == image.id and pulled.repo_tags == []
