"""The guest image: recipe, offline build, and cache.

A recipe (suite, packages, the files written into the guest, disk size) hashes to a key; the built image lives in
``<cache>/<key>/`` (see :mod:`vm.paths`) and is rebuilt only when the recipe changes. The build is offline in the
sense that it only talks to the apt mirror the host already uses (read from ``/etc/apt/sources.list*`` at run
time, so nothing names a mirror here); the mirror is not part of the key, the recipe is.

Steps, each a function: ``mmdebstrap --mode=root --variant=apt`` into a directory → configure the guest
(hostname, hosts, fstab, systemd-networkd DHCP on ``en*``, the SSH key, ``overlay`` loaded at boot) → take the
kernel out → write the tiny initrd (:mod:`vm.initrd`) → ``mkfs.ext4 -d`` a raw disk (no loop mount, no
partition table) → ``qemu-img convert`` to qcow2. The VM then boots the guest's own kernel directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vm import paths
from vm.errors import ImageBuildError, ToolMissing
from vm.initrd import INIT_SCRIPT, WANTED_MODULES, build_initrd
from vm.keys import KeyPair, ensure_key
from vm.locking import locked

#: Bump when the build procedure changes in a way the recipe fields do not show.
RECIPE_VERSION = 1

#: Guest releases the recipe is made for, with the kernel series each brings; ``bookworm`` is the default guest.
RELEASES = {"bullseye": "5.10", "bookworm": "6.1", "trixie": "6.12"}
DEFAULT_RELEASE = "bookworm"
#: Releases whose python3 is older than refrt needs get bookworm's next to their own (see :func:`add_python`).
PYTHON_FROM = {"bullseye": ("bookworm", "3.11")}
#: Where a borrowed Python lives in the guest; ``/usr/local/bin/python3`` (first on root's PATH) runs it.
BORROWED_PYTHON = "/opt/conformance/python"

GUEST_HOSTNAME = "conformance-vm"

GUEST_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "iptables",
    "busybox-static",
    "procps",
    "kmod",
    "sudo",
    "ca-certificates",
    # The security suite builds its probe program (static C) on the target at set-up, as it does on a host.
    "gcc",
    "libc6-dev",
)

GUEST_FILES: dict[str, str] = {
    "/etc/hostname": f"{GUEST_HOSTNAME}\n",
    "/etc/hosts": (
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{GUEST_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    ),
    "/etc/fstab": "/dev/vda\t/\text4\trw,relatime\t0\t1\n",
    "/etc/systemd/network/20-en.network": (
        "[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    ),
    "/etc/modules-load.d/conformance.conf": "overlay\n",
    "/etc/ssh/sshd_config.d/conformance.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nMaxSessions 64\nMaxStartups 64\n"
    ),
    "/etc/systemd/journald.conf.d/conformance.conf": "[Journal]\nStorage=volatile\n",
}

#: Units enabled / masked in the guest (masking keeps background jobs from competing with the checks).
ENABLE_UNITS = ("systemd-networkd.service",)
MASK_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "systemd-networkd-wait-online.service",
)

DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)


#: Run by mmdebstrap after the essential packages, before the rest: Debian's own initramfs (29 MB, about a minute
#: of ``mkinitramfs`` per build) is never used - VMs boot the tiny initrd of :mod:`vm.initrd` - so
#: ``update-initramfs`` is diverted to ``/bin/true`` before the kernel package runs it.
ESSENTIAL_HOOKS = (
    'chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs'
    ' && ln -sf /bin/true "$1/usr/sbin/update-initramfs"',
)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the guest image's content, and so its cache key."""

    suite: str = "bookworm"
    variant: str = "apt"
    packages: tuple[str, ...] = GUEST_PACKAGES
    files: tuple[tuple[str, str], ...] = tuple(sorted(GUEST_FILES.items()))
    enable_units: tuple[str, ...] = ENABLE_UNITS
    mask_units: tuple[str, ...] = MASK_UNITS
    dpkg_options: tuple[str, ...] = DPKG_EXCLUDES
    essential_hooks: tuple[str, ...] = ESSENTIAL_HOOKS
    #: dash starts faster than bash, and every command the harness runs starts root's login shell once.
    root_shell: str = "/bin/sh"
    disk_size_mb: int = 4096
    initrd_modules: tuple[str, ...] = WANTED_MODULES
    initrd_script: str = INIT_SCRIPT
    version: int = RECIPE_VERSION
    #: ``(suite, version)``: a Python from another release, for guests whose own is older than the runtime
    #: needs (bullseye's 3.9; refrt needs 3.11). Empty: the guest's own ``python3``.
    python_from: tuple[str, ...] = ()

    def key(self) -> str:
        """Hex digest naming the cache directory; any change to a field changes it."""
        fields = asdict(self)
        if not fields["python_from"]:
            del fields["python_from"]  # recipes without one keep the key they had before the field existed
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltImage:
    """A built, cached image: what a VM needs to boot it."""

    directory: Path
    key: str
    kernel_release: str

    @property
    def disk(self) -> Path:
        return self.directory / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def ssh_key(self) -> KeyPair:
        return KeyPair(self.directory / "id_ed25519")

    @property
    def user(self) -> str:
        return "root"


