"""push, pull, login and logout against the real docker-registry, with and without htpasswd auth.

The CLI is run as a separate process (``python -m runtime``) the way users run it; images are made and removed
through the store's API, since ``tag`` and ``rmi`` belong to the images CLI.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from conformance.services.registry import Registry
from runtime.registry import manifests
from runtime.registry.errors import ConnectionFailedError, UnsupportedManifestError
from runtime.registry.pull import pull
from runtime.registry.push import push
from runtime.store.images import Image
from tests.fixtures.registry import DIGEST_LINE, REPO, TinyServer, World, login_cli


def _layer_digest(image: Image) -> str:
    return image.layers[-1].digest


def test_login_wrong_then_right_password(auth_registry: Registry, registry_world: World) -> None:
    assert auth_registry.auth is not None
    user, password = auth_registry.auth.username, auth_registry.auth.password
    bad = registry_world.refrt("login", "-u", user, "-p", "not-the-password", auth_registry.host)
    assert bad.returncode == 1
    assert "incorrect username or password" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 2  # the -p warning, then one error line
    assert not (registry_world.config / "config.json").exists()

    good = registry_world.refrt("login", "-u", user, "--password-stdin", auth_registry.host, stdin=password + "\n")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "Login Succeeded"
    config = registry_world.config / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    auth = json.loads(config.read_text())["auths"][auth_registry.host]["auth"]
    assert base64.b64decode(auth).decode() == f"{user}:{password}"

    again = registry_world.cli("login", auth_registry.host)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["Authenticating with existing credentials...", "Login Succeeded"]

    out = registry_world.refrt("logout", auth_registry.host)
    assert out.returncode == 0 and f"Removing login credentials for {auth_registry.host}" in out.stdout
    assert auth_registry.host not in json.loads(config.read_text())["auths"]


def test_push_without_login_is_refused(auth_registry: Registry, registry_world: World) -> None:
    registry_world.make_image(f"{auth_registry.host}/locked:1")
    res = registry_world.cli("push", f"{auth_registry.host}/locked:1")
    assert res.returncode == 1
    assert "authentication required" in res.stderr.splitlines()[-1]


def test_push_rmi_pull_round_trips_the_digest(any_registry: Registry, registry_world: World) -> None:
    login_cli(registry_world, any_registry)
    ref = f"{any_registry.host}/conformance/app:v1"
    image = registry_world.make_image(ref)
    pushed = registry_world.refrt("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    match = DIGEST_LINE.search(pushed.stdout)
    assert match and match["tag"] == "v1", pushed.stdout
    digest = match["digest"]
    assert digest == image.manifest_digest
    assert int(match["size"]) == len(registry_world.store.manifest_bytes(image))
    assert f"{_layer_digest(image)[7:19]}: Pushed" in pushed.stdout
    assert f"{any_registry.host}/conformance/app@{digest}" in registry_world.store.resolve(ref).repo_digests

    again = registry_world.cli("push", ref)
    assert again.returncode == 0 and "Layer already exists" in again.stdout

    registry_world.rmi(image)
    assert not registry_world.store.blobs.has(_layer_digest(image))
    pulled = registry_world.refrt("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert f"Digest: {digest}" in pulled.stdout
    assert pulled.stdout.strip().splitlines()[-1] == ref
    back = registry_world.store.resolve(ref)
    assert back.manifest_digest == digest and back.id == image.id
    assert back.repo_digests == [f"{any_registry.host}/conformance/app@{digest}"]
    assert all(path.is_dir() for path in registry_world.store.lower_dirs(back))
    listed = registry_world.cli("images", "--digests")
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"{re.escape(any_registry.host)}/conformance/app\s+v1\s+{digest}\s", listed.stdout), listed.stdout
    inspected = registry_world.cli("inspect", ref)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)[0]["RepoDigests"] == [f"{any_registry.host}/conformance/app@{digest}"]

    by_digest = registry_world.cli("pull", f"{any_registry.host}/conformance/app@{digest}")
    assert by_digest.returncode == 0 and "Image is up to date" in by_digest.stdout


def test_cross_repository_mount(any_registry: Registry, registry_world: World) -> None:
    login_cli(registry_world, any_registry)
    image = registry_world.make_image(f"{any_registry.host}/first:1")
    assert registry_world.cli("push", f"{any_registry.host}/first:1").returncode == 0
    registry_world.store.tag(image, f"{any_registry.host}/second:1")
    res = registry_world.cli("push", f"{any_registry.host}/second:1")
    assert res.returncode == 0, res.stderr
    assert f"{_layer_digest(image)[7:19]}: Mounted from first" in res.stdout
    layer_link = any_registry.storage / "docker/registry/v2/repositories/second/_layers/sha256"
    assert (layer_link / _layer_digest(image)[7:]).is_dir()


def test_chunked_upload_of_a_big_layer(
    registry: Registry, registry_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    push_module = importlib.import_module("runtime.registry.push")
    monkeypatch.setattr(push_module, "CHUNKED_THRESHOLD", 64 << 10)
    monkeypatch.setattr(push_module, "CHUNK_SIZE", 100 << 10)
    ref = f"{registry.host}/chunky:1"
    image = registry_world.make_image(ref, payload=600_000)
    assert push(registry_world.ctx, ref) == image.manifest_digest
    registry_world.rmi(image)
    assert pull(registry_world.ctx, ref).manifest_digest == image.manifest_digest


def test_unknown_image_is_not_found(registry: Registry, registry_world: World) -> None:
    res = registry_world.cli("pull", f"{registry.host}/nothing/here:1")
    assert res.returncode == 1
    assert res.stderr.strip() == f"refrt: manifest for {registry.host}/nothing/here:1 not found: manifest unknown"


def test_corrupted_blob_is_rejected_and_nothing_stored(any_registry: Registry, registry_world: World) -> None:
    login_cli(registry_world, any_registry)
    ref = f"{any_registry.host}/tampered:1"
    keep = registry_world.make_image("keep:1")
    image = registry_world.make_image(ref)
    assert registry_world.cli("push", ref).returncode == 0
    registry_world.rmi(image)
    data = any_registry.blob_data_path(_layer_digest(image))
    original = data.read_bytes()
    data.write_bytes(bytes(b ^ 0xFF for b in original[:64]) + original[64:])
    before = registry_world.listing()
    res = registry_world.refrt("pull", ref)
    assert res.returncode == 1
    assert f"blob {_layer_digest(image)}: digest mismatch" in res.stderr
    assert registry_world.listing() == before
    assert [i.repo_tags for i in registry_world.store.images()] == [["keep:1"]]
    assert registry_world.store.resolve("keep:1").id == keep.id


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
    tiny_server: Callable[..., TinyServer], registry_world: World
) -> None:
    image = registry_world.make_image("source:1", payload=200_000)
    manifest = registry_world.store.manifest_bytes(image)
    config = registry_world.store.config_bytes(image)
    layer = registry_world.store.blobs.size(_layer_digest(image))
    registry_world.rmi(image)
    registry_world.make_image("keep:1")
    server = tiny_server(_cutting_handler(manifest, config, image.id, _layer_digest(image), layer))
    before = registry_world.listing()
    with pytest.raises(ConnectionFailedError, match=f"connection dropped after {layer // 2} of {layer} bytes"):
        pull(registry_world.ctx, f"{server.host}/cut:1")
    assert registry_world.listing() == before
    res = registry_world.cli("pull", f"{server.host}/cut:1")
    assert res.returncode == 1 and "connection dropped" in res.stderr
    assert registry_world.listing() == before


def _put_index(reg: Registry, registry_world: World, repo: str, tag: str, entries: list[dict[str, object]]) -> str:
    from runtime.registry.endpoints import client_for

    index = json.dumps({"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": entries}).encode()
    with client_for(reg.host, registry_world.config) as client:
        client.put_manifest(repo, tag, index, manifests.OCI_INDEX, "index")
    return "sha256:" + hashlib.sha256(index).hexdigest()


def test_pull_through_an_index_picks_the_platform(any_registry: Registry, registry_world: World) -> None:
    login_cli(registry_world, any_registry)
    ref = f"{any_registry.host}/multi:1"
    image = registry_world.make_image(ref)
    assert registry_world.cli("push", ref).returncode == 0
    size = len(registry_world.store.manifest_bytes(image))
    other = registry_world.make_image(f"{any_registry.host}/multi:other", payload=1000)
    assert registry_world.cli("push", f"{any_registry.host}/multi:other").returncode == 0
    decoy = other.manifest_digest
    host = manifests.Platform.host()
    entries: list[dict[str, object]] = [
        {"mediaType": manifests.OCI_MANIFEST, "digest": decoy, "size": len(registry_world.store.manifest_bytes(other)),
         "platform": {"os": "linux", "architecture": "s390x" if host.architecture != "s390x" else "riscv64"}},
        {"mediaType": manifests.OCI_MANIFEST, "digest": image.manifest_digest, "size": size,
         "platform": {"os": "linux", "architecture": host.architecture}},
    ]
    index_digest = _put_index(any_registry, registry_world, "multi", "all", entries)
    registry_world.rmi(image)
    res = registry_world.cli("pull", f"{any_registry.host}/multi:all")
    assert res.returncode == 0, res.stderr
    assert f"Digest: {index_digest}" in res.stdout
    assert registry_world.store.resolve(f"{any_registry.host}/multi:all").manifest_digest == image.manifest_digest

    with pytest.raises(UnsupportedManifestError, match="no matching manifest for linux/mips64"):
        pull(registry_world.ctx, f"{any_registry.host}/multi:all", platform="linux/mips64")


def test_pull_verifies_a_digest_reference(registry: Registry, registry_world: World) -> None:
    ref = f"{registry.host}/bydigest:1"
    image = registry_world.make_image(ref)
    assert registry_world.cli("push", ref).returncode == 0
    # The manifest's stored bytes are what the registry serves under the digest; a different digest is unknown.
    res = registry_world.cli("pull", f"{registry.host}/bydigest@sha256:{'1' * 64}")
    assert res.returncode == 1 and "not found" in res.stderr
    registry_world.rmi(image)
    res = registry_world.cli("pull", f"{registry.host}/bydigest@{image.manifest_digest}")
    assert res.returncode == 0, res.stderr
    pulled = registry_world.store.resolve(f"{registry.host}/bydigest@{image.manifest_digest}")
    assert pulled.id == image.id and pulled.repo_tags == []


def test_bearer_token_registry_login_push_pull(token_registry: Registry, registry_world: World) -> None:
    assert token_registry.auth is not None and token_registry.token_server is not None
    bad = registry_world.cli(
        "login", "-u", token_registry.auth.username, "--password-stdin", token_registry.host, stdin="nope"
    )
    assert bad.returncode == 1 and "incorrect username or password" in bad.stderr
    ref = f"{token_registry.host}/tokens/app:1"
    image = registry_world.make_image(ref)
    refused = registry_world.cli("push", ref)
    assert refused.returncode == 1 and "authentication required" in refused.stderr
    login_cli(registry_world, token_registry)
    pushed = registry_world.cli("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    registry_world.rmi(image)
    pulled = registry_world.cli("pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert registry_world.store.resolve(ref).manifest_digest == image.manifest_digest
    granted = [a for claims in token_registry.token_server.issued for a in claims["access"]]
    assert {"type": "repository", "name": "tokens/app", "actions": ["pull", "push"]} in granted


def test_layer_that_does_not_match_its_diff_id_is_taken_back(registry: Registry, registry_world: World) -> None:
    from runtime.registry.endpoints import client_for

    source = registry_world.make_image("source:1")
    layer_blob = registry_world.store.blobs.read(_layer_digest(source))
    config = json.loads(registry_world.store.config_bytes(source))
    config["rootfs"]["diff_ids"] = ["sha256:" + "d" * 64]
    config_bytes = json.dumps(config).encode()
    registry_world.rmi(source)
    registry_world.make_image("keep:1")
    with client_for(registry.host, registry_world.config) as client:
        for blob in (layer_blob, config_bytes):
            location = client.start_upload("liar", ["repository:liar:pull,push"])
            assert location is not None
            client.upload_monolithic(
                location, "liar", "sha256:" + hashlib.sha256(blob).hexdigest(), io.BytesIO(blob), len(blob)
            )
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": manifests.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _layer_digest(source), "size": len(layer_blob)}],
        }).encode()
        client.put_manifest("liar", "1", manifest, manifests.OCI_MANIFEST, "manifest")
    before = registry_world.listing()
    res = registry_world.cli("pull", f"{registry.host}/liar:1")
    assert res.returncode == 1
    assert "unpacks to" in res.stderr and "d" * 64 in res.stderr
    assert registry_world.listing() == before


def test_failed_first_pull_leaves_no_store_behind(registry: Registry, registry_world: World) -> None:
    image = registry_world.make_image(f"{registry.host}/first-pull:1")
    assert registry_world.cli("push", f"{registry.host}/first-pull:1").returncode == 0
    layer = _layer_digest(image)
    data = registry.blob_data_path(layer)
    original = data.read_bytes()
    data.write_bytes(b"x" * len(original))
    fresh = World(root=registry_world.root.parent / "fresh-root", config=registry_world.config)
    res = fresh.cli("pull", f"{registry.host}/first-pull:1")
    assert res.returncode == 1 and "digest mismatch" in res.stderr
    assert not fresh.paths.store.exists()
    # Once the registry serves the right bytes again, the same pull into the still-empty root works.
    data.write_bytes(original)
    res = fresh.cli("pull", f"{registry.host}/first-pull:1")
    assert res.returncode == 0, res.stderr
    assert fresh.store.resolve(f"{registry.host}/first-pull:1").id == image.id


def test_cli_refuses_bad_input_with_one_line(registry: Registry, registry_world: World) -> None:
    bad_ref = registry_world.cli("pull", f"{registry.host}/UPPER:1")
    assert bad_ref.returncode == 125 and "repository name must be lowercase" in bad_ref.stderr
    missing = registry_world.cli("push", f"{registry.host}/absent:1")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"refrt: An image does not exist locally with the tag: {registry.host}/absent"
    by_digest = registry_world.cli("push", f"{registry.host}/x@sha256:{'a' * 64}")
    assert by_digest.returncode == 1 and "cannot push a digest reference" in by_digest.stderr
    no_user = registry_world.cli("login", "--password-stdin", registry.host, stdin="pw")
    assert no_user.returncode == 125 and "--username" in no_user.stderr
    for result in (bad_ref, missing, by_digest, no_user):
        assert len(result.stderr.strip().splitlines()) == 1


def test_concurrent_pulls_of_one_image_both_succeed(registry: Registry, registry_world: World) -> None:
    ref = f"{registry.host}/together:1"
    image = registry_world.make_image(ref, payload=2_000_000)
    assert registry_world.cli("push", ref).returncode == 0
    registry_world.rmi(image)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    argv = [sys.executable, "-m", "runtime", "--root", str(registry_world.root), "pull", "-q", ref]
    procs = [
        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    pulled = registry_world.store.resolve(ref)
    assert pulled.manifest_digest == image.manifest_digest
    assert [i.id for i in registry_world.store.images()] == [image.id]
    assert not any(registry_world.store.tmp.iterdir())
