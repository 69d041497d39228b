"""A truncated archive is refused by ``import`` and ``load``, and the store is left exactly as it was.

tarfile ends its member list quietly when the data stops where a header should be, or in the middle of one; the
store checks that an archive ends with its end-of-archive block and that every member's data is all there. The
cuts: inside a member's data, on a header boundary, inside a header, between the last member and the end blocks -
plain, and gzip-compressed (a complete gzip stream of a cut tar).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.store.errors import BadLayer
from runtime.store.layers import end_blocks_required, unpack_stream

Listing = Callable[[Path], list[tuple[str, int]]]


class Refrt:
    """``refrt --root ROOT ...`` in-process, output captured."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.capsys = root, capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--root", str(self.root), "--no-daemon", *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def refrt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Refrt:
    r = Refrt(tmp_path / "root", capsys)
    assert r("image", "bootstrap", "busybox")[0] == 0
    return r


def _rootfs_tar(files: int = 200) -> tuple[bytes, list[tarfile.TarInfo]]:
    """A root file system of ``files`` files (sizes 0..3 KiB) in a few directories, and its members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in range(4):
            info = tarfile.TarInfo(f"dir{d}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for i in range(files):
            data = os.urandom((i * 37) % 3000)
            info = tarfile.TarInfo(f"dir{i % 4}/file{i}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    return raw, members


def _cuts(raw: bytes, members: list[tarfile.TarInfo]) -> dict[str, int]:
    """Where to cut: in the data of a middle member, on the next header, inside it, and before the end blocks."""
    middle = next(m for m in members[len(members) // 2 :] if m.size > 1024)
    after = members[members.index(middle) + 1]
    last = members[-1]
    end_of_data = last.offset_data + -(-last.size // 512) * 512
    return {
        "in-member": middle.offset_data + middle.size // 2,
        "header-boundary": after.offset,
        "in-header": after.offset + 100,
        "before-end-blocks": end_of_data,
    }


def _snapshot(refrt: Refrt, store_listing: Listing) -> tuple[str, list[tuple[str, int]]]:
    code, out, _ = refrt("images", "--digests", "--no-trunc")
    assert code == 0
    return out, store_listing(refrt.root)


def test_complete_archive_imports(refrt: Refrt, tmp_path: Path) -> None:
    raw, _ = _rootfs_tar()
    path = tmp_path / "whole.tar"
    path.write_bytes(raw)
    code, _, err = refrt("import", str(path), "whole:1")
    assert code == 0, err
    assert "whole" in refrt("images")[1]


@pytest.mark.parametrize("gzip_it", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("where", ["in-member", "header-boundary", "in-header", "before-end-blocks"])
def test_truncated_import_is_refused_and_store_unchanged(
    where: str, gzip_it: bool, refrt: Refrt, tmp_path: Path, store_listing: Listing
) -> None:
    raw, members = _rootfs_tar()
    cut = raw[: _cuts(raw, members)[where]]
    path = tmp_path / "cut.tar"
    path.write_bytes(gzip.compress(cut) if gzip_it else cut)
    before = _snapshot(refrt, store_listing)
    code, out, err = refrt("import", str(path), "cut:1")
    assert code == 125, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "truncated" in err or "unexpected end of data" in err, err
    assert _snapshot(refrt, store_listing) == before


def _saved(refrt: Refrt, tmp_path: Path) -> tuple[bytes, list[tarfile.TarInfo]]:
    path = tmp_path / "saved.tar"
    code, _, err = refrt("save", "-o", str(path), "busybox")
    assert code == 0, err
    raw = path.read_bytes()
    path.unlink()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return raw, tf.getmembers()


@pytest.mark.parametrize("where", ["in-layer", "header-boundary", "in-header", "before-end-blocks"])
def test_truncated_load_is_refused_and_store_unchanged(
    where: str, refrt: Refrt, tmp_path: Path, store_listing: Listing
) -> None:
    raw, members = _saved(refrt, tmp_path)
    assert refrt("rmi", "busybox")[0] == 0
    layer = max(members, key=lambda m: m.size)
    following = members[members.index(layer) + 1]
    last = members[-1]
    offsets = {
        "in-layer": layer.offset_data + layer.size // 2,
        "header-boundary": following.offset,
        "in-header": following.offset + 200,
        "before-end-blocks": last.offset_data + -(-last.size // 512) * 512,
    }
    path = tmp_path / "cut.tar"
    path.write_bytes(raw[: offsets[where]])
    before = _snapshot(refrt, store_listing)
    code, out, err = refrt("load", "-i", str(path))
    assert code != 0, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "truncated" in err, err
    assert _snapshot(refrt, store_listing) == before
    # The whole archive still loads: the refusal was about the cut, nothing else.
    path.write_bytes(raw)
    code, out, err = refrt("load", "-i", str(path))
    assert code == 0 and "Loaded image: busybox:latest" in out, err


def test_layer_tar_ends_checked(tmp_path: Path) -> None:
    """A layer that digests vouch for may end on a header boundary (Go's writers, umoci's layers, as docker
    accepts); under ``end_blocks_required`` (import) it may not; a header cut in two is refused either way."""
    raw, members = _rootfs_tar(files=20)
    boundary, inside = raw[: members[10].offset], raw[: members[10].offset + 100]
    unpack_stream(io.BytesIO(boundary), tmp_path / "tolerated")
    with end_blocks_required(), pytest.raises(BadLayer, match="truncated: it ends after 10 members without"):
        unpack_stream(io.BytesIO(boundary), tmp_path / "strict")
    with pytest.raises(BadLayer, match="truncated: it ends inside the header"):
        unpack_stream(io.BytesIO(inside), tmp_path / "cut")
