"""Veth pairs: the host end joins the network's bridge, the peer moves into the container as ``ethN``.

The container's namespace is reached as ``/proc/<pid>/ns/net``; configuration inside it runs through ``nsenter``
with ``ip -batch`` (one process for all steps). The host end is named from the container id so a leftover is
recognisable; deleting it deletes the peer too, which is all ``detach`` needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.network import commands


def netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def netns_inode(pid: int) -> int:
    """Inode of the process's network namespace (identifies it even after pid reuse)."""
    return os.stat(netns_path(pid)).st_ino


def host_veth_name(container_id: str, index: int) -> str:
    """``rv`` + 10 id characters + index: unique per container and interface, within IFNAMSIZ (15)."""
    return f"rv{container_id[:10]}{index}"


def create_veth(host_name: str, peer_name: str, bridge: str, pid: int) -> None:
    """Make the pair, plug the host end into ``bridge`` with hairpin on (a container reaching its own published
    port through the host comes back out of the same port), and move the peer into the namespace of ``pid``.
    One ``ip -batch`` process; a stale pair of the same name is replaced."""
    if Path("/sys/class/net", host_name).exists():
        commands.succeeds(["ip", "link", "del", host_name])
    batch = [
        f"link add {host_name} type veth peer name {peer_name}",
        f"link set {host_name} master {bridge}",
        f"link set {host_name} type bridge_slave hairpin on",
        f"link set {host_name} up",
        f"link set {peer_name} netns {pid}",
    ]
    commands.run(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")


def move_into(peer_name: str, pid: int, ifname: str, ip: str, prefix: int, mac: str, gateway: str | None) -> None:
    """Configure the peer inside the namespace of ``pid``: rename, address, bring it and ``lo`` up, route."""
    batch = [
        f"link set {peer_name} name {ifname}",
        f"link set {ifname} address {mac}",
        f"addr add {ip}/{prefix} dev {ifname}",
        f"link set {ifname} up",
        "link set lo up",
    ]
    if gateway:
        batch.append(f"route replace default via {gateway} dev {ifname}")
    commands.in_netns(netns_path(pid), ["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")


def delete_host_end(host_name: str) -> None:
    """Delete the pair through its host end (idempotent)."""
    if Path("/sys/class/net", host_name).exists():
        commands.succeeds(["ip", "link", "del", host_name])


def remove_in_netns(pid: int, ifname: str) -> None:
    """Remove ``ifname`` inside the container (``network disconnect`` of a live container)."""
    commands.succeeds(["nsenter", f"--net={netns_path(pid)}", "--", "ip", "link", "del", ifname])


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
