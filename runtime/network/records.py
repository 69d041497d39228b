"""Finding this root's network records: networks and containers by name, id or id prefix, the default
network's record (made on first lookup), and whether a container's namespace is still the one recorded.

Why a module of its own: the network lifecycle (``networks``) and a container's attachment (``attachment``)
both look records up; keeping the lookups here gives one implementation without the two importing each other.
The root lock (:func:`root_locked`) lives here for the same reason: every read-modify-write of the records in
``store`` happens inside it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from runtime.locking import locked
from runtime.network import netns
from runtime.network.errors import ContainerNotAttached, NetworkNotFound
from runtime.network.store import (
    DEFAULT_NETWORK_NAME,
    ContainerNet,
    NetworkRecord,
    NetworkStore,
    is_default_root,
    root_tag,
)
from runtime.paths import Paths

PSEUDO_MODES = ("host", "none")


class HasPaths(Protocol):
    @property
    def paths(self) -> Paths: ...


@contextlib.contextmanager
def root_locked(paths: Paths) -> Iterator[NetworkStore]:
    """The root's lock: every change to this root's networking state happens inside it."""
    with locked(paths.locks, "network"):
        yield NetworkStore(paths)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def default_bridge_name(paths: Paths, config: dict[str, Any]) -> str:
    name = os.environ.get("REFRT_BRIDGE_NAME") or str((config.get("bridge") or {}).get("name") or "")
    if name:
        return name
    return "refrt0" if is_default_root(paths) else f"rf0-{root_tag(paths)}"


def default_network(store: NetworkStore) -> NetworkRecord:
    """The ``bridge`` network's record, made on first use. Its subnet is fixed by ``REFRT_BRIDGE_SUBNET`` or
    ``networks/config.json`` (``{"bridge": {"subnet": ..., "gateway": ..., "name": ...}}``), else chosen from the
    pool each time its bridge is brought up."""
    for rec in store.networks():
        if rec.default:
            return rec
    config = store.config()
    bridge_cfg = config.get("bridge") or {}
    subnet = os.environ.get("REFRT_BRIDGE_SUBNET") or str(bridge_cfg.get("subnet") or "")
    gateway = str(bridge_cfg.get("gateway") or "")
    if subnet:
        net = ipaddress.IPv4Network(subnet, strict=False)
        gateway = gateway or str(next(net.hosts()))
        subnet = str(net)
    rec = NetworkRecord(id=secrets.token_hex(32), name=DEFAULT_NETWORK_NAME, subnet=subnet, gateway=gateway,
                        bridge=default_bridge_name(store.paths, config), default=True, created=now(),
                        subnet_fixed=bool(subnet))
    store.save_network(rec)
    return rec


def find(store: NetworkStore, ref: str) -> NetworkRecord:
    if ref == DEFAULT_NETWORK_NAME:
        return default_network(store)
    nets = store.networks()
    for rec in nets:
        if ref in (rec.name, rec.id):
            return rec
    matches = [r for r in nets if len(ref) >= 3 and r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise NetworkNotFound(f"network {ref} not found")


def containers_dir(paths: Paths, container_id: str) -> Path:
    return paths.containers / container_id


def find_container(store: NetworkStore, ref: str) -> ContainerNet:
    recs = store.containers()
    for rec in recs:
        if ref in (rec.container_id, rec.name, rec.name.lstrip("/"), "/" + rec.name.lstrip("/")):
            return rec
    matches = [r for r in recs if r.container_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise ContainerNotAttached(f"No such container: {ref}")


def container_exists(paths: Paths, ref: str) -> bool:
    """Whether the container code knows ``ref`` (id, id prefix or name in ``containers/*/config.json``)."""
    if not paths.containers.is_dir():
        return False
    for d in paths.containers.iterdir():
        if d.name.startswith(ref):
            return True
        try:
            if json.loads((d / "config.json").read_text()).get("name", "").lstrip("/") == ref.lstrip("/"):
                return True
        except (OSError, ValueError):
            continue
    return False


def alive(rec: ContainerNet) -> bool:
    try:
        return rec.pid > 0 and netns.netns_inode(rec.pid) == rec.netns_inode
    except OSError:
        return False