Progress = Callable[[str], None]


@dataclass
class BuildReport:
    """Per-step durations of a build (seconds), for ``conformance vm build`` and the benchmark."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)


def recipe_for(release: str | None = None) -> Recipe:
    """The guest recipe of a Debian ``release`` (the default guest when None); an unknown release is an error."""
    release = release or DEFAULT_RELEASE
    if release not in RELEASES:
        raise ImageBuildError(f"unknown guest release {release!r}: expected one of {', '.join(RELEASES)}")
    return Recipe(suite=release, python_from=PYTHON_FROM.get(release, ()))


def image_dir(recipe: Recipe) -> Path:
    return paths.cache_root() / "images" / recipe.key()


def load_image(recipe: Recipe | None = None) -> BuiltImage | None:
    """The cached image for ``recipe`` when it is completely built, else None."""
    directory = image_dir(recipe or Recipe())
    meta_file = directory / "image.json"
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    image = BuiltImage(directory=directory, key=meta["key"], kernel_release=meta["kernel_release"])
    needed = (image.disk, image.kernel, image.initrd, image.ssh_key.private)
    return image if all(p.exists() for p in needed) else None


def ensure_image(
    recipe: Recipe | None = None, progress: Progress | None = None, report: BuildReport | None = None
) -> BuiltImage:
    """Return the cached image for ``recipe``, building it first (once, under a lock) when needed."""
    recipe = recipe or Recipe()
    image = load_image(recipe)
    if image is not None:
        return image
    with locked(paths.locks_dir(), f"image-{recipe.key()}"):
        image = load_image(recipe)  # another process may have built it while we waited
        if image is not None:
            return image
        return build_image(recipe, progress or (lambda _line: None), report or BuildReport())


# --- the build steps ------------------------------------------------------------------------------------------


def _require(program: str, package: str) -> None:
    if shutil.which(program) is None:
        raise ToolMissing(program, package)


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip().lower()
        current[key] = value.strip()
    return stanzas


def host_apt_sources(suite: str, apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """One-line ``deb`` entries for ``suite`` (and its -updates/-security) from the host's own apt sources.

    The host's codename is mapped to ``suite``, so a host on another release still lends its mirror. Only the
    ``main`` component is kept: the guest needs nothing else. ``$CONFORMANCE_VM_MIRROR`` (one URI) overrides.
    """
    override = os.environ.get("CONFORMANCE_VM_MIRROR")
    if override:
        return [f"deb {override} {suite} main"]
    codename = host_codename() or suite
    entries: list[tuple[str, str, str]] = []  # (options, uri, suite)

    def add(options: str, uri: str, host_suite: str, components: list[str]) -> None:
        if "main" not in components:
            return
        base, dash, pocket = host_suite.partition("-")
        if base not in (codename, suite):
            return
        guest_suite = suite + dash + pocket
        if pocket not in ("", "updates", "security"):
            return
        entry = (options, uri.rstrip("/"), guest_suite)
        if entry not in entries:
            entries.append(entry)

    files = [apt_dir / "sources.list"] if (apt_dir / "sources.list").exists() else []
    files += sorted((apt_dir / "sources.list.d").glob("*.list")) + sorted(
        (apt_dir / "sources.list.d").glob("*.sources")
    )
    for path in files:
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(text):
                if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes") == "no":
                    continue
                signed = stanza.get("signed-by", "")
                options = f"[signed-by={signed}] " if signed.startswith("/") else ""
                for uri in stanza.get("uris", "").split():
                    for host_suite in stanza.get("suites", "").split():
                        add(options, uri, host_suite, stanza.get("components", "").split())
            continue
        for line in text.splitlines():
            match = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
            if match:
                add(match.group(1) or "", match.group(2), match.group(3), match.group(4).split())
    if not entries:
        raise ImageBuildError(
            f"no apt source for {suite} found in {apt_dir}/sources.list*; set CONFORMANCE_VM_MIRROR to a mirror URI"
        )
    return [f"deb {options}{uri} {guest_suite} main" for options, uri, guest_suite in entries]


def _run_logged(argv: list[str], log: Path, progress: Progress, step: str) -> None:
    """Run ``argv``, appending its output to ``log`` and passing each line to ``progress``."""
    with log.open("a") as log_file:
        log_file.write(f"$ {' '.join(argv)}\n")
        log_file.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            progress(f"  {line.rstrip()}")
        status = proc.wait()
    if status != 0:
        raise ImageBuildError(f"{step}: {argv[0]} exited with status {status}", log=str(log))


def debootstrap_rootfs(recipe: Recipe, rootfs: Path, log: Path, progress: Progress) -> None:
    """mmdebstrap the guest's root filesystem into ``rootfs`` from the host's own mirror."""
    _require("mmdebstrap", "mmdebstrap")
    if os.geteuid() != 0:
        raise ImageBuildError("building the VM image needs root (mmdebstrap --mode=root)")
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={recipe.variant}",
        "--include=" + ",".join(recipe.packages),
        *(f"--dpkgopt={option}" for option in recipe.dpkg_options),
        *(f"--essential-hook={hook}" for hook in recipe.essential_hooks),
        recipe.suite,
        str(rootfs),
        *host_apt_sources(recipe.suite),
    ]
    _run_logged(argv, log, progress, "mmdebstrap")


def configure_guest(recipe: Recipe, rootfs: Path, key: KeyPair, log: Path, progress: Progress) -> None:
    """Write the recipe's files, the root SSH key, and enable/mask units (plain symlinks via systemctl)."""
    for name, content in recipe.files:
        target = rootfs / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    ssh_dir = rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(key.public_text() + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    (rootfs / "etc" / "resolv.conf").unlink(missing_ok=True)  # no DNS: the guest must not reach out
    set_root_shell(rootfs, recipe.root_shell)
    root = str(rootfs)
    if recipe.enable_units:
        _run_logged(["systemctl", f"--root={root}", "enable", *recipe.enable_units], log, progress, "enable units")
    if recipe.mask_units:
        _run_logged(["systemctl", f"--root={root}", "mask", *recipe.mask_units], log, progress, "mask units")


def set_root_shell(rootfs: Path, shell: str) -> None:
    passwd = rootfs / "etc" / "passwd"
    lines = passwd.read_text().splitlines()
    for index, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == "root" and len(fields) == 7:
            fields[6] = shell
            lines[index] = ":".join(fields)
    passwd.write_text("\n".join(lines) + "\n")


def add_python(recipe: Recipe, rootfs: Path, log: Path, progress: Progress) -> None:
    """Give the guest another release's Python (``recipe.python_from``), without touching its own packages.

    The packages (``pythonX.Y-minimal``, ``libpythonX.Y-stdlib`` and their dependencies, that release's glibc
    among them) are only unpacked (``mmdebstrap --variant=extract``) into :data:`BORROWED_PYTHON`. The
    interpreter runs through that tree's own dynamic loader with that tree's libraries (``ld.so
    --library-path``: for this process only, so the guest's programs it starts keep the guest's libraries), and
    ``--argv0`` keeps ``sys.executable`` naming the wrapper, so the interpreter starting itself again works.
    """
    suite, version = recipe.python_from
    tree = rootfs / BORROWED_PYTHON.lstrip("/")
    tree.mkdir(parents=True, exist_ok=True)
    argv = ["mmdebstrap", "--mode=root", "--variant=extract",
            f"--include=python{version}-minimal,libpython{version}-stdlib", suite, str(tree),
            *host_apt_sources(suite)]
    _run_logged(argv, log, progress, "borrowed python")
    binary = tree / "usr" / "bin" / f"python{version}"
    binary.rename(binary.with_name(binary.name + ".bin"))
    libs = f"{BORROWED_PYTHON}/lib/x86_64-linux-gnu:{BORROWED_PYTHON}/usr/lib/x86_64-linux-gnu"
    binary.write_text(
        "#!/bin/sh\n"
        f"# python{version} of {suite}, run with its own glibc (see conformance's vm/image.py)\n"
        f'exec {BORROWED_PYTHON}/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path {libs} --argv0 "$0" '
        f'{BORROWED_PYTHON}/usr/bin/python{version}.bin "$@"\n'
    )
    binary.chmod(0o755)
    link = rootfs / "usr" / "local" / "bin" / "python3"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(f"{BORROWED_PYTHON}/usr/bin/python{version}")


def extract_kernel(rootfs: Path, destination: Path) -> str:
    """Copy the guest's vmlinuz out for direct kernel boot; return its release."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"no kernel in {rootfs}/boot: is linux-image-amd64 in the recipe?")
    kernel = kernels[-1]
    shutil.copyfile(kernel, destination)
    return kernel.name.removeprefix("vmlinuz-")


def make_ext4(rootfs: Path, raw: Path, size_mb: int, log: Path, progress: Progress) -> None:
    """A raw ext4 disk filled from ``rootfs`` by ``mkfs.ext4 -d`` (no loop mount, no partition table)."""
    _require("mkfs.ext4", "e2fsprogs")
    with raw.open("wb") as disk:
        disk.truncate(size_mb * 1024 * 1024)
    _run_logged(["mkfs.ext4", "-q", "-F", "-L", "conformance-root", "-d", str(rootfs), str(raw)], log, progress, "mkfs")


def convert_qcow2(raw: Path, qcow2: Path, log: Path, progress: Progress) -> None:
    _require("qemu-img", "qemu-utils")
    _run_logged(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], log, progress, "qemu-img convert")


def build_image(recipe: Recipe, progress: Progress, report: BuildReport) -> BuiltImage:
    """Build ``recipe`` into its cache directory (through a ``.partial`` one renamed at the end)."""
    final = image_dir(recipe)
    partial = final.with_name(final.name + ".partial")
    for stale in (partial, final):
        if stale.exists():
            shutil.rmtree(stale)
    partial.mkdir(parents=True)
    log = partial / "build.log"
    rootfs = partial / "rootfs"
    key = ensure_key(partial / "id_ed25519", comment=f"conformance-vm-{recipe.key()}")
    kernel_release = ""

    def step(name: str, action: Callable[[], object]) -> None:
        progress(f"{name} ...")
        start = time.monotonic()
        action()
        seconds = time.monotonic() - start
        report.steps.append((name, seconds))
        progress(f"{name}: done in {seconds:.1f} s")

    def take_kernel() -> None:
        nonlocal kernel_release
        kernel_release = extract_kernel(rootfs, partial / "vmlinuz")

    try:
        step("mmdebstrap", lambda: debootstrap_rootfs(recipe, rootfs, log, progress))
        step("configure guest", lambda: configure_guest(recipe, rootfs, key, log, progress))
        if recipe.python_from:
            step("borrowed python", lambda: add_python(recipe, rootfs, log, progress))
        step("kernel", take_kernel)
        step("initrd", lambda: build_initrd(rootfs, kernel_release, partial / "initrd.img"))
        step("mkfs.ext4", lambda: make_ext4(rootfs, partial / "root.raw", recipe.disk_size_mb, log, progress))
        step("qcow2", lambda: convert_qcow2(partial / "root.raw", partial / "base.qcow2", log, progress))
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageBuildError(f"image build failed: {exc}", log=str(log)) from exc
    finally:
        if rootfs.exists():
            shutil.rmtree(rootfs, ignore_errors=True)
        (partial / "root.raw").unlink(missing_ok=True)
    meta = {
        "key": recipe.key(),
        "kernel_release": kernel_release,
        "recipe": asdict(recipe),
        "built": time.time(),
        "steps": dict(report.steps),
    }
    (partial / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
    partial.rename(final)
    return BuiltImage(directory=final, key=recipe.key(), kernel_release=kernel_release)
