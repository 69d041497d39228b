"""Linux bridges: one per network, holding the gateway address; created up, removed with the network.

``route_localnet`` is switched on for every refrt bridge so a DNAT of ``127.0.0.1:PORT`` to a container can leave
through it (the kernel otherwise drops packets with a loopback source on a non-loopback interface); the
``127.0.0.0/8`` source is then masqueraded (see ``firewall``).
"""

from __future__ import annotations

from pathlib import Path

from runtime.network import commands


def exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create(name: str, gateway: str, prefix: int) -> None:
    """Create bridge ``name`` with ``gateway/prefix`` and bring it up (one ``ip -batch``; an existing bridge only
    gets what it lacks)."""
    if exists(name):
        batch = []
        if f" {gateway}/{prefix} " not in commands.run(["ip", "-4", "-o", "addr", "show", "dev", name]):
            batch.append(f"addr add {gateway}/{prefix} dev {name}")
    else:
        batch = [f"link add name {name} type bridge", f"addr add {gateway}/{prefix} dev {name}"]
    batch.append(f"link set {name} up")
    commands.run(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")
    set_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")


def delete(name: str) -> None:
    """Remove bridge ``name`` (idempotent). Its veths' host ends go with their containers' namespaces."""
    if exists(name):
        commands.succeeds(["ip", "link", "del", name])


def set_sysctl(key: str, value: str) -> str:
    """Write ``/proc/sys/<key>``; return the previous value."""
    path = Path("/proc/sys", key)
    old = path.read_text().strip()
    if old != value:
        path.write_text(value)
    return old
