"""import / save / load, and interoperability with skopeo (docker-archive and oci-archive both ways)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.paths import Paths
from runtime.store import Image, Layer, Store
from runtime.store.archive import import_tarball, load_archive, save_docker_archive
from runtime.store.baseimage import bootstrap_busybox, busybox_layer_tar, write_busybox_archive
from runtime.store.errors import ArchiveError, UnsafeLayer

AddTar = Callable[..., Layer]
TarBytes = Callable[..., bytes]
Listing = Callable[[Path], list[tuple[str, int]]]

SKOPEO = shutil.which("skopeo") or "skopeo"
needs_skopeo = pytest.mark.skipif(
    shutil.which("skopeo") is None, reason="skopeo (Debian package skopeo) is not installed"
)


def _fresh(tmp_path: Path, name: str) -> Store:
    return Store(Paths(root=tmp_path / name, state=tmp_path / f"{name}-state"))


def _save(store: Store, refs: list[str], dest: Path) -> Path:
    with dest.open("wb") as out:
        save_docker_archive(store, refs, out)
    return dest


def _load(store: Store, src: Path) -> list[str]:
    with src.open("rb") as fh:
        return load_archive(store, fh)


def test_busybox_is_reproducible(tmp_path: Path) -> None:
    assert busybox_layer_tar() == busybox_layer_tar()
    one = bootstrap_busybox(_fresh(tmp_path, "a"))
    two = bootstrap_busybox(_fresh(tmp_path, "b"))
    assert one.id == two.id and one.layers[0].digest == two.layers[0].digest
    root = one.layers[0].path
    assert (root / "bin/busybox").stat().st_ino == (root / "bin/sh").stat().st_ino
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert "root:x:0:0:" in (root / "etc/passwd").read_text()
    assert one.config["config"]["Cmd"] == ["sh"]


def test_save_load_round_trips_the_id(store: Store, busybox: Image, tmp_path: Path) -> None:
    store.tag(busybox, "second:v2")
    archive = _save(store, ["busybox", "second:v2"], tmp_path / "bb.tar")
    with tarfile.open(archive) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(tf.extractfile("repositories").read())  # type: ignore[union-attr]
    assert [m["RepoTags"] for m in manifest] == [["busybox:latest"], ["second:v2"]]
    assert set(repositories) == {"busybox", "second"}
    other = _fresh(tmp_path, "other")
    assert _load(other, archive) == ["Loaded image: busybox:latest", "Loaded image: second:v2"]
    loaded = other.resolve("busybox")
    assert loaded.id == busybox.id and other.resolve("second:v2").id == busybox.id
    assert loaded.diff_ids == busybox.diff_ids
    # gzip-compressed archives load too
    gz = tmp_path / "bb.tar.gz"
    gz.write_bytes(gzip.compress(archive.read_bytes(), compresslevel=1))
    assert _load(_fresh(tmp_path, "third"), gz)[0] == "Loaded image: busybox:latest"


def test_load_of_a_hostile_archive_changes_nothing(
    store: Store, tar_bytes: TarBytes, tmp_path: Path, store_listing: Listing
) -> None:
    """The first two layers are fine, the third climbs out: nothing of the first two stays behind."""
    import hashlib

    layers = [
        tar_bytes([("one", "file", b"1")]),
        tar_bytes([("two", "file", b"2")], gzip_it=True),
        tar_bytes([("../../evil", "file", b"x")]),
    ]
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}})
    paths = [f"l{i}/layer.tar" for i in range(3)]
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": paths}])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        members = [("c.json", config.encode()), *zip(paths, layers, strict=True), ("manifest.json", manifest.encode())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    before = store_listing(store.root)
    with pytest.raises(UnsafeLayer):
        load_archive(store, io.BytesIO(buf.getvalue()))
    assert store_listing(store.root) == before
    with pytest.raises(ArchiveError):
        load_archive(store, io.BytesIO(b"not a tar at all" * 100))


def test_import_rootfs_tarball_with_changes(store: Store, tar_bytes: TarBytes) -> None:
    data = tar_bytes([("hello", "file", b"world")], gzip_it=True)
    image = import_tarball(
        store,
        io.BytesIO(data),
        ["imported:v1"],
        message="from test",
        changes=['CMD ["/hello"]', "ENV A=1 B=2", "WORKDIR /w", "EXPOSE 80"],
    )
    assert store.resolve("imported:v1").id == image.id
    assert image.config["config"] == {
        "ExposedPorts": {"80/tcp": {}},
        "Env": ["A=1", "B=2"],
        "Cmd": ["/hello"],
        "WorkingDir": "/w",
    }
    assert image.config["history"][0]["comment"] == "from test"
    assert (image.layers[0].path / "hello").read_bytes() == b"world"
    import bz2

    plain = tar_bytes([("bz", "file", b"2")])
    other = import_tarball(store, io.BytesIO(bz2.compress(plain)), [])
    assert other.repo_tags == [] and (other.layers[0].path / "bz").read_bytes() == b"2"


@pytest.mark.peer
@needs_skopeo
def test_skopeo_converts_our_save_and_we_load_its_oci_archive(store: Store, busybox: Image, tmp_path: Path) -> None:
    saved = _save(store, ["busybox"], tmp_path / "bb.tar")
    oci = tmp_path / "bb-oci.tar"
    subprocess.run([SKOPEO, "copy", "-q", f"docker-archive:{saved}", f"oci-archive:{oci}:refrt/bb:oci"], check=True)
    other = _fresh(tmp_path, "other")
    assert _load(other, oci) == ["Loaded image: refrt/bb:oci"]
    # our configs are Go-canonical JSON, so skopeo's decode/re-encode keeps the id
    assert other.resolve("refrt/bb:oci").id == busybox.id
    # an oci-archive without a name loads untagged, by id
    bare = tmp_path / "bare.tar"
    subprocess.run([SKOPEO, "copy", "-q", f"docker-archive:{saved}", f"oci-archive:{bare}"], check=True)
    assert _load(_fresh(tmp_path, "bare"), bare) == [f"Loaded image ID: {busybox.id}"]


@pytest.mark.peer
@needs_skopeo
def test_we_load_a_docker_archive_skopeo_wrote(store: Store, busybox: Image, tmp_path: Path) -> None:
    # skopeo reads the store itself as an OCI layout, and writes a docker-archive (layers behind symlinks)
    out = tmp_path / "from-skopeo.tar"
    src = f"oci:{store.root}:docker.io/library/busybox:latest"
    subprocess.run([SKOPEO, "copy", "-q", src, f"docker-archive:{out}:example.com/team/bb:sk"], check=True)
    other = _fresh(tmp_path, "other")
    assert _load(other, out) == ["Loaded image: example.com/team/bb:sk"]
    image = other.resolve("example.com/team/bb:sk")
    assert image.id == busybox.id
    assert (image.layers[0].path / "bin/busybox").is_file()


@pytest.mark.peer
@needs_skopeo
def test_busybox_archive_for_peers_is_readable_by_skopeo(tmp_path: Path) -> None:
    dest = tmp_path / "busybox.tar"
    image_id = write_busybox_archive(dest)
    result = subprocess.run([SKOPEO, "inspect", "--config", f"docker-archive:{dest}"], capture_output=True, check=True)
    config = json.loads(result.stdout)
    assert config["rootfs"]["diff_ids"] and config["config"]["Cmd"] == ["sh"]
    assert image_id.startswith("sha256:")
