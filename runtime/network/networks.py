"""Networks' lifecycle (``refrt network create/rm/prune/ls/inspect``) and what of a root is left on the host.

Why apart from ``attachment``: these functions decide which networks exist; a container's endpoints on them are
``attachment``'s. ``prune_networks`` is the one place reaching across, to reap the state of containers that
vanished without a detach (a killed monitor) before it judges which networks are unused.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Any

from runtime.errors import ConflictError, RefrtError, UsageError
from runtime.locking import locked
from runtime.network import bridge, firewall, ipam
from runtime.network.attachment import detach_locked
from runtime.network.errors import NetworkInUse
from runtime.network.fabric import bring_up, host_locked, tear_down
from runtime.network.records import (
    PSEUDO_MODES,
    HasPaths,
    alive,
    default_bridge_name,
    default_network,
    find,
    now,
    root_locked,
)
from runtime.network.store import NetworkRecord, NetworkStore, root_tag

RESERVED_NAMES = ("bridge", "host", "none", "default")


def find_network(ctx: HasPaths, ref: str) -> NetworkRecord:
    """A network by name, full id or unique id prefix (``bridge`` is the default network)."""
    store = NetworkStore(ctx.paths)
    return find(store, ref)


def create_network(ctx: HasPaths, name: str, *, subnet: str = "", gateway: str = "", internal: bool = False,
                   labels: dict[str, str] | None = None) -> NetworkRecord:
    """``network create``: a record plus its own bridge ``rf-<id12>``, isolated from other networks."""
    if name in RESERVED_NAMES:
        raise NetworkInUse(f"network with name {name} already exists")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UsageError(f"invalid network name {name!r}")
    net_subnet = None
    if subnet:
        try:
            net_subnet = ipaddress.IPv4Network(subnet, strict=False)
        except ValueError:
            raise UsageError(f"invalid subnet {subnet!r}") from None
        if net_subnet.prefixlen > 30:
            raise UsageError(f"subnet {subnet} is too small")
    if gateway:
        if net_subnet is None:
            raise UsageError("--gateway needs --subnet")
        try:
            if ipaddress.IPv4Address(gateway) not in net_subnet:
                raise UsageError(f"gateway {gateway} is not in subnet {net_subnet}")
        except ValueError:
            raise UsageError(f"invalid gateway {gateway!r}") from None
    with root_locked(ctx.paths) as store:
        if any(r.name == name for r in store.networks()):
            raise NetworkInUse(f"network with name {name} already exists")
        with host_locked():
            if net_subnet is not None:
                ipam.check_subnet_free(store, net_subnet)
            else:
                net_subnet = ipam.choose_subnet(store)
            net_id = secrets.token_hex(32)
            rec = NetworkRecord(id=net_id, name=name, subnet=str(net_subnet),
                                gateway=gateway or str(next(net_subnet.hosts())), bridge=f"rf-{net_id[:12]}",
                                internal=internal, labels=dict(labels or {}), created=now(), subnet_fixed=True)
            store.save_network(rec)
            try:
                bring_up(store, rec)
            except RefrtError:
                tear_down(store, rec)
                store.delete_network(rec.id)
                raise
        return rec


def remove_network(ctx: HasPaths, ref: str) -> NetworkRecord:
    """``network rm``: refused for the default network and for networks with endpoints."""
    if ref in PSEUDO_MODES:
        raise ConflictError(f"{ref} is a pre-defined network and cannot be removed")
    with root_locked(ctx.paths) as store:
        rec = find(store, ref)
        if rec.default:
            raise ConflictError(f"{rec.name} is a pre-defined network and cannot be removed")
        if store.endpoints(rec.id):
            raise NetworkInUse(f"error while removing network: network {rec.name} id {rec.id} has active endpoints")
        tear_down(store, rec)
        store.delete_network(rec.id)
        return rec


def prune_networks(ctx: HasPaths, labels: dict[str, str] | None = None) -> list[str]:
    """``network prune``: remove user networks with no endpoints (matching all ``labels`` if given).

    First reaps the network state of containers that no longer exist (removed while their detach could not run,
    e.g. a killed monitor), so their endpoints do not keep networks alive."""
    removed = []
    with root_locked(ctx.paths) as store:
        for crec in store.containers():
            if not (ctx.paths.containers / crec.container_id).exists() and not alive(crec):
                detach_locked(store, crec.container_id)
        for rec in store.networks():
            if rec.default or store.endpoints(rec.id):
                continue
            if labels and any(rec.labels.get(k) != v for k, v in labels.items()):
                continue
            tear_down(store, rec)
            store.delete_network(rec.id)
            removed.append(rec.name)
    return removed


def list_networks(ctx: HasPaths) -> list[dict[str, Any]]:
    """``network ls`` rows: the default network, ``host``, ``none`` and the user networks, by name."""
    store = NetworkStore(ctx.paths)
    recs = store.networks()
    if not any(r.default for r in recs):
        with locked(ctx.paths.locks, "network"):
            recs = [default_network(store), *recs]
    tag = root_tag(ctx.paths)
    rows = [{"ID": r.id, "Name": r.name, "Driver": "bridge", "Scope": "local", "Labels": r.labels,
             "Internal": r.internal} for r in recs]
    for mode in PSEUDO_MODES:
        pseudo_id = (tag + mode.encode().hex() + "0" * 64)[:64]
        rows.append({"ID": pseudo_id, "Name": mode, "Driver": "null" if mode == "none" else "host",
                     "Scope": "local", "Labels": {}, "Internal": False})
    return sorted(rows, key=lambda r: str(r["Name"]))  # docker's client sorts by name


def inspect_network(ctx: HasPaths, ref: str) -> dict[str, Any]:
    """``network inspect``, in docker's shape (``host`` and ``none`` included, as docker shows them)."""
    store = NetworkStore(ctx.paths)
    pseudo = next((r for r in list_networks(ctx) if r["Name"] in PSEUDO_MODES and ref in (r["Name"], r["ID"])),
                  None)
    if pseudo is not None:
        return {"Name": pseudo["Name"], "Id": pseudo["ID"], "Created": "", "Scope": "local",
                "Driver": pseudo["Driver"], "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None,
                                                                         "Config": []},
                "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
                "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {}}
    rec = find(store, ref)
    members = {
        ep.container_id: {"Name": ep.container_name, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
                          "IPv4Address": f"{ep.ip}/{ep.prefix}", "IPv6Address": ""}
        for ep in store.endpoints(rec.id)
    }
    config = [{"Subnet": rec.subnet, "Gateway": rec.gateway}] if rec.subnet else []
    options = {"com.docker.network.bridge.name": rec.bridge}
    if rec.default:
        options["com.docker.network.bridge.default_bridge"] = "true"
    return {
        "Name": rec.name, "Id": rec.id, "Created": rec.created, "Scope": "local", "Driver": "bridge",
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": rec.internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": members, "Options": options, "Labels": rec.labels,
    }


def leftovers(ctx: HasPaths) -> list[str]:
    """Everything of this root's networking still on the host: tagged rules, chains, bridges, veths.

    User networks still existing keep their bridge and rules by design; they are listed too, so a test that
    removed everything expects an empty list."""
    store = NetworkStore(ctx.paths)
    found = firewall.leftovers(root_tag(ctx.paths))
    names = {n.bridge for n in store.networks()}
    names.add(default_bridge_name(ctx.paths, store.config()))
    found += [f"bridge {b}" for b in sorted(names) if bridge.exists(b)]
    ifaces = [p.name for p in Path("/sys/class/net").iterdir()]
    for rec in store.containers():
        found.append(f"record {rec.container_id}")
        found += [f"veth {i}" for i in ifaces if i.startswith(f"rv{rec.container_id[:10]}")]
    return found
