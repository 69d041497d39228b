"""Network records on disk, under ``root/networks/`` (the ``paths.networks`` directory).

Layout, one JSON file per object so a crash leaves at most one file half-done (writes are atomic renames of
files refrt alone owns)::

    networks/config.json                 optional daemon-ish settings: default bridge name/subnet, address pool
    networks/<net-id>/network.json       a network (name, subnet, gateway, bridge interface, internal, labels)
    networks/<net-id>/ipam.json          {"allocated": {"10.210.3.2": "<container-id>"}}
    networks/<net-id>/endpoints/<cid>.json   one container's endpoint on that network
    networks/containers/<cid>.json       one container's network state: pid, netns inode, mode, published ports

Every read-modify-write of these files happens under ``locked(paths.locks, "network")`` (``records.root_locked``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.paths import DEFAULT_ROOT, Paths

DEFAULT_NETWORK_NAME = "bridge"
CONTAINERS_DIR = "containers"


def root_tag(paths: Paths) -> str:
    """8 hex characters naming this refrt root in iptables comments/chains and in interface names.

    Two temporary roots used by concurrent tests get different tags, so neither ever touches the other's rules.
    """
    return hashlib.sha256(str(paths.root).encode()).hexdigest()[:8]


def is_default_root(paths: Paths) -> bool:
    return paths.root == DEFAULT_ROOT


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (temporary file + rename) so readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with path.open() as fh:
        return json.load(fh)


@dataclass
class NetworkRecord:
    """One network. ``bridge`` is the host interface; for the default network it exists only while in use."""

    id: str
    name: str
    subnet: str
    gateway: str
    bridge: str
    internal: bool = False
    default: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    subnet_fixed: bool = True

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass
class Endpoint:
    """One container's interface on one network."""

    network_id: str
    container_id: str
    container_name: str
    ip: str
    prefix: int
    gateway: str
    mac: str
    host_veth: str
    ifname: str
    endpoint_id: str
    aliases: list[str] = field(default_factory=list)
    hostname: str = ""


@dataclass
class PortBinding:
    """One published port: host ``host_ip:host_port`` forwarded to ``container_port/proto`` on ``ip``."""

    container_port: int
    proto: str
    host_ip: str
    host_port: int
    ip: str = ""
    network_id: str = ""


@dataclass
class ContainerNet:
    """What refrt knows about one container's networking (enough for ``detach``, ``connect`` and ``port``)."""

    container_id: str
    name: str
    mode: str
    pid: int
    netns_inode: int
    hostname: str = ""
    ports: list[PortBinding] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)  # network ids, in attach order (eth0, eth1...)


class NetworkStore:
    """Reads and writes the records above for one refrt root."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.base = paths.networks

    # -- networks ---------------------------------------------------------------------------------------
    def network_dir(self, net_id: str) -> Path:
        return self.base / net_id

    def save_network(self, rec: NetworkRecord) -> None:
        write_json(self.network_dir(rec.id) / "network.json", asdict(rec))

    def networks(self) -> list[NetworkRecord]:
        out: list[NetworkRecord] = []
        if not self.base.is_dir():
            return out
        for entry in sorted(self.base.iterdir()):
            f = entry / "network.json"
            if f.is_file():
                out.append(NetworkRecord(**read_json(f)))
        return sorted(out, key=lambda r: (not r.default, r.created, r.name))

    def delete_network(self, net_id: str) -> None:
        shutil.rmtree(self.network_dir(net_id), ignore_errors=True)

    # -- addresses --------------------------------------------------------------------------------------
    def allocations(self, net_id: str) -> dict[str, str]:
        f = self.network_dir(net_id) / "ipam.json"
        return dict(read_json(f)["allocated"]) if f.is_file() else {}

    def save_allocations(self, net_id: str, allocated: dict[str, str]) -> None:
        write_json(self.network_dir(net_id) / "ipam.json", {"allocated": allocated})

    # -- endpoints --------------------------------------------------------------------------------------
    def save_endpoint(self, ep: Endpoint) -> None:
        write_json(self.network_dir(ep.network_id) / "endpoints" / f"{ep.container_id}.json", asdict(ep))

    def endpoints(self, net_id: str) -> list[Endpoint]:
        d = self.network_dir(net_id) / "endpoints"
        if not d.is_dir():
            return []
        return [Endpoint(**read_json(f)) for f in sorted(d.glob("*.json"))]

    def endpoint(self, net_id: str, container_id: str) -> Endpoint | None:
        f = self.network_dir(net_id) / "endpoints" / f"{container_id}.json"
        return Endpoint(**read_json(f)) if f.is_file() else None

    def delete_endpoint(self, net_id: str, container_id: str) -> None:
        (self.network_dir(net_id) / "endpoints" / f"{container_id}.json").unlink(missing_ok=True)

    # -- containers -------------------------------------------------------------------------------------
    def container_file(self, container_id: str) -> Path:
        return self.base / CONTAINERS_DIR / f"{container_id}.json"

    def save_container(self, rec: ContainerNet) -> None:
        write_json(self.container_file(rec.container_id), asdict(rec))

    def container(self, container_id: str) -> ContainerNet | None:
        f = self.container_file(container_id)
        if not f.is_file():
            return None
        data = read_json(f)
        data["ports"] = [PortBinding(**p) for p in data.get("ports", [])]
        return ContainerNet(**data)

    def containers(self) -> list[ContainerNet]:
        d = self.base / CONTAINERS_DIR
        if not d.is_dir():
            return []
        out = []
        for f in sorted(d.glob("*.json")):
            rec = self.container(f.stem)
            if rec is not None:
                out.append(rec)
        return out

    def delete_container(self, container_id: str) -> None:
        self.container_file(container_id).unlink(missing_ok=True)

    # -- settings ---------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        f = self.base / "config.json"
        data = read_json(f) if f.is_file() else {}
        return data if isinstance(data, dict) else {}
