"""Mount options: docker's spellings are accepted, every misspelling is refused with exit 125 and one line naming
it, and nothing is created on the way (no container directory, no volume, no bind source).

A misspelled read-only option that were silently ignored would give a writable mount: the CLI has one strict
parser (runtime.volumes.parse) for -v, --mount, --tmpfs and --volumes-from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.spec import MountSpec
from runtime.volumes.errors import BadMountSpec
from runtime.volumes.parse import parse_mount_flag, parse_tmpfs_flag, parse_volume_flag, parse_volumes_from_flag
from tests.runtime.network.runner import Refrt, unique

ACCEPTED_VOLUME = [
    ("/h:/d:ro", True, {}), ("/h:/d:rw", False, {}), ("/h:/d:z", False, {"selinux": "z"}),
    ("/h:/d:Z", False, {"selinux": "Z"}), ("/h:/d:ro,Z", True, {"selinux": "Z"}),
    *[(f"/h:/d:{p}", False, {"propagation": p}) for p in ("private", "rprivate", "shared", "rshared", "slave",
                                                            "rslave")],
    ("/h:/d:cached", False, {}), ("vol:/d:nocopy", False, {"nocopy": "true"}),
    ("vol:/d:ro,nocopy", True, {"nocopy": "true"}),
]


@pytest.mark.parametrize(("value", "read_only", "options"), ACCEPTED_VOLUME)
def test_volume_flag_accepts_docker_spellings(value: str, read_only: bool, options: dict[str, str]) -> None:
    spec = parse_volume_flag(value)
    assert spec.read_only is read_only
    assert {k: v for k, v in spec.options.items() if k != "create_host_path"} == options


@pytest.mark.parametrize(("value", "read_only"), [
    ("type=bind,src=/a,dst=/b,readonly", True), ("type=bind,src=/a,dst=/b,ro", True),
    ("type=bind,src=/a,dst=/b,readonly=true", True), ("type=bind,src=/a,dst=/b,readonly=1", True),
    ("type=bind,src=/a,dst=/b,ro=TRUE", True), ("type=bind,src=/a,dst=/b,readonly=false", False),
    ("type=bind,src=/a,dst=/b,ro=0", False), ("type=bind,src=/a,dst=/b,READONLY=f", False),
    ("type=volume,src=vol,dst=/b,readonly,volume-nocopy=true", True),
    ("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1777,readonly", True),
])
def test_mount_flag_accepts_docker_spellings(value: str, read_only: bool) -> None:
    assert parse_mount_flag(value).read_only is read_only


def test_tmpfs_and_volumes_from_accept_docker_spellings() -> None:
    assert parse_tmpfs_flag("/t:ro,size=64m,mode=1777,noexec,nosuid,nodev,uid=1,gid=2") == MountSpec(
        type="tmpfs", target="/t", read_only=True,
        options={"size": "64m", "mode": "1777", "noexec": "", "nosuid": "", "nodev": "", "uid": "1", "gid": "2"})
    assert parse_volumes_from_flag("web") == ("web", "")
    assert parse_volumes_from_flag("web:ro") == ("web", "ro")
    assert parse_volumes_from_flag("web:rw") == ("web", "rw")


#: (flag, value, the word the one-line error must name)
MISTYPED = [
    ("-v", "{src}:/m:RO", "RO"), ("-v", "{src}:/m:r0", "r0"), ("-v", "{src}:/m:readonly", "readonly"),
    ("-v", "{src}:/m:zz", "zz"), ("-v", "{src}:/m:ro,rw", "ro,rw"), ("-v", "{src}:/m:z,Z", "z,Z"),
    ("-v", "{src}:/m:rshared,rslave", "rshared,rslave"), ("-v", "{vol}:/m:ro,", "''"),
    ("-v", "{vol}:/m:rprivate", "rprivate"), ("-v", "{src}:/m:nocopy", "nocopy"),
    ("--mount", "type=bind,src={src},dst=/m,readonly=fals", "readonly"),
    ("--mount", "type=bind,src={src},dst=/m,rdonly", "rdonly"),
    ("--mount", "type=bind,src={src},dst=/m,read-only", "read-only"),
    ("--mount", "type=bind,src={src},dst=/m,ro=yes", "ro"),
    ("--mount", "type=bind,src={src},dst=/m,bind-propagation=rsharedd", "rsharedd"),
    ("--mount", "type=volume,src={vol},dst=/m,volume-nocopy=maybe", "volume-nocopy"),
    ("--mount", "type=volume,src={vol},dst=/m,bind-propagation=shared", "bind-propagation"),
    ("--mount", "type=bind,src={src},dst=/m,,readonly", "''"),
    ("--tmpfs", "/t:size=1m,noexecc", "noexecc"), ("--tmpfs", "/t:RO", "RO"), ("--tmpfs", "/t:size", "size"),
    ("--volumes-from", "{name}-other:RO", "RO"), ("--volumes-from", "{name}-other:readonly", "readonly"),
]


@pytest.mark.parametrize(("flag", "value", "named"), MISTYPED)
def test_mistyped_option_exits_125_and_creates_nothing(refrt: Refrt, tmp_path: Path, flag: str, value: str,
                                                       named: str) -> None:
    name = unique("mistyped")
    src = tmp_path / "missing-source"
    rendered = value.format(src=src, vol=f"{name}-vol", name=name)
    before = sorted(os.listdir(refrt.root / "containers")) if (refrt.root / "containers").is_dir() else []
    result = refrt("run", "--rm", "--name", name, flag, rendered, "busybox", "true")
    assert result.returncode == 125, (rendered, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], (rendered, lines)
    after = sorted(os.listdir(refrt.root / "containers")) if (refrt.root / "containers").is_dir() else []
    assert after == before, "no container directory may be created"
    assert f"{name}-vol" not in refrt("volume", "ls", "-q").stdout, "no volume may be created"
    assert not src.exists(), "no bind source may be created"
    assert name not in refrt("ps", "-a", "--no-trunc").stdout


def test_bad_mount_spec_is_a_usage_error() -> None:
    with pytest.raises(BadMountSpec) as info:
        parse_volume_flag("/h:/d:RO")
    assert info.value.exit_code == 125


def test_tmpfs_flags_become_mount_flags(refrt: Refrt) -> None:
    """mount(8) flags of --tmpfs are flag bits: tmpfs refuses them as data (EINVAL)."""
    result = refrt("run", "--rm", "--tmpfs", "/t:noexec,size=1m,mode=1777", "--tmpfs", "/r:ro,exec", "busybox",
                   "sh", "-c", "grep -E ' /(t|r) ' /proc/mounts; stat -c %a /t")
    assert result.returncode == 0, result.stderr
    t_line, r_line, mode = result.stdout.strip().splitlines()
    assert t_line.split()[3].split(",")[:1] == ["rw"] and "noexec" in t_line and "size=1024k" in t_line
    assert r_line.split()[3].startswith("ro,") and "noexec" not in r_line
    assert mode == "1777"
