"""The tiny initrd: cpio layout that busybox itself can read, module dependency order, built-ins skipped."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from vm.errors import ImageBuildError
from vm.initrd import INIT_SCRIPT, build_initrd, resolve_modules


def _fake_modules(tmp_path: Path, release: str) -> Path:
    modules = tmp_path / "rootfs" / "lib" / "modules" / release
    (modules / "kernel").mkdir(parents=True)
    dep = {
        "kernel/fs/ext4/ext4.ko": ["kernel/lib/crc16.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/mbcache.ko"],
        "kernel/fs/jbd2/jbd2.ko": [],
        "kernel/fs/mbcache.ko": [],
        "kernel/lib/crc16.ko": [],
        "kernel/drivers/block/virtio_blk.ko": [],
        "kernel/crypto/crc32c_generic.ko.xz": [],
    }
    lines = [f"{mod}: {' '.join(deps)}" for mod, deps in dep.items()]
    (modules / "modules.dep").write_text("\n".join(lines) + "\n")
    (modules / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    import lzma

    for mod in dep:
        path = modules / mod
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = f"ELF {mod}".encode()
        path.write_bytes(lzma.compress(payload) if mod.endswith(".xz") else payload)
    return modules


def test_modules_come_dependencies_first_and_builtins_are_skipped(tmp_path: Path) -> None:
    modules = _fake_modules(tmp_path, "6.1.0-test")
    order = resolve_modules(modules)
    names = [p.rsplit("/", 1)[-1] for p in order]
    assert names.index("jbd2.ko") < names.index("ext4.ko")
    assert names.index("crc16.ko") < names.index("ext4.ko")
    assert "virtio_pci.ko" not in names  # built in
    assert names.count("ext4.ko") == 1


def test_a_missing_required_module_is_a_build_error(tmp_path: Path) -> None:
    modules = _fake_modules(tmp_path, "6.1.0-test")
    (modules / "modules.builtin").write_text("")
    with pytest.raises(ImageBuildError, match="virtio_pci"):
        resolve_modules(modules)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (package busybox-static) reads the archive")
def test_archive_is_a_valid_newc_cpio_with_init_and_decompressed_modules(tmp_path: Path) -> None:
    _fake_modules(tmp_path, "6.1.0-test")
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir()
    shutil.copy(shutil.which("busybox") or "", rootfs / "bin" / "busybox")
    output = tmp_path / "initrd.img"
    names = build_initrd(rootfs, "6.1.0-test", output)
    assert "crc32c_generic.ko" in names
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=gzip.decompress(output.read_bytes()), cwd=extract,
                   check=True, capture_output=True)
    assert (extract / "init").read_text() == INIT_SCRIPT
    assert (extract / "init").stat().st_mode & 0o111
    assert (extract / "bin" / "sh").is_symlink()
    assert (extract / "lib" / "modules" / "crc32c_generic.ko").read_bytes() == b"ELF kernel/crypto/crc32c_generic.ko.xz"
    order = (extract / "modules.order").read_text().split()
    assert order == names and order.index("jbd2.ko") < order.index("ext4.ko")
    listing = subprocess.run(["busybox", "cpio", "-t", "-v"], input=gzip.decompress(output.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    assert any(line.startswith("c") and line.endswith("dev/console") for line in listing.splitlines())
