"""Overlay mounts of image layers: OCI whiteouts hide lower content; too many layers refused cleanly."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.store import Image, Layer, Store, TooManyLayers  # noqa: F401
from runtime.store.overlay import MAX_LOWER_LAYERS, is_mounted, mount_overlay, unmount

AddTar = Callable[..., Layer]
TarBytes = Callable[..., bytes]
Listing = Callable[[Path], list[tuple[str, int]]]


def _dirs(base: Path) -> tuple[Path, Path, Path]:
    dirs = tuple(base / n for n in ("upper", "work", "merged"))
    for d in dirs:
        d.mkdir(parents=True)
    return dirs  # type: ignore[return-value]


def test_whiteouts_hide_lower_content_in_a_real_overlay(
    store: Store, add_tar: AddTar, tmp_path: Path, mounts_cleanup: list[Path]
) -> None:
    bottom = add_tar(
        [
            ("etc", "dir"),
            ("etc/keep", "file", b"keep"),
            ("etc/secret", "file", b"gone soon"),
            ("data", "dir"),
            ("data/old1", "file", b"1"),
            ("data/old2", "file", b"2"),
        ]
    )
    top = add_tar(
        [
            ("etc", "dir"),
            ("etc/.wh.secret", "file"),
            ("data", "dir"),
            ("data/.wh..wh..opq", "file"),
            ("data/new", "file", b"new"),
        ]
    )
    image = store.commit_image({}, [bottom, top], ["whiteouts:test"])
    upper, work, merged = _dirs(tmp_path / "ctr")
    mounts_cleanup.append(merged)
    mount_overlay(store.lower_dirs(image), upper, work, merged)
    try:
        assert is_mounted(merged)
        assert sorted(os.listdir(merged / "etc")) == ["keep"]
        assert sorted(os.listdir(merged / "data")) == ["new"]
        assert (merged / "etc/keep").read_text() == "keep"
        # writes land in the upper dir and become a layer with OCI whiteouts
        (merged / "etc/keep").unlink()
        (merged / "etc/added").write_text("a")
    finally:
        unmount(merged)
    assert not is_mounted(merged)
    layer = store.add_layer_from_dir(upper)
    assert layer is not None
    import gzip

    with gzip.open(store.blobs.path(layer.digest)) as gz, tarfile.open(fileobj=gz) as tf:
        assert sorted(tf.getnames()) == ["etc", "etc/.wh.keep", "etc/added"]


def test_many_layers_with_long_paths_still_mount(
    store: Store, add_tar: AddTar, tmp_path: Path, mounts_cleanup: list[Path]
) -> None:
    """60 layers x ~110-character paths is over a page: the mount goes through short links instead."""
    layers = [add_tar([(f"f{i:03}", "file", b"%d" % i)]) for i in range(60)]
    image = store.commit_image({}, layers, ["many:layers"])
    assert len(":".join(str(p) for p in store.lower_dirs(image))) > os.sysconf("SC_PAGE_SIZE")
    upper, work, merged = _dirs(tmp_path / ("c" * 40))
    mounts_cleanup.append(merged)
    mount_overlay(store.lower_dirs(image), upper, work, merged)
    try:
        assert len(os.listdir(merged)) == 60
        assert (merged / "f059").read_text() == "59"
    finally:
        unmount(merged)
    assert not [p for p in merged.parent.iterdir() if p.name.startswith(".lower-")]


@pytest.mark.slow
def test_too_many_layers_is_refused_before_mounting(store: Store, tmp_path: Path, mounts_cleanup: list[Path]) -> None:
    count = MAX_LOWER_LAYERS + 10
    layers = []
    for i in range(count):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo(f"f{i}")
            tf.addfile(info, io.BytesIO(b""))
        layers.append(store.add_layer_from_tar(io.BytesIO(buf.getvalue()), compressed=False))
    image = store.commit_image({}, layers, ["too:many"])
    assert len(store.resolve("too:many").layers) == count
    upper, work, merged = _dirs(tmp_path / "ctr")
    mounts_cleanup.append(merged)
    with pytest.raises(TooManyLayers, match=f"{count} layers.*at most {MAX_LOWER_LAYERS}"):
        mount_overlay(store.lower_dirs(image), upper, work, merged)
    assert not is_mounted(merged)
    assert os.listdir(merged) == [] and os.listdir(upper) == []


def test_unmount_of_a_directory_not_mounted_is_a_no_op(tmp_path: Path) -> None:
    unmount(tmp_path)
    assert not is_mounted(tmp_path)


def test_lower_dirs_are_top_first(store: Store, add_tar: AddTar) -> None:
    a = add_tar([("a", "file", b"a")])
    b = add_tar([("b", "file", b"b")])
    image = store.commit_image({}, [a, b], ["order:test"])
    assert store.lower_dirs(image) == [b.path, a.path]
