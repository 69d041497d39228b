"""Mount and unmount the overlay that is a container's root file system.

The kernel copies mount options into one page, so ``lowerdir=a:b:c...`` with long absolute paths stops fitting at
a few dozen layers. When the absolute form is too long, the lower dirs are reached through a throw-away directory
of one-to-three-character symlinks and the mount is made from inside it with relative names (overlayfs resolves
lowerdir paths, symlinks included, at mount time, so the links can go right after). What still cannot be mounted
(more lower dirs than overlayfs stacks, or options still over a page) is refused with :class:`TooManyLayers`
before anything is mounted: never a half-made or wrong mount.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runtime import syscalls
from runtime.store.errors import StoreError, TooManyLayers

MAX_IMAGE_LAYERS = 125
"""The deepest image refrt loads, runs or builds on: docker 20.10's overlay2 limit, measured on this machine
(tests/runtime/cli/test_layer_limit.py): 125 layers load and run, a 126th is refused at ``load`` with "max depth
exceeded". overlayfs itself would stack up to 500 lower dirs (OVL_MAX_STACK); docker's 128-deep chain holds the
image layers plus its init and container layers, hence 125 (docs/cli.md)."""
MAX_LOWER_LAYERS = MAX_IMAGE_LAYERS
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MNT_DETACH = 2
EXTRA_OPTIONS = "index=off,redirect_dir=off"
"""Renames of lower directories copy instead of leaving redirect xattrs, so an upper dir diffs into a plain
OCI layer (docker's overlay2 refuses "native diff" with redirect_dir on for the same reason)."""

class MountError(StoreError):
    """mount(2) or umount(2) failed."""


def overlay_options(lower_dirs: Sequence[str], upper: str, work: str) -> str:
    return f"lowerdir={':'.join(lower_dirs)},upperdir={upper},workdir={work},{EXTRA_OPTIONS}"


def _fits(options: str) -> bool:
    return len(options.encode()) < PAGE_SIZE  # the page also holds the terminating NUL


def check_depth(count: int) -> None:
    """docker's refusal of an image deeper than :data:`MAX_IMAGE_LAYERS`, in its words."""
    if count > MAX_IMAGE_LAYERS:
        raise TooManyLayers(f"max depth exceeded: {count} layers, at most {MAX_IMAGE_LAYERS} (as docker's overlay2)")


def _check_count(count: int) -> None:
    check_depth(count)
    if count == 0:
        raise StoreError("an overlay needs at least one lower layer")


def mount_overlay(lower_dirs: Sequence[Path], upper: Path, work: Path, merged: Path) -> None:
    """Mount ``merged`` as overlay of ``lower_dirs`` (top first) with ``upper``/``work``; the dirs must exist.

    Raises :class:`TooManyLayers` (nothing mounted) when the layers cannot be stacked in one mount. With more
    layers than fit a page by absolute path, the process briefly changes its working directory: call it from one
    thread only (refrt's CLI and monitors are single-threaded)."""
    _check_count(len(lower_dirs))
    lowers = [str(Path(p).absolute()) for p in lower_dirs]
    up, wk, target = str(Path(upper).absolute()), str(Path(work).absolute()), str(Path(merged).absolute())
    options = overlay_options(lowers, up, wk)
    if _fits(options):
        _mount_with_fallback(target, lowers, up, wk)
        return
    short = [str(i) for i in range(len(lowers))]
    if not _fits(overlay_options(short, up, wk)):
        raise TooManyLayers(
            f"{len(lowers)} layers do not fit in the {PAGE_SIZE}-byte page the kernel allows for mount options "
            f"(even with short names; upper dir path is {len(up)} characters)"
        )
    farm = tempfile.mkdtemp(prefix=".lower-", dir=str(Path(target).parent))
    saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, path in zip(short, lowers, strict=True):
            os.symlink(path, os.path.join(farm, name))
        os.chdir(farm)
        _mount_with_fallback(target, short, up, wk)
    finally:
        os.fchdir(saved)
        os.close(saved)
        shutil.rmtree(farm, ignore_errors=True)


def _mount_with_fallback(target: str, lowers: list[str], upper: str, work: str) -> None:
    options = overlay_options(lowers, upper, work)
    try:
        syscalls.mount("overlay", target, "overlay", 0, options)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise MountError(f"cannot mount overlay on {target}: {os.strerror(exc.errno or 0)}") from None
        plain = options[: -len("," + EXTRA_OPTIONS)]  # an older kernel without these options
        try:
            syscalls.mount("overlay", target, "overlay", 0, plain)
        except OSError as exc2:
            raise MountError(f"cannot mount overlay on {target}: {os.strerror(exc2.errno or 0)}") from None


def unmount(merged: Path) -> None:
    """Unmount ``merged``; lazily if busy; nothing to do if it is not mounted."""
    target = Path(merged).absolute()
    try:
        syscalls.umount2(target, 0)
        return
    except OSError as exc:
        err = exc.errno or 0
    if err in (errno.EINVAL, errno.ENOENT):
        return
    if err == errno.EBUSY:
        with contextlib.suppress(OSError):
            syscalls.umount2(target, MNT_DETACH)
            return
    raise MountError(f"cannot unmount {merged}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point (per /proc/self/mountinfo, exact path match)."""
    target = str(Path(path).absolute())
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
                return True
    return False
