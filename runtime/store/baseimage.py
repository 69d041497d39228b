"""Base images built offline from Debian packages: ``busybox`` (busybox-static) and, optionally, ``debian``.

The busybox image is one layer made in memory with fixed modes, owners and mtimes and sorted members, so the same
busybox binary always gives the same diff_id and image id (the config's dates are fixed too). Peer runtimes get
the very same image through :func:`write_busybox_archive` (docker-archive, which ``podman load``, ``docker load``
and ``skopeo copy docker-archive:`` read).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from runtime.paths import Paths
from runtime.store.errors import StoreError
from runtime.store.images import Image
from runtime.store.store import Store, host_architecture

BUSYBOX_BINARY = Path("/bin/busybox")
CREATED = "2024-01-01T00:00:00Z"
MTIME = 1704067200
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnobody:x:65534:\n"
HOSTS = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
FILES: dict[str, tuple[bytes, int]] = {
    "etc/passwd": (PASSWD, 0o644),
    "etc/group": (GROUP, 0o644),
    "etc/shadow": (b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640),
    "etc/hostname": (b"", 0o644),
    "etc/hosts": (HOSTS, 0o644),
    "etc/resolv.conf": (b"", 0o644),
    "etc/nsswitch.conf": (b"hosts: files dns\n", 0o644),
}
DIRS: dict[str, int] = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o555,
    "root": 0o700,
    "sbin": 0o755,
    "sys": 0o555,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
    "var/tmp": 0o1777,
}


class BaseImageError(StoreError):
    """A base image cannot be built here (busybox-static or mmdebstrap missing, bootstrap failed)."""


def _busybox(binary: Path) -> Path:
    if not binary.is_file():
        raise BaseImageError(f"{binary} not found: install the busybox-static package")
    return binary


def busybox_applets(binary: Path = BUSYBOX_BINARY) -> list[str]:
    """Every applet's install path (``bin/sh``, ``usr/bin/wget``...), from ``busybox --list-full``."""
    out = subprocess.run([str(_busybox(binary)), "--list-full"], capture_output=True, check=True).stdout
    return sorted({line.strip().lstrip("/") for line in out.decode().splitlines() if line.strip()})


def busybox_version(binary: Path = BUSYBOX_BINARY) -> str:
    out = subprocess.run([str(_busybox(binary))], capture_output=True, check=False).stdout.decode()
    first = out.splitlines()[0] if out else "BusyBox"
    return first.split(" multi-call")[0]


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.size = size
    return info


def busybox_layer_tar(binary: Path = BUSYBOX_BINARY) -> bytes:
    """The busybox root file system as one deterministic tar: dirs, then the binary, then applet hard links."""
    applets = [a for a in busybox_applets(binary) if a != "bin/busybox"]
    dirs = dict(DIRS)
    for applet in applets:
        parent = applet.rpartition("/")[0]
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = parent.rpartition("/")[0]
    data = binary.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(dirs):
            tf.addfile(_info(name, tarfile.DIRTYPE, dirs[name]))
        tf.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for name, (content, mode) in sorted(FILES.items()):
            tf.addfile(_info(name, tarfile.REGTYPE, mode, len(content)), io.BytesIO(content))
        for applet in applets:
            link = _info(applet, tarfile.LNKTYPE, 0o755)
            link.linkname = "bin/busybox"
            tf.addfile(link)
    return buf.getvalue()


def bootstrap_busybox(store: Store, tags: list[str] | None = None, binary: Path = BUSYBOX_BINARY) -> Image:
    """Build (or rebuild, identically) ``busybox:latest`` in ``store``."""
    layer = store.add_layer_from_tar(io.BytesIO(busybox_layer_tar(binary)), compressed=False)
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "history": [{"created": CREATED, "created_by": f"refrt image bootstrap busybox ({busybox_version(binary)})"}],
    }
    return store.commit_image(config, [layer], tags or ["busybox:latest"])


def bootstrap_debian(store: Store, suite: str = "bookworm", tags: list[str] | None = None) -> Image:
    """Build ``debian:<suite>`` with ``mmdebstrap --variant=minbase`` from the host's apt sources (slow: ~25 s)."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise BaseImageError("mmdebstrap not found: install the mmdebstrap package to build a debian image")
    store.ensure()
    with tempfile.TemporaryDirectory(dir=store.tmp) as work:
        tar_path = Path(work) / "rootfs.tar"
        result = subprocess.run(
            [mmdebstrap, "--quiet", "--mode=root", "--variant=minbase", "--format=tar", suite, str(tar_path)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise BaseImageError(f"mmdebstrap failed: {result.stderr.decode(errors='replace').strip()[-500:]}")
        with tar_path.open("rb") as fh:
            layer = store.add_layer_from_tar(fh, compressed=False)
    created = CREATED
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": created,
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["bash"]},
        "history": [{"created": created, "created_by": f"refrt image bootstrap debian ({suite}, mmdebstrap minbase)"}],
    }
    return store.commit_image(config, [layer], tags or [f"debian:{suite}", "debian:latest"])


def write_busybox_archive(dest: Path, tag: str = "busybox:latest", binary: Path = BUSYBOX_BINARY) -> str:
    """Write busybox as a docker-archive tar for peer runtimes (``podman load -i``); returns the image id.

    Built in a throw-away store, so it needs no refrt root."""
    from runtime.store.archive import save_docker_archive

    with tempfile.TemporaryDirectory(prefix="refrt-busybox-") as tmp:
        store = Store(Paths(root=Path(tmp) / "root", state=Path(tmp) / "state"))
        image = bootstrap_busybox(store, [tag], binary)
        with Path(dest).open("wb") as out:
            save_docker_archive(store, [tag], out)
        return image.id
