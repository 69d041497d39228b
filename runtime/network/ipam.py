"""Address management: which subnet a new network gets, and which address a new endpoint gets.

Subnets: a network created without ``--subnet`` (and the default bridge unless ``REFRT_BRIDGE_SUBNET`` or
``networks/config.json`` fixes it) takes the first block of the pool (``REFRT_SUBNET_POOL``, default
``10.210.0.0/16`` cut into ``/24``) that overlaps no address or route on the host and no network of this root.
The host's own addresses are the registry shared by all refrt roots: a bridge gets its gateway address in the
same critical section (the host-wide lock) that chose its subnet, so two roots never pick the same block.

Addresses: per network, ``ipam.json`` maps address -> container id; the lowest free address is handed out and
freed on release, all under the root's network lock, so concurrent ``run`` never share one.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable

from runtime.network import rtnl
from runtime.network.errors import NetworkInUse, PoolExhausted
from runtime.network.store import NetworkStore

DEFAULT_POOL = "10.210.0.0/16"
DEFAULT_POOL_PREFIX = 24

IPv4Net = ipaddress.IPv4Network


def pool(config: dict[str, object]) -> tuple[IPv4Net, int]:
    """The address pool and the prefix length of the blocks cut from it (env beats config beats default)."""
    value = os.environ.get("REFRT_SUBNET_POOL") or str(config.get("pool") or DEFAULT_POOL)
    base, _, size = value.partition(",")
    prefix = int(size) if size else int(str(config.get("pool_prefix") or DEFAULT_POOL_PREFIX))
    return ipaddress.IPv4Network(base, strict=False), prefix


def host_networks() -> list[IPv4Net]:
    """Every IPv4 network the host already uses: its interface addresses' prefixes and its routes (netlink)."""
    return [n for n in rtnl.ipv4_networks() if not n.is_loopback]


def overlapping(candidate: IPv4Net, used: Iterable[IPv4Net]) -> IPv4Net | None:
    return next((u for u in used if candidate.overlaps(u)), None)


def choose_subnet(store: NetworkStore, exclude: Iterable[IPv4Net] = ()) -> IPv4Net:
    """First free block of the pool. Call with the host-wide lock held, then give a bridge its address."""
    base, prefix = pool(store.config())
    used = host_networks() + [ipaddress.IPv4Network(n.subnet) for n in store.networks() if n.subnet]
    used += list(exclude)
    for candidate in base.subnets(new_prefix=prefix):
        if overlapping(candidate, used) is None:
            return candidate
    raise PoolExhausted(f"no free /{prefix} left in address pool {base}")


def check_subnet_free(store: NetworkStore, subnet: IPv4Net, own_id: str = "") -> None:
    """Refuse a ``--subnet`` that overlaps the host's networks or another refrt network (docker's message)."""
    used = host_networks() + [
        ipaddress.IPv4Network(n.subnet) for n in store.networks() if n.id != own_id and n.subnet
    ]
    clash = overlapping(subnet, used)
    if clash is not None:
        raise NetworkInUse(f"invalid pool request: pool {subnet} overlaps with other one on this address space")


def allocate(store: NetworkStore, net_id: str, subnet: str, gateway: str, container_id: str) -> str:
    """Give ``container_id`` the lowest free address of the network (the same one again if it has one)."""
    allocated = store.allocations(net_id)
    for addr, owner in allocated.items():
        if owner == container_id:
            return addr
    net = ipaddress.IPv4Network(subnet)
    for host in net.hosts():
        addr = str(host)
        if addr != gateway and addr not in allocated:
            allocated[addr] = container_id
            store.save_allocations(net_id, allocated)
            return addr
    raise PoolExhausted(f"no available IPv4 address left in network {subnet}")


def release(store: NetworkStore, net_id: str, container_id: str) -> None:
    """Free every address ``container_id`` holds in the network (idempotent)."""
    allocated = store.allocations(net_id)
    kept = {a: c for a, c in allocated.items() if c != container_id}
    if kept != allocated:
        store.save_allocations(net_id, kept)


def mac_for(ip: str) -> str:
    """Docker's scheme: 02:42 followed by the four address bytes, unique wherever the address is."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)

