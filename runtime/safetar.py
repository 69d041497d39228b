"""Safe tar extraction on every Python refrt runs on.

Python 3.11.4 added extraction filters (``tarfile.data_filter``, ``tar_filter``, ``extractall(filter=...)``); the
guests' Python (Debian bookworm's 3.11.2, which bullseye guests borrow) has none of them, so a plain
``extractall(dest, filter="tar")`` dies there with a TypeError. This module is the one place that extracts an
archive the user or a container handed us: on a Python with filters it uses the standard library's; on an older
one it applies the same rules itself (:func:`_fallback_check`), member by member, before the old ``extract``
writes anything. Both paths refuse the same members, with exceptions of the same names (the standard library's, or
this module's), all :class:`tarfile.TarError`: callers catch that.
"""

from __future__ import annotations

import copy
import os
import tarfile
from collections.abc import Callable
from typing import Literal

Policy = Literal["tar", "data"]
Check = Callable[[tarfile.TarInfo, str], tarfile.TarInfo]

HAS_FILTERS = hasattr(tarfile, "data_filter")


class FilterError(tarfile.TarError):
    """A member the policy refuses, raised by the fallback and the extra checks. The standard library's filters
    raise its own classes of the same names: callers catch :class:`tarfile.TarError`, which covers both."""

    def __init__(self, member: tarfile.TarInfo, message: str) -> None:
        super().__init__(message)
        self.tarinfo = member


class AbsolutePathError(FilterError):
    def __init__(self, member: tarfile.TarInfo) -> None:
        super().__init__(member, f"member {member.name!r} has an absolute path")


class OutsideDestinationError(FilterError):
    def __init__(self, member: tarfile.TarInfo, path: str) -> None:
        super().__init__(member, f"{member.name!r} would be extracted to {path!r}, outside the destination")


class SpecialFileError(FilterError):
    def __init__(self, member: tarfile.TarInfo) -> None:
        super().__init__(member, f"{member.name!r} is a special file")


class AbsoluteLinkError(FilterError):
    def __init__(self, member: tarfile.TarInfo) -> None:
        super().__init__(member, f"{member.name!r} is a link to an absolute path")


class LinkOutsideDestinationError(FilterError):
    def __init__(self, member: tarfile.TarInfo, path: str) -> None:
        super().__init__(member, f"{member.name!r} would link to {path!r}, outside the destination")


def _fallback_check(member: tarfile.TarInfo, dest: str, data: bool) -> tarfile.TarInfo:
    """The standard library's ``tar_filter`` (``data=False``) or ``data_filter`` rules, for an old ``tarfile``:
    leading slashes stripped; refused if the name (after the symlinks already on disk) lands outside ``dest``;
    setuid/setgid/sticky and group/other write bits cleared. ``data`` also refuses device nodes and FIFOs and links
    that are absolute or point outside ``dest``, makes regular files owner-readable/writable, and leaves ownership
    and directory modes to the extracting user (concrete values here, since an old ``extract`` cannot take None)."""
    dest = os.path.realpath(dest)
    name = member.name
    new = copy.copy(member)
    if name.startswith("/"):
        name = new.name = name.lstrip("/")
    if os.path.isabs(name):
        raise AbsolutePathError(member)
    target = os.path.realpath(os.path.join(dest, name))
    if os.path.commonpath([target, dest]) != dest:
        raise OutsideDestinationError(member, target)
    mode = member.mode & 0o755
    if data:
        if member.isreg() or member.islnk():
            if not mode & 0o100:
                mode &= ~0o111
            mode |= 0o600
        elif member.isdir():
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o777 & ~umask  # what a plain mkdir gives: the standard library skips chmod here
        elif member.issym():
            mode = member.mode  # never applied to a symlink
        else:
            raise SpecialFileError(member)
        new.uid, new.gid = os.geteuid(), os.getegid()
        new.uname = new.gname = ""  # an old chown looks names up first; empty means "use the ids"
        if member.islnk() or member.issym():
            if os.path.isabs(member.linkname):
                raise AbsoluteLinkError(member)
            base = os.path.join(dest, os.path.dirname(name)) if member.issym() else dest
            link_target = os.path.realpath(os.path.join(base, member.linkname))
            if os.path.commonpath([link_target, dest]) != dest:
                raise LinkOutsideDestinationError(member, link_target)
    new.mode = mode
    return new


def policy_check(policy: Policy, force_fallback: bool = False) -> Check:
    """The per-member check for ``policy``: the standard library's filter when it has one (and the fallback is
    not forced, as tests do to exercise it on a new Python), else :func:`_fallback_check`."""
    if HAS_FILTERS and not force_fallback:
        return tarfile.data_filter if policy == "data" else tarfile.tar_filter
    data = policy == "data"
    return lambda member, dest: _fallback_check(member, dest, data)


def check_hard_link_inside(member: tarfile.TarInfo, dest: str) -> None:
    """Refuse a hard link whose target is outside ``dest`` (through an absolute name, ``..`` or a symlink already
    extracted): the ``tar`` policy lets those through, which matters where root extracts for someone else."""
    if not member.islnk():
        return
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, member.linkname))
    if os.path.isabs(member.linkname) or os.path.commonpath([root, target]) != root:
        raise LinkOutsideDestinationError(member, target)


def refuse_devices(member: tarfile.TarInfo) -> None:
    """Refuse character and block device nodes (the ``tar`` policy lets them through)."""
    if member.ischr() or member.isblk():
        raise SpecialFileError(member)


def _combined(check: Check, extra: Callable[[tarfile.TarInfo, str], None] | None) -> Check:
    def run(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        checked = check(member, dest)
        if extra is not None:
            extra(checked, dest)
        return checked

    return run


def extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    dest: str | os.PathLike[str],
    policy: Policy = "tar",
    extra: Callable[[tarfile.TarInfo, str], None] | None = None,
    force_fallback: bool = False,
) -> None:
    """``tar.extract(member, dest, filter=policy)`` on every Python, with ``extra`` checks (which raise to refuse
    a member) after the policy's. Refused members raise :class:`FilterError`."""
    path = os.fspath(dest)
    check = _combined(policy_check(policy, force_fallback), extra)
    if HAS_FILTERS and not force_fallback:
        tar.extract(member, path, filter=check)
    else:
        tar.extract(check(member, path), path)


def extract_all(
    tar: tarfile.TarFile,
    dest: str | os.PathLike[str],
    policy: Policy = "tar",
    extra: Callable[[tarfile.TarInfo, str], None] | None = None,
    force_fallback: bool = False,
) -> None:
    """``tar.extractall(dest, filter=policy)`` on every Python, with ``extra`` checks after the policy's.
    Works on streams (``r|``): members are checked and written one at a time, in archive order, so the checks of
    a member see the symlinks extracted before it. As ``extractall`` does, directories get their owner, times and
    mode last, so a read-only directory does not block its own contents."""
    path = os.fspath(dest)
    check = _combined(policy_check(policy, force_fallback), extra)
    if HAS_FILTERS and not force_fallback:
        tar.extractall(path, filter=check)
        return
    directories: list[tarfile.TarInfo] = []
    for member in tar:
        checked = check(member, path)
        if checked.isdir():
            directories.append(checked)
        tar.extract(checked, path, set_attrs=not checked.isdir())
    directories.sort(key=lambda m: m.name, reverse=True)
    for directory in directories:
        target = os.path.join(path, directory.name)
        try:
            tar.chown(directory, target, False)
            tar.utime(directory, target)
            tar.chmod(directory, target)
        except tarfile.ExtractError:
            if tar.errorlevel > 1:
                raise
