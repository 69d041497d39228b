"""Fixtures of the image-store tests: a store in a temporary refrt root, busybox in it, tar builders."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.paths import Paths
from runtime.store import Image, Store
from runtime.store.baseimage import bootstrap_busybox

TarEntry = tuple[Any, ...]
"""(name, kind, payload): kind "file" (payload bytes), "dir", "symlink"/"hardlink" (payload target), "chr"."""


def build_tar(entries: list[TarEntry], *, gzip_it: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip_it else "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, *rest in entries:
            payload = rest[0] if rest else b""
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(payload)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def scan_for_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests mark an image in use the way containers do on disk; whatever hook another package may have
    registered on ``Store.in_use_check`` in this process is set aside (and restored afterwards)."""
    monkeypatch.setattr(Store, "in_use_check", None)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "root", state=tmp_path / "state")


@pytest.fixture
def store(paths: Paths) -> Store:
    s = Store(paths)
    s.ensure()
    return s


@pytest.fixture
def busybox(store: Store) -> Image:
    return bootstrap_busybox(store)


@pytest.fixture
def add_tar(store: Store) -> Callable[..., Any]:
    def add(entries: list[TarEntry], *, gzip_it: bool = False) -> Any:
        return store.add_layer_from_tar(io.BytesIO(build_tar(entries, gzip_it=gzip_it)))

    return add


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under ``root`` with its size: what 'the store is unchanged' compares."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found.append((str(p.relative_to(root)), p.lstat().st_size if not p.is_dir() else 0))
    return sorted(found)


@pytest.fixture
def store_listing() -> Callable[[Path], list[tuple[str, int]]]:
    return listing


@pytest.fixture
def tar_bytes() -> Callable[..., bytes]:
    return build_tar


@pytest.fixture
def mounts_cleanup() -> Iterator[list[Path]]:
    """Mount points a test registers are unmounted at the end even when it fails."""
    from runtime.store.overlay import is_mounted, unmount

    points: list[Path] = []
    yield points
    for point in points:
        if is_mounted(point):
            unmount(point)
