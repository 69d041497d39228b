"""prepare_mounts / release_mounts / volumes_from and the volume store, on a real temporary root."""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.cli import main
from runtime.paths import Paths
from runtime.spec import MountSpec
from runtime.volumes import (
    VolumeStore,
    parse_mount_flag,
    parse_volume_flag,
    prepare_mounts,
    release_mounts,
    volumes_from,
)
from runtime.volumes.errors import BindSourceMissing, VolumeInUse, VolumeNotFound


@dataclass(frozen=True)
class Ctx:
    paths: Paths


@pytest.fixture
def ctx(tmp_path: Path) -> Ctx:
    return Ctx(Paths.resolve(str(tmp_path / "root")))


def _container(ctx: Ctx, name: str, mounts: list[MountSpec]) -> str:
    """Write a container directory the way the container code does (config.json with prepared mounts)."""
    cid = secrets.token_hex(32)
    d = ctx.paths.containers / cid
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"id": cid, "name": name, "mounts": [asdict(m) for m in mounts]}))
    return cid


def _layers(tmp_path: Path) -> list[Path]:
    """Three unpacked layers, top first, with both whiteout forms and an opaque directory."""
    bottom, middle, top = (tmp_path / n for n in ("l0", "l1", "l2"))
    (bottom / "data" / "sub").mkdir(parents=True)
    (bottom / "data" / "keep.txt").write_text("bottom")
    (bottom / "data" / "gone.txt").write_text("deleted above")
    (bottom / "data" / "sub" / "old.txt").write_text("hidden by opaque")
    (bottom / "data" / "dev-gone").write_text("deleted by a 0:0 device")
    (middle / "data" / "sub").mkdir(parents=True)
    (middle / "data" / ".wh.gone.txt").write_text("")
    os.mknod(middle / "data" / "dev-gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (middle / "data" / "sub" / ".wh..wh..opq").write_text("")
    (middle / "data" / "sub" / "new.txt").write_text("middle")
    (top / "data").mkdir(parents=True)
    (top / "data" / "keep.txt").write_text("top wins")
    os.chmod(top / "data", 0o750)
    return [top, middle, bottom]


def test_named_volume_created_populated_once_and_survives(ctx: Ctx, tmp_path: Path) -> None:
    layers = _layers(tmp_path)
    first = _container(ctx, "writer", [])
    [spec] = prepare_mounts(ctx, first, [parse_volume_flag("appdata:/data")], {}, layers)
    data = Path(spec.host_path)
    assert data == ctx.paths.volumes / "appdata" / "_data"
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == ["keep.txt", "sub", "sub/new.txt"]
    assert (data / "keep.txt").read_text() == "top wins"
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    (data / "keep.txt").write_text("written by the container")
    release_mounts(ctx, first, [spec], remove_anonymous=True)
    second = _container(ctx, "reader", [])
    [again] = prepare_mounts(ctx, second, [parse_volume_flag("appdata:/data")], {}, layers)
    assert (Path(again.host_path) / "keep.txt").read_text() == "written by the container"


def test_nocopy_and_callable_populator(ctx: Ctx) -> None:
    cid = _container(ctx, "c", [])
    seen: list[str] = []

    def fill(target: str, dest: Path) -> bool:
        seen.append(target)
        (dest / "from-callable").write_text("x")
        return True

    specs = prepare_mounts(ctx, cid, [parse_volume_flag("va:/a"), parse_volume_flag("vb:/b:nocopy")], {},
                           populate=fill)
    assert seen == ["/a"]
    assert (Path(specs[0].host_path) / "from-callable").exists()
    assert list(Path(specs[1].host_path).iterdir()) == []


def test_anonymous_volumes_from_image_and_flag_removed_with_rm_v(ctx: Ctx) -> None:
    cid = _container(ctx, "anon", [])
    image: dict[str, Any] = {"config": {"Volumes": {"/var/lib/db": {}, "/data": {}}}}
    specs = prepare_mounts(ctx, cid, [parse_volume_flag("/scratch"), parse_volume_flag("named:/data")], image)
    by_target = {s.target: s for s in specs}
    assert sorted(by_target) == ["/data", "/scratch", "/var/lib/db"]
    assert by_target["/data"].source == "named"  # the user's mount wins over the image's VOLUME
    anon = [s for s in specs if s.anonymous]
    assert len(anon) == 2 and all(len(s.source) == 64 for s in anon)
    store = VolumeStore(ctx.paths)
    assert all(store.get(s.source).anonymous for s in anon)
    release_mounts(ctx, cid, specs, remove_anonymous=False)
    assert all(store.exists(s.source) for s in specs)
    release_mounts(ctx, cid, specs, remove_anonymous=True)
    assert not any(store.exists(s.source) for s in anon)
    assert store.exists("named")


def test_volume_in_use_refused_then_removable(ctx: Ctx) -> None:
    store = VolumeStore(ctx.paths)
    specs = [parse_volume_flag("busy:/b")]
    cid = _container(ctx, "user", specs)
    specs = prepare_mounts(ctx, cid, specs, {})
    with pytest.raises(VolumeInUse, match=cid):
        store.remove("busy")
    assert main(["--root", str(ctx.paths.root), "volume", "rm", "busy"]) == 1  # as docker exits
    release_mounts(ctx, cid, specs, remove_anonymous=True)
    (ctx.paths.containers / cid / "config.json").unlink()  # the container is gone
    store.remove("busy")
    with pytest.raises(VolumeNotFound):
        store.get("busy")


def test_bind_sources(ctx: Ctx, tmp_path: Path) -> None:
    cid = _container(ctx, "binds", [])
    created = tmp_path / "made" / "by" / "v"
    [spec] = prepare_mounts(ctx, cid, [parse_volume_flag(f"{created}:/x:ro")], {})
    assert created.is_dir() and spec.host_path == str(created) and spec.read_only
    missing = tmp_path / "missing"
    with pytest.raises(BindSourceMissing, match="does not exist"):
        prepare_mounts(ctx, cid, [parse_mount_flag(f"type=bind,source={missing},target=/y")], {})
    assert not missing.exists()


def test_failure_leaves_no_new_volume(ctx: Ctx, tmp_path: Path) -> None:
    cid = _container(ctx, "fails", [])
    bad = parse_mount_flag(f"type=bind,source={tmp_path / 'nope'},target=/y")
    with pytest.raises(BindSourceMissing):
        prepare_mounts(ctx, cid, [parse_volume_flag("fresh:/f"), bad], {})
    assert not VolumeStore(ctx.paths).exists("fresh")


def test_volumes_from_shares_binds_and_volumes(ctx: Ctx, tmp_path: Path) -> None:
    first = _container(ctx, "source", [])
    specs = prepare_mounts(ctx, first, [parse_volume_flag("shared:/s"), parse_volume_flag(f"{tmp_path}:/h"),
                                        parse_volume_flag("/anon")], {})
    (ctx.paths.containers / first / "config.json").write_text(
        json.dumps({"id": first, "name": "source", "mounts": [asdict(s) for s in specs]}))
    (ctx.paths.containers / first / "config.json").read_text()
    borrowed = volumes_from(ctx, "source:ro")
    assert sorted(m.target for m in borrowed) == ["/anon", "/h", "/s"]
    assert all(m.read_only for m in borrowed)
    second = _container(ctx, "borrower", borrowed)
    prepared = prepare_mounts(ctx, second, borrowed, {})
    assert {m.host_path for m in prepared} == {s.host_path for s in specs}
    anon = next(s.source for s in specs if s.anonymous)
    release_mounts(ctx, first, specs, remove_anonymous=True)
    assert VolumeStore(ctx.paths).exists(anon), "still used by the --volumes-from container"


def test_volume_cli_lifecycle(ctx: Ctx, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(ctx.paths.root)]
    assert main([*root, "volume", "create", "--label", "team=net", "cli-vol"]) == 0
    assert main([*root, "volume", "create"]) == 0
    anon_name = capsys.readouterr().out.split()[-1]
    assert main([*root, "volume", "ls", "-q"]) == 0
    assert sorted(capsys.readouterr().out.split()) == sorted(["cli-vol", anon_name])
    assert main([*root, "volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Labels.team}}", "cli-vol"]) == 0
    assert capsys.readouterr().out.strip() == "cli-vol local net"
    assert main([*root, "volume", "inspect", "nope"]) == 1
    assert "no such volume: nope" in capsys.readouterr().err
    assert main([*root, "volume", "ls", "-q", "--filter", "label=team=net"]) == 0
    assert capsys.readouterr().out.split() == ["cli-vol"]
    assert main([*root, "volume", "prune", "-f", "-a"]) == 0
    assert "cli-vol" in capsys.readouterr().out
    assert main([*root, "volume", "ls", "-q"]) == 0
    assert capsys.readouterr().out.split() == []
    assert main([*root, "volume", "rm", "cli-vol"]) == 1


def test_bind_of_a_volume_directory_counts_as_use(ctx: Ctx) -> None:
    """``--volumes-from`` done as a bind of the volume's ``_data`` still keeps the volume in use."""
    owner = _container(ctx, "owner", [])
    [spec] = prepare_mounts(ctx, owner, [parse_volume_flag("handed:/h")], {})
    borrower = _container(ctx, "borrower", [MountSpec(type="bind", source=spec.host_path, target="/h",
                                                      host_path=spec.host_path)])
    release_mounts(ctx, owner, [spec], remove_anonymous=True)
    (ctx.paths.containers / owner / "config.json").unlink()
    with pytest.raises(VolumeInUse, match=borrower):
        VolumeStore(ctx.paths).remove("handed")
