"""Per-container /etc/hostname, /etc/hosts and /etc/resolv.conf, kept in ``containers/<id>/``.

They are bind-mounted into the container, so the network package can rewrite hosts and resolv.conf later *in
place* (same inode: write into the file, never replace it) and the container sees the change.
"""

from __future__ import annotations

from pathlib import Path

HOSTS_TEMPLATE = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def write_host_files(directory: Path, hostname: str, network_mode: str) -> dict[str, Path]:
    """Create the three files; returns container path -> host file (what rootfs bind-mounts)."""
    files = {
        "/etc/hostname": directory / "hostname",
        "/etc/hosts": directory / "hosts",
        "/etc/resolv.conf": directory / "resolv.conf",
    }
    if network_mode == "host":
        files["/etc/hostname"].write_text(Path("/etc/hostname").read_text() if Path("/etc/hostname").exists() else "")
        files["/etc/hosts"].write_text(Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "")
    else:
        files["/etc/hostname"].write_text(hostname + "\n")
        files["/etc/hosts"].write_text(HOSTS_TEMPLATE + f"127.0.1.1\t{hostname}\n")
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    files["/etc/resolv.conf"].write_text(resolv)
    return files
