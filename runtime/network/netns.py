"""Veth pairs: the host end joins the network's bridge, the peer is the container's ``ethN``.

The container's namespace is reached as ``/proc/<pid>/ns/net``; the peer is created inside it and configured
there, all over netlink (``rtnl``). The host end is named from the container id so a leftover is
recognisable; deleting it deletes the peer too, which is all ``detach`` needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.network import rtnl


def netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def netns_inode(pid: int) -> int:
    """Inode of the process's network namespace (identifies it even after pid reuse)."""
    return os.stat(netns_path(pid)).st_ino


def host_veth_name(container_id: str, index: int) -> str:
    """``rv`` + 10 id characters + index: unique per container and interface, within IFNAMSIZ (15)."""
    return f"rv{container_id[:10]}{index}"


def create_veth(host_name: str, ifname: str, mac: str, bridge: str, pid: int) -> None:
    """Make the pair with its peer born inside the namespace of ``pid`` as ``ifname`` with ``mac`` (no rename,
    no move), plug the host end into ``bridge`` with hairpin on (a container reaching its own published port
    through the host comes back out of the same port) and bring it up. Netlink and one sysfs write, no process;
    a stale pair of the same name is replaced."""
    rtnl.delete_links([host_name])
    rtnl.add_veth(host_name, ifname, mac, pid, bridge)
    Path("/sys/class/net", host_name, "brport", "hairpin_mode").write_text("1")
    rtnl.set_up(host_name)


def configure_peer(pid: int, ifname: str, ip: str, prefix: int, gateway: str | None) -> None:
    """Inside the namespace of ``pid``: address, ``ifname`` and ``lo`` up, default route via ``gateway``
    (netlink from a thread in that namespace: no ``nsenter`` + ``ip`` processes)."""
    rtnl.configure_in_netns(netns_path(pid), ifname, ip, prefix, gateway)


def delete_links(names: list[str]) -> None:
    """Delete these host interfaces (veth host ends, bridges); idempotent."""
    rtnl.delete_links([name for name in names if Path("/sys/class/net", name).exists()])


def remove_in_netns(pid: int, ifname: str) -> None:
    """Remove ``ifname`` inside the container (``network disconnect`` of a live container); idempotent."""
    rtnl.in_netns(netns_path(pid), lambda: rtnl.delete_links([ifname]), f"removing {ifname}")


def net_dev_stats(pid: int) -> dict[str, dict[str, int]]:
    """Per-interface byte/packet counters from ``/proc/<pid>/net/dev`` (``stats`` net I/O)."""
    out: dict[str, dict[str, int]] = {}
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        fields = [int(x) for x in rest.split()]
        if len(fields) >= 16:
            out[name.strip()] = {
                "rx_bytes": fields[0], "rx_packets": fields[1], "rx_errors": fields[2], "rx_dropped": fields[3],
                "tx_bytes": fields[8], "tx_packets": fields[9], "tx_errors": fields[10], "tx_dropped": fields[11],
            }
    return out
