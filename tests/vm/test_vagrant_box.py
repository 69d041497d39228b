"""A Vagrant box per guest release, replaced when the release's image changes: real ``vagrant box add`` and
``vagrant box remove`` in a VAGRANT_HOME of the test's own, with tiny images (a 1 MiB qcow2 and stand-in kernel
files: adding a box never boots it), so no libvirtd is needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vm.image import BuiltImage
from vm.vagrant import base_volume_prefix, box_name, ensure_box, listed_boxes, remove_stale_boxes, vagrant_env

pytestmark = pytest.mark.skipif(shutil.which("vagrant") is None or shutil.which("qemu-img") is None,
                                reason="vagrant and qemu-img not installed (Debian packages vagrant, qemu-utils)")


def _image(root: Path, key: str) -> BuiltImage:
    directory = root / key
    directory.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "base.qcow2"), "1M"], check=True)
    for name in ("vmlinuz", "initrd.img"):
        (directory / name).write_bytes(b"stand-in\n")
    return BuiltImage(directory=directory, key=key, kernel_release="0.0.0-test")


def test_a_box_per_release_and_a_new_image_replaces_its_release_box(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "vagrant-home"
    monkeypatch.setenv("CONFORMANCE_VAGRANT_HOME", str(home))
    monkeypatch.setenv("CONFORMANCE_VM_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    old, new, trixie = _image(tmp_path, "00aa"), _image(tmp_path, "11bb"), _image(tmp_path, "22cc")

    assert ensure_box(old, "bullseye", lines.append) == box_name("bullseye", "00aa") == "conformance-bullseye-00aa"
    assert ensure_box(trixie, "trixie", lines.append) == "conformance-trixie-22cc"
    assert ensure_box(old, "bullseye", lines.append) == "conformance-bullseye-00aa"
    assert lines[-1] == "box conformance-bullseye-00aa already added"
    env = vagrant_env()
    assert sorted(listed_boxes(env)) == ["conformance-bullseye-00aa", "conformance-trixie-22cc"]

    # vagrant-libvirt's upload of the old box into its pool goes with the box; other releases' volumes stay.
    pool = home / "pool"
    pool.mkdir()
    old_volume = pool / f"{base_volume_prefix('conformance-bullseye-00aa')}0_1796132694_box.img"
    trixie_volume = pool / f"{base_volume_prefix('conformance-trixie-22cc')}0_1796132695_box.img"
    vm_disk = pool / "vagrant-1-abcd-default.img"
    for volume in (old_volume, trixie_volume, vm_disk):
        volume.write_bytes(b"")
    lines.clear()
    assert ensure_box(new, "bullseye", lines.append) == "conformance-bullseye-11bb"
    assert "removed conformance-bullseye-00aa (an older image of bullseye)" in lines
    assert sorted(listed_boxes(env)) == ["conformance-bullseye-11bb", "conformance-trixie-22cc"]
    assert sorted(p.name for p in pool.iterdir()) == sorted([trixie_volume.name, vm_disk.name])
    assert not list(new.directory.glob("*.partial"))

    # `vm clean --images`: every box but the current ones goes.
    assert remove_stale_boxes({"conformance-bullseye-11bb"}) == ["conformance-trixie-22cc", trixie_volume.name]
    assert listed_boxes(env) == ["conformance-bullseye-11bb"]
