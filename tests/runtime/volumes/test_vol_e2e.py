"""Acceptance: volumes through ``refrt run`` (named, anonymous, bind, tmpfs, --volumes-from, in-use refusal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.network.runner import Refrt, unique

pytestmark = pytest.mark.slow  # each case drives several refrt processes (seconds on a loaded host)


def test_named_volume_outlives_its_writer(refrt: Refrt) -> None:
    vol = unique("keep")
    refrt("run", "--rm", "--network", "none", "-v", f"{vol}:/data", "busybox", "sh", "-c",
          "echo persisted > /data/note", check=True)
    got = refrt("run", "--rm", "--network", "none", "-v", f"{vol}:/data", "busybox", "cat", "/data/note",
                check=True)
    assert got.stdout == "persisted\n"
    assert vol in refrt("volume", "ls", "-q", check=True).stdout.split()
    refrt("volume", "rm", vol, check=True)


def test_bind_mount_read_only_refuses_writes(refrt: Refrt, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    got = refrt("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/mnt:ro", "busybox", "sh", "-c",
                "cat /mnt/in.txt; echo x > /mnt/new 2>/dev/null && echo WROTE || echo REFUSED")
    assert got.stdout.split("\n")[:2] == ["from the host", "REFUSED"]
    assert not (tmp_path / "new").exists()
    rw = refrt("run", "--rm", "--network", "none", "--mount", f"type=bind,source={tmp_path},target=/mnt",
               "busybox", "sh", "-c", "echo back > /mnt/out.txt", check=True)
    assert rw.returncode == 0 and (tmp_path / "out.txt").read_text() == "back\n"


def test_mount_flag_bind_needs_an_existing_source(refrt: Refrt, tmp_path: Path) -> None:
    """docker: ``--mount type=bind`` refuses a missing source, where ``-v`` creates it."""
    missing = refrt("run", "--rm", "--network", "none", "--mount",
                    f"type=bind,source={tmp_path / 'absent'},target=/mnt", "busybox", "true")
    assert missing.returncode == 125 and "does not exist" in missing.stderr
    assert not (tmp_path / "absent").exists()
    made = refrt("run", "--rm", "--network", "none", "-v", f"{tmp_path / 'made'}:/mnt", "busybox", "true")
    assert made.returncode == 0 and (tmp_path / "made").is_dir()


def test_volume_in_use_cannot_be_removed_and_anonymous_goes_with_rm_v(refrt: Refrt) -> None:
    vol, name = unique("busy"), unique("holder")
    refrt("run", "--name", name, "--network", "none", "-v", f"{vol}:/data", "-v", "/scratch", "busybox",
          "sh", "-c", "echo hi > /scratch/f", check=True)
    mounts = refrt.inspect(name)["Mounts"]
    anon = next(m["Name"] for m in mounts if m["Destination"] == "/scratch")
    refused = refrt("volume", "rm", vol)
    assert refused.returncode != 0 and "in use" in refused.stderr
    refrt("rm", "-v", name, check=True)
    names = refrt("volume", "ls", "-q", check=True).stdout.split()
    assert vol in names and anon not in names
    refrt("volume", "rm", vol, check=True)


def test_volumes_from_and_tmpfs(refrt: Refrt) -> None:
    vol, first = unique("shared"), unique("first")
    refrt("run", "--name", first, "--network", "none", "-v", f"{vol}:/shared", "busybox", "sh", "-c",
          "echo shared-data > /shared/x", check=True)
    try:
        got = refrt("run", "--rm", "--network", "none", "--volumes-from", first, "--tmpfs", "/fast:size=1m",
                    "busybox", "sh", "-c", "cat /shared/x; grep ' /fast ' /proc/mounts", check=True)
        lines = got.stdout.splitlines()
        assert lines[0] == "shared-data"
        assert lines[1].startswith("tmpfs /fast tmpfs")
        data = json.loads(refrt("volume", "inspect", vol, check=True).stdout)[0]
        assert Path(data["Mountpoint"], "x").read_text() == "shared-data\n"
    finally:
        refrt("rm", "-v", first, check=True)
    refrt("volume", "rm", vol, check=True)


def test_image_volume_populated_from_the_image(refrt: Refrt, tmp_path: Path) -> None:
    """An image VOLUME gets an anonymous volume filled with the image's content there; a named volume mounted
    on it is filled on first use only."""
    tag, vol = unique("volimg"), unique("seeded")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir /data && echo from-image > /data/seed\nVOLUME /data\n")
    refrt("build", "-t", tag, str(tmp_path), check=True)
    try:
        got = refrt("run", "--rm", "--network", "none", tag, "cat", "/data/seed", check=True)
        assert got.stdout == "from-image\n"
        refrt("run", "--rm", "--network", "none", "-v", f"{vol}:/data", tag, "sh", "-c",
              "cat /data/seed && echo changed > /data/seed", check=True)
        again = refrt("run", "--rm", "--network", "none", "-v", f"{vol}:/data", tag, "cat", "/data/seed",
                      check=True)
        assert again.stdout == "changed\n"
    finally:
        refrt("volume", "rm", "-f", vol)
        refrt("rmi", "-f", tag)
