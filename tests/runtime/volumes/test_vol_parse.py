"""The -v / --mount / --tmpfs parsers against docker's accepted and refused forms."""

from __future__ import annotations

import pytest

from runtime.errors import UsageError
from runtime.spec import MountSpec
from runtime.volumes import parse_mount_flag, parse_tmpfs_flag, parse_volume_flag


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/host/dir:/data", MountSpec(type="bind", source="/host/dir", target="/data",
                                      options={"create_host_path": "true"})),
        ("/host/dir:/data:ro", MountSpec(type="bind", source="/host/dir", target="/data", read_only=True,
                                         options={"create_host_path": "true"})),
        ("/h:/d:rw,rslave", MountSpec(type="bind", source="/h", target="/d",
                                      options={"create_host_path": "true", "propagation": "rslave"})),
        ("cache:/var/cache", MountSpec(type="volume", source="cache", target="/var/cache")),
        ("cache:/var/cache:ro,nocopy", MountSpec(type="volume", source="cache", target="/var/cache",
                                                 read_only=True, options={"nocopy": "true"})),
        ("/anon", MountSpec(type="volume", target="/anon", anonymous=True)),
        ("/anon:ro", MountSpec(type="volume", target="/anon", anonymous=True, read_only=True)),
    ],
)
def test_volume_flag(value: str, expected: MountSpec) -> None:
    assert parse_volume_flag(value) == expected


def test_volume_flag_relative_bind_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert parse_volume_flag("./data:/d").source == f"{tmp_path}/data"


@pytest.mark.parametrize("value", ["", "rel/path:/d", "/h:relative", "/h:/", "/h:/d:bogus", "/h:/d:ro,rw",
                                   "a:b:c:d", "bad name:/d", "v:/d:rshared"])
def test_volume_flag_refuses(value: str) -> None:
    with pytest.raises(UsageError):
        parse_volume_flag(value)


def test_mount_flag_forms() -> None:
    assert parse_mount_flag("type=bind,source=/src,target=/dst,readonly") == MountSpec(
        type="bind", source="/src", target="/dst", read_only=True, options={"create_host_path": "false"})
    assert parse_mount_flag("type=bind,src=/src,dst=/dst,ro=false,bind-propagation=shared") == MountSpec(
        type="bind", source="/src", target="/dst", options={"create_host_path": "false", "propagation": "shared"})
    assert parse_mount_flag("source=data,destination=/data,volume-nocopy") == MountSpec(
        type="volume", source="data", target="/data", options={"nocopy": "true"})
    assert parse_mount_flag("type=volume,target=/x") == MountSpec(type="volume", target="/x", anonymous=True)
    assert parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=65536,tmpfs-mode=1770") == MountSpec(
        type="tmpfs", target="/t", options={"size": "65536", "mode": "1770"})


@pytest.mark.parametrize("value", ["type=bind,target=/x", "type=nfs,target=/x", "type=volume,source=v",
                                   "type=tmpfs,source=x,target=/t", "type=bind,src=/a,dst=/b,color=red",
                                   "type=bind,src=/a,dst=/b,readonly=maybe"])
def test_mount_flag_refuses(value: str) -> None:
    with pytest.raises(UsageError):
        parse_mount_flag(value)


def test_tmpfs_flag() -> None:
    assert parse_tmpfs_flag("/run") == MountSpec(type="tmpfs", target="/run")
    assert parse_tmpfs_flag("/t:size=64m,mode=1777,noexec,ro") == MountSpec(
        type="tmpfs", target="/t", read_only=True, options={"size": "64m", "mode": "1777", "noexec": ""})
    with pytest.raises(UsageError):
        parse_tmpfs_flag("relative")
