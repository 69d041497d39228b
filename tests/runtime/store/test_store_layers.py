"""Layers: hostile tars refused with the store unchanged, whiteouts converted both ways, one unpack per layer."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.store import DigestMismatch, Image, Layer, Store, UnsafeLayer  # noqa: F401
from runtime.store.layers import OVERLAY_OPAQUE_XATTR

AddTar = Callable[..., Layer]
TarBytes = Callable[..., bytes]
Listing = Callable[[Path], list[tuple[str, int]]]


def _refused(store: Store, data: bytes, listing: Listing, match: str) -> None:
    before = listing(store.root)
    with pytest.raises(UnsafeLayer, match=match):
        store.add_layer_from_tar(io.BytesIO(data))
    assert listing(store.root) == before


def test_dotdot_member_is_refused_and_store_unchanged(
    store: Store, tar_bytes: TarBytes, store_listing: Listing, tmp_path: Path
) -> None:
    evil = tar_bytes([("ok", "file", b"fine"), ("../evil", "file", b"pwned")])
    _refused(store, evil, store_listing, r"'\.\./evil'.*'\.\.'")
    assert not (store.tmp.parent / "evil").exists()
    assert not list(tmp_path.rglob("evil"))


def test_absolute_member_is_refused(store: Store, tar_bytes: TarBytes, store_listing: Listing) -> None:
    _refused(store, tar_bytes([("/etc/evil", "file", b"x")]), store_listing, "absolute path")


def test_write_through_absolute_symlink_is_refused(
    store: Store, tar_bytes: TarBytes, store_listing: Listing, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tar_bytes([("escape", "symlink", str(outside)), ("escape/pwned", "file", b"x")])
    _refused(store, evil, store_listing, "through a symlink leaving the layer")
    assert list(outside.iterdir()) == []


def test_write_through_relative_symlink_chain_is_refused(
    store: Store, tar_bytes: TarBytes, store_listing: Listing, tmp_path: Path
) -> None:
    # a symlink to "." is harmless and inside; the one after it climbs out of the layer
    evil = tar_bytes([("here", "symlink", "."), ("up", "symlink", "here/../.."), ("up/pwned", "file", b"x")])
    _refused(store, evil, store_listing, "leav|outside")


def test_escaping_hardlink_is_refused(store: Store, tar_bytes: TarBytes, store_listing: Listing) -> None:
    _refused(store, tar_bytes([("h", "hardlink", "../../../etc/passwd")]), store_listing, "hard link.*outside")
    _refused(store, tar_bytes([("h", "hardlink", "/etc/passwd")]), store_listing, "hard link.*outside")


def test_hardlink_through_symlink_is_refused(store: Store, tar_bytes: TarBytes, store_listing: Listing) -> None:
    evil = tar_bytes([("etc", "symlink", "/etc"), ("h", "hardlink", "etc/passwd")])
    _refused(store, evil, store_listing, "hard link.*outside")


def test_absolute_symlink_targets_are_kept(store: Store, add_tar: AddTar) -> None:
    layer = add_tar([("bin", "dir"), ("bin/busybox", "file", b"#!"), ("bin/sh", "symlink", "/bin/busybox")])
    assert os.readlink(layer.path / "bin/sh") == "/bin/busybox"


def test_device_nodes_and_whiteouts_unpack_in_overlay_form(store: Store, add_tar: AddTar) -> None:
    layer = add_tar(
        [
            ("dev", "dir"),
            ("dev/null", "chr"),
            ("etc", "dir"),
            ("etc/.wh.gone", "file"),
            ("opaque", "dir"),
            ("opaque/.wh..wh..opq", "file"),
            ("opaque/kept", "file", b"k"),
        ]
    )
    null = os.lstat(layer.path / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    gone = os.lstat(layer.path / "etc/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert not (layer.path / "etc/.wh.gone").exists()
    assert os.getxattr(layer.path / "opaque", OVERLAY_OPAQUE_XATTR) == b"y"
    assert not (layer.path / "opaque/.wh..wh..opq").exists()
    assert (layer.path / "opaque/kept").read_bytes() == b"k"


def test_layer_ids_are_the_digests_of_the_tar(store: Store, tar_bytes: TarBytes) -> None:
    data = tar_bytes([("a", "file", b"hello")])
    layer = store.add_layer_from_tar(io.BytesIO(data))
    assert layer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert layer.size == len(data)
    blob = store.blobs.path(layer.digest).read_bytes()
    assert blob[:2] == b"\x1f\x8b" and layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    gz = tar_bytes([("a", "file", b"hello")], gzip_it=True)
    again = store.add_layer_from_tar(io.BytesIO(gz))
    assert again.diff_id == layer.diff_id and again.digest == "sha256:" + hashlib.sha256(gz).hexdigest()


def test_same_layer_unpacked_once_for_two_images(store: Store, add_tar: AddTar) -> None:
    base = add_tar([("shared", "file", b"s" * 1000)])
    top1 = add_tar([("one", "file", b"1")])
    top2 = add_tar([("two", "file", b"2")], gzip_it=True)
    again = add_tar([("shared", "file", b"s" * 1000)], gzip_it=True)
    assert again.path == base.path
    img1 = store.commit_image({}, [base, top1], ["one:latest"])
    img2 = store.commit_image({}, [again, top2], ["two:latest"])
    low1, low2 = store.lower_dirs(img1), store.lower_dirs(img2)
    assert low1[-1] == low2[-1]
    assert os.stat(low1[-1] / "shared").st_ino == os.stat(low2[-1] / "shared").st_ino
    assert len(list(store.layers_dir.iterdir())) == 3


def test_concurrent_unpack_of_one_layer(store: Store, tar_bytes: TarBytes, tmp_path: Path) -> None:
    data = tar_bytes([(f"f{i}", "file", os.urandom(2000)) for i in range(200)])
    (tmp_path / "layer.tar").write_bytes(data)
    code = (
        "import sys; from pathlib import Path; from runtime.paths import Paths; from runtime.store import Store;"
        f"s = Store(Paths(Path({str(store.paths.root)!r}), Path({str(store.paths.state)!r})));"
        f"print(s.add_layer_from_tar(open({str(tmp_path / 'layer.tar')!r}, 'rb')).diff_id)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    assert [p.name for p in store.layers_dir.iterdir()] == [outs[0].split(":")[1]]
    assert list(store.tmp.iterdir()) == []
    assert len(list((store.layers_dir / outs[0].split(":")[1]).iterdir())) == 200


def test_dir_to_layer_turns_overlay_whiteouts_into_oci_ones(store: Store, tmp_path: Path) -> None:
    import gzip
    import tarfile

    upper = tmp_path / "upper"
    (upper / "d").mkdir(parents=True)
    (upper / "d/new").write_text("n")
    os.setxattr(upper / "d", OVERLAY_OPAQUE_XATTR, b"y")
    os.mknod(upper / "removed", stat.S_IFCHR, os.makedev(0, 0))
    os.link(upper / "d/new", upper / "hard")
    layer = store.add_layer_from_dir(upper)
    assert layer is not None
    with gzip.open(store.blobs.path(layer.digest)) as gz, tarfile.open(fileobj=gz) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert sorted(members) == sorted(["d", "d/.wh..wh..opq", "d/new", "hard", ".wh.removed"])
    assert members[".wh.removed"].isreg() and members["hard"].islnk()
    # and back: unpacked again in overlay form
    assert os.lstat(layer.path / "removed").st_rdev == 0
    assert os.getxattr(layer.path / "d", OVERLAY_OPAQUE_XATTR) == b"y"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert store.add_layer_from_dir(empty) is None


def test_ingest_blob_verifies_while_streaming(store: Store, store_listing: Listing) -> None:
    data = b"x" * 5000
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    before = store_listing(store.root)
    with pytest.raises(DigestMismatch, match="hashes to"):
        store.ingest_blob(io.BytesIO(data + b"!"), good, None)
    with pytest.raises(DigestMismatch, match="expected 5000"):
        store.ingest_blob(io.BytesIO(data[:-1]), good, 5000)
    with pytest.raises(DigestMismatch, match="more than"):
        store.ingest_blob(io.BytesIO(data + b"!"), good, 5000)
    assert store_listing(store.root) == before
    path = store.ingest_blob(io.BytesIO(data), good, 5000)
    assert Path(path).read_bytes() == data and store.blobs.has(good)


def test_corrupt_or_truncated_layers_are_refused(store: Store, tar_bytes: TarBytes, store_listing: Listing) -> None:
    from runtime.store.errors import BadLayer

    before = store_listing(store.root)
    good = tar_bytes([(f"f{i}", "file", os.urandom(3000)) for i in range(20)], gzip_it=True)
    for bad in (good[: len(good) // 2], good[:10] + b"\0" * 500 + good[510:], b"\x1f\x8b" + b"junk" * 50):
        with pytest.raises(BadLayer):
            store.add_layer_from_tar(io.BytesIO(bad))
    with pytest.raises(UnsafeLayer, match=r"hard link.*directory"):
        store.add_layer_from_tar(io.BytesIO(tar_bytes([("d", "dir"), ("h", "hardlink", "d")])))
    assert store_listing(store.root) == before


def test_device_nodes_need_root(
    store: Store, tar_bytes: TarBytes, store_listing: Listing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    _refused(store, tar_bytes([("dev", "dir"), ("dev/null", "chr")]), store_listing, "device node; only root")
