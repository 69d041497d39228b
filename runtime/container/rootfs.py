"""The container's filesystem, set up step by step inside its new mount namespace.

:func:`setup_rootfs` reads top to bottom in the order runc uses (rootfs_linux.go): make ``/`` a slave so nothing
leaks back to the host, mount the overlay root, the kernel filesystems, a private /dev, the per-container
/etc files and the user's mounts, then pivot_root into it and detach the old root, and only then hide the
dangerous parts of /proc and /sys. Everything is mounted inside the container's own mount namespace, so the
kernel removes every mount when the container's last process exits - nothing to clean up on the host, even after
a crash.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from runtime import syscalls
from runtime.errors import RefrtError
from runtime.spec import MountSpec
from runtime.store.overlay import mount_overlay
from runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
    MS_STRICTATIME,
)
from runtime.volumes.parse import tmpfs_mount_args

#: Docker's default masked paths (moby oci/defaults.go): files get /dev/null bound over them, directories an
#: empty read-only tmpfs.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
#: Docker's default read-only paths.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

#: Character devices every container gets: name -> (major, minor).
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
    "core": "/proc/kcore",
}


class RootfsError(RefrtError):
    """A step of the container's filesystem set-up failed (the message names the step)."""


@dataclass
class RootfsPlan:
    """Everything the set-up needs, resolved on the host before the container's init runs it."""

    lower_dirs: list[Path]  # top first, as overlay wants them
    upper: Path
    work: Path
    merged: Path
    read_only: bool = False
    host_files: dict[str, Path] = field(default_factory=dict)  # /etc/hosts -> containers/<id>/hosts
    mounts: list[MountSpec] = field(default_factory=list)
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    sysfs_writable: bool = False  # --privileged
    userns_fd: int = -1  # --userns=private: lower layers are seen through idmapped mounts
    #: /sys/fs/cgroup: {"": "cgroup2"} on v2 (the container's cgroup namespace shows only its group), else
    #: hierarchy name -> the container's group directory on the host, for each v1 hierarchy
    cgroup_view: dict[str, Path] = field(default_factory=dict)


def setup_rootfs(plan: RootfsPlan) -> None:
    """Build the container's root and make it ``/`` of the calling process (which owns a new mount namespace)."""
    root = plan.merged
    make_host_mounts_slave()
    mount_root_overlay(plan)
    mount_proc(root)
    mount_sysfs(root, plan.sysfs_writable)
    mount_cgroups(root, plan.cgroup_view)
    mount_dev_tmpfs(root)
    create_device_nodes(root)
    create_dev_links(root)
    mount_devpts(root)
    mount_dev_shm(root)
    mount_mqueue(root)
    bind_host_files(root, plan.host_files)
    mount_user_mounts(root, plan.mounts)
    pivot_into(root)
    mask_paths(plan.masked_paths)
    make_paths_readonly(plan.readonly_paths)
    if plan.read_only:
        remount_root_readonly()


def make_host_mounts_slave() -> None:
    """``mount --make-rslave /``: host mounts still propagate in, ours never propagate out."""
    syscalls.mount(None, "/", None, MS_SLAVE | MS_REC)


def mount_root_overlay(plan: RootfsPlan) -> None:
    """The image layers (read-only, shared by every container of the image) under this container's upper dir."""
    if not plan.lower_dirs:
        raise RootfsError("image has no layers")
    lowers = plan.lower_dirs
    if plan.userns_fd >= 0:
        lowers = idmap_lower_layers(plan)
    mount_overlay(lowers, plan.upper, plan.work, plan.merged)


def idmap_lower_layers(plan: RootfsPlan) -> list[Path]:
    """Each shared layer again, owners shifted into the container's id range (only in this mount namespace)."""
    from runtime.container.userns import idmapped_copy

    shifted = []
    for index, lower in enumerate(plan.lower_dirs):
        target = plan.merged.parent / "idmapped" / str(index)
        target.mkdir(parents=True, exist_ok=True)
        idmapped_copy(lower, target, plan.userns_fd)
        shifted.append(target)
    return shifted


def mount_proc(root: Path) -> None:
    target = _mkdir_in(root, "proc")
    syscalls.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_sysfs(root: Path, writable: bool = False) -> None:
    """/sys read-only: the container may look at devices, never reconfigure them (unless --privileged)."""
    target = _mkdir_in(root, "sys")
    syscalls.mount("sysfs", target, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if writable else MS_RDONLY))


def mount_cgroups(root: Path, view: dict[str, Path]) -> None:
    """/sys/fs/cgroup read-only, showing the container its own group only (its limits, its counters).

    v2: a cgroup2 mount made inside the container's cgroup namespace, whose root is the container's group.
    v1: a tmpfs with one read-only bind per hierarchy of the container's group directory, as docker does.
    """
    if not view:
        return
    target = root / "sys/fs/cgroup"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if "" in view:
        syscalls.mount("cgroup2", target, "cgroup2", flags | MS_RDONLY)
        return
    syscalls.mount("tmpfs", target, "tmpfs", flags, "mode=755")
    for name, host_dir in sorted(view.items()):
        mountpoint = target / name
        mountpoint.mkdir()
        syscalls.mount(host_dir, mountpoint, None, MS_BIND)
        _remount_readonly(mountpoint)
    _remount_readonly(target)


