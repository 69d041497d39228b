"""The image recipe and cache key, and reading the host's apt sources (the mirror is never hard-coded)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from vm import image
from vm.errors import ImageBuildError
from vm.image import Recipe, host_apt_sources, image_dir


def test_recipe_key_is_stable_and_changes_with_the_recipe() -> None:
    assert Recipe().key() == Recipe().key()
    assert replace(Recipe(), packages=(*Recipe().packages, "strace")).key() != Recipe().key()
    assert replace(Recipe(), disk_size_mb=8192).key() != Recipe().key()


def test_cache_dir_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFORMANCE_VM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert image_dir(Recipe()) == tmp_path / "conformance" / "vm" / "images" / Recipe().key()
    assert image.load_image() is None


def _apt_dir(tmp_path: Path) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n\n"
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.test/debian\nSuites: bookworm\nComponents: main\n"
    )
    (apt / "sources.list.d" / "other.list").write_text(
        "deb [arch=amd64] http://vendor.test/apt stable main\ndeb http://mirror2.test/debian bookworm-backports main\n"
    )
    (apt / "sources.list.d" / "disabled.sources.disabled").write_text("Types: deb\nURIs: http://x\nSuites: bookworm\n")
    return apt


def test_host_sources_deb822_and_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFORMANCE_VM_MIRROR", raising=False)
    monkeypatch.setattr(image, "host_codename", lambda: "bookworm")
    lines = host_apt_sources("bookworm", _apt_dir(tmp_path))
    assert lines == [
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.test/debian bookworm main",
        "deb [signed-by=/usr/share/keyrings/k.gpg] http://mirror.test/debian bookworm-updates main",
        "deb http://mirror.test/debian-security bookworm-security main",
    ]


def test_host_on_another_release_lends_its_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFORMANCE_VM_MIRROR", raising=False)
    monkeypatch.setattr(image, "host_codename", lambda: "trixie")
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("deb http://m.test/debian trixie main\n")
    assert host_apt_sources("bookworm", apt) == ["deb http://m.test/debian bookworm main"]


def test_no_usable_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONFORMANCE_VM_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    with pytest.raises(ImageBuildError, match="CONFORMANCE_VM_MIRROR"):
        host_apt_sources("bookworm", apt)
    monkeypatch.setenv("CONFORMANCE_VM_MIRROR", "http://override.test/debian")
    assert host_apt_sources("bookworm", apt) == ["deb http://override.test/debian bookworm main"]


@pytest.mark.vm
@pytest.mark.slow
def test_the_built_image_has_what_vms_need() -> None:
    built = image.ensure_image()
    for path in (built.disk, built.kernel, built.initrd, built.ssh_key.private, built.ssh_key.public):
        assert path.stat().st_size > 0
    assert built.initrd.stat().st_size < 4 * 1024 * 1024  # the tiny initrd, not Debian's 29 MB one
    assert built.ssh_key.private.stat().st_mode & 0o077 == 0
    assert image.load_image() == built
