"""Name resolution inside containers: kept-current ``/etc/hosts`` files (no DNS daemon).

Why hosts files rather than an embedded DNS server: refrt has no daemon to run one, and the static busybox
and glibc resolvers read ``/etc/hosts`` first. Each container's hosts file (``paths.containers/<id>/hosts``,
bind-mounted by the container code) lists its own address and hostname and, on user networks, every other
endpoint of the networks it is on - name, ``--network-alias`` values and short id. Whenever an endpoint joins or
leaves a user network, the hosts file of every container on that network is rewritten IN PLACE (same inode;
a rename would leave the container seeing the old bind-mounted file). Like docker, the default bridge does not
resolve container names. ``resolv.conf`` is the host's, minus loopback nameservers (unreachable from a
container's namespace), or the ``--dns`` servers.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def render_hosts(own: list[tuple[str, list[str]]], peers: list[tuple[str, list[str]]],
                 extra_hosts: list[str]) -> str:
    """The file's text: localhost lines, own addresses, peers, then ``--add-host`` entries."""
    lines = [LOCALHOST]
    for ip, names in [*own, *peers]:
        uniq = list(dict.fromkeys(n for n in names if n))
        if uniq:
            lines.append(f"{ip}\t{' '.join(uniq)}\n")
    for entry in extra_hosts:
        name, _, ip = entry.partition(":")
        if name and ip:
            lines.append(f"{'127.0.0.1' if ip == 'host-gateway' else ip}\t{name}\n")
    return "".join(lines)


def render_resolv(dns: list[str], host_resolv: Path = Path("/etc/resolv.conf")) -> str:
    """``resolv.conf`` for a container: ``--dns`` servers, else the host's non-loopback ones, else public ones."""
    try:
        host_lines = host_resolv.read_text().splitlines()
    except OSError:
        host_lines = []
    others = [ln for ln in host_lines if ln.split()[:1] in (["search"], ["options"], ["domain"])]
    servers = list(dns) or [
        ln.split()[1] for ln in host_lines
        if ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
        and not ln.split()[1].startswith(("127.", "::1"))
    ]
    servers = servers or list(FALLBACK_DNS)
    return "".join(f"nameserver {s}\n" for s in servers) + "".join(f"{ln}\n" for ln in others)


def write_in_place(path: Path, text: str) -> None:
    """Replace ``path``'s content keeping its inode (bind mounts of it stay valid); skip if its dir is gone."""
    if not path.parent.is_dir():
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        size = os.fstat(fd).st_size
        os.pwrite(fd, data, 0)
        if size > len(data):  # truncating first would free the blocks and allocate them again (~1 ms on ext4)
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
