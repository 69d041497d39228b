"""Mount targets are resolved inside the container's root: an image's symlinks cannot point a mount at the host."""

from __future__ import annotations

import os
from pathlib import Path

from runtime.container.rootfs import _inside, _mkdir_in


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real/etc").mkdir(parents=True)
    os.symlink("/real/etc", root / "etc")  # absolute: relative to the container's root, not the host's
    os.symlink("../../../../../../outside", root / "escape")  # climbs above the root: stops at it
    assert _inside(root, "/etc/hosts") == root / "real/etc/hosts"
    assert _inside(root, "/escape/x") == root / "outside/x"
    assert _inside(root, "/../../x") == root / "x"


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    import pytest

    from runtime.container.rootfs import RootfsError

    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/b", root / "a")
    os.symlink("/a", root / "b")
    with pytest.raises(RootfsError, match="too many symlinks"):
        _inside(root, "/a/x")


def test_mount_point_created_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/nowhere/deeper", root / "data")
    assert _mkdir_in(root, "/data") == root / "nowhere/deeper"
    assert (root / "nowhere/deeper").is_dir()
    assert not Path("/nowhere").exists()
