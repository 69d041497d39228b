"""Linux bridges: one per network, holding the gateway address; created up, removed with the network.

``route_localnet`` is switched on for every refrt bridge so a DNAT of ``127.0.0.1:PORT`` to a container can leave
through it (the kernel otherwise drops packets with a loopback source on a non-loopback interface); the
``127.0.0.0/8`` source is then masqueraded (see ``firewall``).
"""

from __future__ import annotations

from pathlib import Path

from runtime.network import rtnl


def exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def create(name: str, gateway: str, prefix: int) -> None:
    """Create bridge ``name`` with ``gateway/prefix`` and bring it up (what exists already is kept)."""
    rtnl.ensure_bridge(name, gateway, prefix)
    set_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")


def set_sysctl(key: str, value: str) -> str:
    """Write ``/proc/sys/<key>``; return the previous value."""
    path = Path("/proc/sys", key)
    old = path.read_text().strip()
    if old != value:
        path.write_text(value)
    return old
