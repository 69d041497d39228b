"""A tiny initrd: busybox-static, the few modules needed to find the root disk, and ``switch_root``.

Debian's stock initramfs is 29 MB and costs about 8 s of boot under TCG; this one is under 2 MB. It is written
as a gzip'ed cpio (newc) archive by Python itself, so building it needs neither cpio nor initramfs-tools. Modules
come from the guest's own ``/lib/modules/<release>`` (with their dependencies from ``modules.dep``), busybox from
the guest's ``/bin/busybox`` (package busybox-static), so the initrd always matches the guest kernel.

The ``/init`` script understands ``root=``, ``rootfstype=``, ``init=``, ``ro``/``rw`` and two switches of its own:
``conformance.rootwait=SECONDS`` (how long to wait for the root device, default 10) and ``conformance.probe``
(print ``conformance-probe-ok`` and power off at once: the KVM probe uses it to see that a guest kernel really
runs). When the root device never appears it says so on the console and powers the VM off, so a broken kernel
command line ends quickly with the reason in the serial log.
"""

from __future__ import annotations

import gzip
import io
import lzma
import stat
from pathlib import Path

from vm.errors import ImageBuildError

#: Modules the initrd loads, when the kernel has them as modules (built-in ones are skipped).
WANTED_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "crc32c_intel", "ext4")

PROBE_MARKER = "conformance-probe-ok"
NO_ROOT_MARKER = "conformance-initrd: root device did not appear"

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "conformance-initrd: started"
for m in $(cat /modules.order); do insmod "/lib/modules/$m" || echo "conformance-initrd: insmod $m failed"; done
root=; fstype=ext4; mode=rw; wait=10; init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${{arg#root=}}" ;;
        rootfstype=*) fstype="${{arg#rootfstype=}}" ;;
        init=*) init="${{arg#init=}}" ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
        conformance.rootwait=*) wait="${{arg#conformance.rootwait=}}" ;;
        conformance.probe) echo "{PROBE_MARKER}"; poweroff -f ;;
    esac
done
n=0
while [ ! -b "$root" ] && [ "$n" -lt $((wait * 10)) ]; do sleep 0.1; n=$((n + 1)); done
if [ ! -b "$root" ] || ! mount -t "$fstype" -o "$mode" "$root" /newroot; then
    echo "{NO_ROOT_MARKER}: root=$root within ${{wait}}s (or it cannot be mounted)"
    poweroff -f
    exit 1
fi
umount /proc /sys
mount --move /dev /newroot/dev || umount /dev
exec switch_root /newroot "$init"
"""


class _CpioWriter:
    """Just enough of the cpio "newc" format for an initramfs: directories, files, symlinks, device nodes."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._ino += 1
        header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._buf.getvalue()


def _normalise(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            return _normalise(base[: -len(suffix)])
    return _normalise(base)


def resolve_modules(modules_dir: Path, wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    """The module paths (relative to ``modules_dir``) to load, dependencies first; built-ins are left out."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[_module_name(target)] = (target, rest.split())
    builtin = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        builtin = {_module_name(line) for line in builtin_file.read_text().split()}
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in deps:
            return
        path, needs = deps[name]
        for dep in needs:
            visit(_module_name(dep))
        if path not in order:
            order.append(path)

    for name in wanted:
        key = _normalise(name)
        if key in deps:
            visit(key)
        elif key not in builtin and name not in ("crc32c_intel", "crc32c_generic"):
            raise ImageBuildError(f"kernel module {name} is neither a module nor built in ({modules_dir})")
    return order


def _module_bytes(path: Path) -> bytes:
    """busybox insmod wants plain ELF: decompress ``.ko.xz`` here."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    return data


def build_initrd(rootfs: Path, kernel_release: str, output: Path) -> list[str]:
    """Write the initrd for the guest in ``rootfs`` to ``output``; return the module names it loads."""
    busybox = rootfs / "bin" / "busybox"
    if not busybox.exists():
        raise ImageBuildError(f"{busybox} missing: the guest needs busybox-static")
    modules_dir = rootfs / "lib" / "modules" / kernel_release
    modules = resolve_modules(modules_dir)
    cpio = _CpioWriter()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        cpio.directory(directory)
    cpio.char_device("dev/console", 5, 1)
    cpio.char_device("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    names = []
    for relative in modules:
        plain = relative.rsplit("/", 1)[-1]
        for suffix in (".xz", ".gz"):
            plain = plain.removesuffix(suffix)
        cpio.file(f"lib/modules/{plain}", _module_bytes(modules_dir / relative))
        names.append(plain)
    cpio.file("modules.order", ("\n".join(names) + "\n").encode())
    output.write_bytes(gzip.compress(cpio.finish(), compresslevel=6))
    return names