def mount_dev_tmpfs(root: Path) -> None:
    """A private /dev, so the container sees only the devices it is given."""
    target = _mkdir_in(root, "dev")
    syscalls.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")


def create_device_nodes(root: Path) -> None:
    for name, (major, minor) in DEVICES.items():
        path = root / "dev" / name
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod honours the umask


def create_dev_links(root: Path) -> None:
    for name, target in DEV_LINKS.items():
        if name == "core" and not Path("/proc/kcore").exists():
            continue
        os.symlink(target, root / "dev" / name)


def mount_devpts(root: Path) -> None:
    """A new devpts instance: the container's ptys are its own, numbered from 0, unseen by the host."""
    target = _mkdir_in(root, "dev/pts")
    syscalls.mount(
        "devpts", target, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"
    )


def mount_dev_shm(root: Path) -> None:
    target = _mkdir_in(root, "dev/shm")
    syscalls.mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")


def mount_mqueue(root: Path) -> None:
    """POSIX message queues of the container's own IPC namespace."""
    target = _mkdir_in(root, "dev/mqueue")
    syscalls.mount("mqueue", target, "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_host_files(root: Path, host_files: dict[str, Path]) -> None:
    """/etc/hostname, /etc/hosts, /etc/resolv.conf from the container's directory (rewritable in place)."""
    for target, source in host_files.items():
        path = _file_in(root, target)
        syscalls.mount(source, path, None, MS_BIND)


def mount_user_mounts(root: Path, mounts: list[MountSpec]) -> None:
    """``-v``, ``--mount`` and ``--tmpfs``, in the order given (a later mount may sit inside an earlier one)."""
    for spec in mounts:
        if spec.type == "tmpfs":
            target = _mkdir_in(root, spec.target)
            flags, data = tmpfs_mount_args(spec, MS_NOSUID | MS_NODEV)
            syscalls.mount("tmpfs", target, "tmpfs", flags, data or None)
            continue
        source = Path(spec.host_path or spec.source)
        if not source.exists():
            raise RootfsError(f"bind source path does not exist: {source}")
        target = _mkdir_in(root, spec.target) if source.is_dir() else _file_in(root, spec.target)
        syscalls.mount(source, target, None, MS_BIND | MS_REC)
        propagation = spec.options.get("bind-propagation", "rprivate")
        if propagation in ("private", "rprivate"):
            syscalls.mount(None, target, None, MS_PRIVATE | (MS_REC if propagation == "rprivate" else 0))
        if spec.read_only:
            _remount_readonly(target)


def pivot_into(root: Path) -> None:
    """pivot_root(".", ".") and a lazy unmount of the old root: the host's filesystem becomes unreachable."""
    os.chdir(root)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", MNT_DETACH)
    os.chdir("/")


def mask_paths(paths: tuple[str, ...]) -> None:
    for path in paths:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY)
        else:
            syscalls.mount("/dev/null", path, None, MS_BIND)


def make_paths_readonly(paths: tuple[str, ...]) -> None:
    for path in paths:
        if not os.path.exists(path):
            continue
        syscalls.mount(path, path, None, MS_BIND | MS_REC)
        _remount_readonly(Path(path))


def remount_root_readonly() -> None:
    """``--read-only``: the container's own layer cannot be written either (its mounts keep their modes)."""
    _remount_readonly(Path("/"))


def _remount_readonly(path: Path) -> None:
    """A bind remount keeps the mount's nosuid/nodev/noexec (they may be locked) and adds ro."""
    kept = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    syscalls.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def _inside(root: Path, target: str) -> Path:
    """``root/target`` with every symlink resolved *inside* root, so an image cannot redirect a mount to the host."""
    current = root
    parts = [p for p in Path(target).parts if p not in ("/", "", ".")]
    depth = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current != root:
                current = current.parent
            continue
        candidate = current / part
        if candidate.is_symlink():
            depth += 1
            if depth > 40:
                raise RootfsError(f"too many symlinks under {target}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                current = root
            parts = [p for p in Path(link).parts if p not in ("/", "", ".")] + parts
            continue
        current = candidate
    return current


def _mkdir_in(root: Path, target: str) -> Path:
    path = _inside(root, target)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise RootfsError(f"cannot mount on {target}: not a directory") from exc
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise RootfsError(f"cannot create mount point {target}: read-only file system") from exc
        raise
    return path


def _file_in(root: Path, target: str) -> Path:
    path = _inside(root, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o644)
    return path
