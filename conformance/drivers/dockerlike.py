"""What every driver for a docker-compatible CLI shares: labelling, cleanup by label, and the busybox base image.

podman, docker and any ``custom:/path/to/cli`` (nerdctl...) accept docker's syntax, so the differences a driver
declares are few: its global flags (``base_argv``), per-command rewrites (``translate``, e.g. podman's
``--tls-verify=false`` for a plain-HTTP registry) and its ``features()``. The busybox image every suite uses is
built offline by refrt (``refrt image bootstrap busybox`` + ``refrt save``) on the controller, copied to the
target and ``load``ed, so every runtime runs the very same image; when refrt cannot, a rootfs tar made from
``/bin/busybox`` is ``import``ed instead.
"""

from __future__ import annotations

import atexit
import io
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import ClassVar

from conformance.drivers.base import RUN_LABEL, RuntimeDriver, register_driver, with_run_label
from conformance.errors import DriverError
from conformance.targets.base import CommandResult

BUSYBOX = "busybox"
REMOTE_IMAGE_DIR = "/var/tmp/conformance/images"
_ARCHIVE_CACHE: dict[str, Path] = {}


def _refrt_archive(workdir: Path) -> Path | None:
    """busybox:latest as a docker-archive, made by this checkout's refrt; None when refrt cannot."""
    root = workdir / "refrt-root"
    archive = workdir / "busybox-refrt.tar"
    refrt = [sys.executable, "-m", "runtime", "--root", str(root), "--state", str(workdir / "refrt-state")]
    for args in (["image", "bootstrap", BUSYBOX], ["save", "-o", str(archive), f"{BUSYBOX}:latest"]):
        proc = subprocess.run([*refrt, *args], capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            return None
    shutil.rmtree(root, ignore_errors=True)
    return archive if archive.exists() else None


def busybox_rootfs_tar(path: Path, busybox: str = "/bin/busybox") -> Path:
    """A rootfs tar: static busybox, a link per applet, /etc/passwd and /etc/group (for ``import``)."""
    if not Path(busybox).exists():
        raise DriverError(f"{busybox} not found (Debian package busybox-static)")
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(path, "w") as tar:
        for name in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev", "root",
                     "home", "var"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in applets:
            if applet != "bin/busybox":
                info = tarfile.TarInfo(applet)
                info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
                tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/home:/bin/false\n"),
                           ("etc/group", "root:x:0:\nnobody:x:65534:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def busybox_archive() -> tuple[Path, str]:
    """The busybox image file on the controller and how to add it: ``load`` (docker-archive) or ``import``."""
    if "path" not in _ARCHIVE_CACHE:
        workdir = Path(tempfile.mkdtemp(prefix="conformance-busybox-"))
        atexit.register(shutil.rmtree, workdir, True)  # built once per process, gone with it
        archive = _refrt_archive(workdir)
        if archive is not None:
            _ARCHIVE_CACHE["path"], _ARCHIVE_CACHE["load"] = archive, archive
        else:
            _ARCHIVE_CACHE["path"] = busybox_rootfs_tar(workdir / "busybox-rootfs.tar")
    path = _ARCHIVE_CACHE["path"]
    return path, "load" if "load" in _ARCHIVE_CACHE else "import"


class DockerLikeDriver(RuntimeDriver):
    """A runtime whose CLI takes docker's arguments. Subclasses set ``binary`` and may override the hooks."""

    binary: ClassVar[str]

    def base_argv(self) -> list[str]:
        """The CLI and its global flags/environment, before the sub-command."""
        return [self.binary]

    def translate(self, args: list[str]) -> list[str]:
        """Rewrite docker-style ``args`` where this runtime differs. Default: unchanged."""
        return args

    def argv(self, args: list[str]) -> list[str]:
        return [*self.base_argv(), *self.translate(with_run_label(args, self.run_id))]

    def require_binary(self) -> None:
        check = self.target.run(f"command -v {shlex.quote(self.binary)}", timeout=30)
        if check.exit_status != 0:
            raise DriverError(f"{self.name}: {self.binary} is not installed on target {self.target.name}")

    def version(self) -> str:
        result = self.cli(["version", "--format", "{{.Client.Version}}"], timeout=60)
        return result.stdout.strip() if result.exit_status == 0 and result.stdout.strip() else "unknown"

    def checked(self, args: list[str], what: str, timeout: float = 120) -> CommandResult:
        result = self.cli(args, timeout=timeout)
        if result.exit_status != 0:
            raise DriverError(f"{self.name}: {what} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def ensure_busybox(self) -> None:
        """Make ``busybox`` (busybox:latest) available offline, unless it already is."""
        if self.cli(["image", "inspect", BUSYBOX], timeout=60).exit_status == 0:
            return
        local, mode = busybox_archive()
        unique = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.name}-{self.run_id}")
        remote = f"{REMOTE_IMAGE_DIR}/{unique}-{local.name}"
        self.target.put(local, remote)
        if mode == "load":
            self.checked(["load", "-i", remote], "loading the busybox image", timeout=300)
        else:
            self.checked(["import", "--change", 'CMD ["sh"]', remote, f"{BUSYBOX}:latest"],
                         "importing the busybox rootfs", timeout=300)
        self.target.run(f"rm -f {shlex.quote(remote)}", timeout=30)
        self.checked(["image", "inspect", BUSYBOX], "finding busybox after loading it")

    def _labelled(self, kind: list[str]) -> list[str]:
        result = self.cli([*kind, "-q", "--filter", f"label={RUN_LABEL}={self.run_id}"], timeout=120)
        return result.stdout.split() if result.exit_status == 0 else []

    def cleanup(self) -> None:
        """Remove the containers, networks and volumes labelled with this run's id."""
        try:
            containers = self._labelled(["ps", "-a"])
            if containers:
                self.cli([*self.force_remove_args(), *containers], timeout=300)
            networks = self._labelled(["network", "ls"])
            if networks:
                self.cli(["network", "rm", *networks], timeout=120)
            volumes = self._labelled(["volume", "ls"])
            if volumes:
                self.cli(["volume", "rm", "-f", *volumes], timeout=120)
        except Exception as exc:  # cleanup must not raise; say what was left
            print(f"conformance: {self.name} cleanup incomplete: {exc}", file=sys.stderr)


@register_driver
class CustomDriver(DockerLikeDriver):
    """``--runtime custom:/usr/bin/nerdctl``: any docker-compatible CLI, with no declared differences."""

    name = "custom"
    binary = ""

    @classmethod
    def parametrize(cls, argument: str) -> type[RuntimeDriver]:
        if not argument:
            raise DriverError("custom runtime needs a CLI path: --runtime custom:/path/to/cli")
        return type(f"CustomDriver_{Path(argument).name}", (cls,), {"binary": argument, "name": f"custom:{argument}"})

    def prepare(self) -> None:
        if not self.binary:
            raise DriverError("custom runtime needs a CLI path: --runtime custom:/path/to/cli")
        self.require_binary()
        self.ensure_busybox()

    def features(self) -> dict[str, bool]:
        return {"runtime.custom": True}
