"""Filling a new volume with what the image has at the mount point, as docker does on first mount.

The image is given as its unpacked layer directories, top first (overlay ``lowerdir`` order). Layers are applied
bottom-up onto the volume directory, honouring both whiteout forms a layer directory can hold: overlay's (a 0:0
character device, the ``trusted.overlay.opaque`` xattr) and OCI's (``.wh.NAME`` files, ``.wh..wh..opq``).
Symlinks are copied as links, never followed, so an image cannot make refrt copy host files.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


def _is_whiteout_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    if (path / OPAQUE_MARKER).exists():
        return True
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _clear(directory: Path) -> None:
    for entry in list(directory.iterdir()):
        _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _copy_meta(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def _apply_dir(src: Path, dst: Path) -> None:
    """Merge one layer's directory ``src`` into ``dst`` (whiteouts delete, files replace, dirs merge)."""
    if _is_opaque(src):
        _clear(dst)
    for entry in sorted(src.iterdir()):
        name = entry.name
        if name == OPAQUE_MARKER:
            continue
        if name.startswith(WHITEOUT_PREFIX):
            _remove(dst / name[len(WHITEOUT_PREFIX):])
            continue
        st = os.lstat(entry)
        target = dst / name
        if _is_whiteout_device(st):
            _remove(target)
        elif stat.S_ISDIR(st.st_mode):
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                _remove(target)
            target.mkdir(exist_ok=True)
            _apply_dir(entry, target)
            _copy_meta(entry, target)
        elif stat.S_ISLNK(st.st_mode):
            _remove(target)
            os.symlink(os.readlink(entry), target)
            _copy_meta(entry, target)
        elif stat.S_ISREG(st.st_mode):
            _remove(target)
            shutil.copyfile(entry, target, follow_symlinks=False)
            _copy_meta(entry, target)


def _hidden_in(layer: Path, rel_parts: tuple[str, ...]) -> bool:
    """True when this layer deletes the path: whiteout of it or a parent, a parent that is not a directory, or an
    opaque parent that lacks it."""
    cur = layer
    for part in rel_parts:
        if (cur / f"{WHITEOUT_PREFIX}{part}").exists():
            return True
        nxt = cur / part
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            return cur != layer and _is_opaque(cur)  # an opaque parent hides the lower layers' path
        if _is_whiteout_device(st) or not stat.S_ISDIR(st.st_mode):
            return True
        cur = nxt
    return False


def copy_image_path(lower_dirs: list[Path], target: str, dest: Path) -> bool:
    """Copy the merged image content at ``target`` into ``dest``; False when the image has nothing there."""
    rel = tuple(p for p in Path(target).parts if p not in ("/", ""))
    found = False
    for layer in reversed(lower_dirs):  # bottom layer first
        if _hidden_in(layer, rel):
            _clear(dest)
            found = False
            continue
        src = layer.joinpath(*rel)
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        found = True
        _apply_dir(src, dest)
        _copy_meta(src, dest)
    return found
