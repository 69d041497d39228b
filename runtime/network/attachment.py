"""A container's attachment: which namespace it joins, its veth pairs, addresses, published ports, hosts files.

Why apart from ``networks``: this is the per-container path the container code takes on every run, stop and
reconcile (``netns_path_for``, ``attach``, ``detach``), plus ``network connect/disconnect``. It changes endpoints
on networks that exist, bringing the default bridge up with its first container and down with its last
(through ``fabric``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

from runtime.errors import ConflictError, RefrtError, UsageError
from runtime.network import bridge, firewall, hosts, ipam, netns, ports
from runtime.network.errors import ContainerNotAttached, NetworkError
from runtime.network.fabric import apply_firewall, bring_up, drop_base_if_unused, host_locked, tear_down
from runtime.network.records import (
    PSEUDO_MODES,
    HasPaths,
    alive,
    container_exists,
    containers_dir,
    find,
    find_container,
    root_locked,
)
from runtime.network.store import DEFAULT_NETWORK_NAME, ContainerNet, Endpoint, NetworkRecord, NetworkStore, PortBinding
from runtime.paths import Paths
from runtime.spec import NetworkRequest


def netns_path_for(ctx: HasPaths, request: NetworkRequest) -> str | None:
    """The network namespace a new container must join instead of getting its own, or ``None``.

    ``host``: the calling process's own namespace (``/proc/<caller pid>/ns/net``; joining it is the same as not
    unsharing CLONE_NEWNET). ``container:NAME``: the running container's namespace, found through the record
    :func:`attach` wrote for it (its pid, checked against the namespace inode recorded then, so a reused pid is
    caught). Raises ``ConflictError`` when that container is not running, ``NotFoundError`` when unknown.
    Every other mode (``bridge``, ``none``, a user network) returns ``None``: make a new namespace.
    """
    mode = request.mode or "bridge"
    if mode == "host":
        return f"/proc/{os.getpid()}/ns/net"
    if mode.startswith("container:"):
        ref = mode.partition(":")[2]
        try:
            target = find_container(NetworkStore(ctx.paths), ref)
        except ContainerNotAttached:
            if container_exists(ctx.paths, ref):  # known but not running: detach dropped its record
                raise ConflictError(f"cannot join network of a non running container: {ref}") from None
            raise
        if not alive(target):
            raise ConflictError(f"cannot join network of a non running container: {target.name}")
        return netns.netns_path(target.pid)
    return None


def _ifname_index(store: NetworkStore, rec: ContainerNet) -> int:
    used = set()
    for net_id in rec.networks:
        ep = store.endpoint(net_id, rec.container_id)
        if ep is not None:
            used.add(int(ep.ifname[3:]))
    index = 0
    while index in used:
        index += 1
    return index


def _add_endpoint(store: NetworkStore, net: NetworkRecord, rec: ContainerNet, aliases: list[str]) -> Endpoint:
    """Address, veth pair and ``ethN`` for ``rec`` on ``net``; recorded before the kernel work so a failure
    half-way is undone by :func:`detach`."""
    index = _ifname_index(store, rec)
    cid = rec.container_id
    ip = ipam.allocate(store, net.id, net.subnet, net.gateway, cid)
    prefix = ipaddress.IPv4Network(net.subnet).prefixlen
    names = [n for n in (*aliases, rec.name.lstrip("/"), cid[:12], rec.hostname) if n]
    ep = Endpoint(network_id=net.id, container_id=cid, container_name=rec.name.lstrip("/"), ip=ip, prefix=prefix,
                  gateway=net.gateway, mac=ipam.mac_for(ip), host_veth=netns.host_veth_name(cid, index),
                  ifname=f"eth{index}", endpoint_id=secrets.token_hex(32),
                  aliases=list(dict.fromkeys(names)) if not net.default else list(aliases), hostname=rec.hostname)
    store.save_endpoint(ep)
    if net.id not in rec.networks:
        rec.networks.append(net.id)
    store.save_container(rec)
    netns.create_veth(ep.host_veth, ep.ifname, ep.mac, net.bridge, rec.pid)
    first = index == 0 and not net.internal
    netns.configure_peer(rec.pid, ep.ifname, ip, prefix, net.gateway if first else None)
    return ep


def _remove_endpoint(store: NetworkStore, net_id: str, container_id: str, pid: int = 0) -> None:
    ep = store.endpoint(net_id, container_id)
    if ep is not None:
        if pid:
            netns.remove_in_netns(pid, ep.ifname)
        netns.delete_links([ep.host_veth])
    ipam.release(store, net_id, container_id)
    store.delete_endpoint(net_id, container_id)


def _publish(store: NetworkStore, rec: ContainerNet, net: NetworkRecord, ep: Endpoint,
             requests: list[ports.PortRequest]) -> None:
    if not requests:
        return
    if net.internal:
        raise ConflictError(f"cannot publish ports on internal network {net.name}")
    with host_locked():  # check and claim the host ports atomically with respect to every root
        bindings = ports.assign(requests, firewall.published_host_ports())
        for b in bindings:
            b.ip, b.network_id = ep.ip, net.id
        rec.ports = bindings
        store.save_container(rec)
        apply_firewall(store)  # the chains now with its ports too


def _user_network_ids(store: NetworkStore, rec: ContainerNet) -> list[str]:
    by_id = {n.id: n for n in store.networks()}
    return [i for i in rec.networks if i in by_id and not by_id[i].default]


def _write_hosts(store: NetworkStore, rec: ContainerNet) -> None:
    """Rewrite one container's hosts file from the current endpoints (in place)."""
    own, peers = [], []
    for net_id in rec.networks:
        ep = store.endpoint(net_id, rec.container_id)
        if ep is not None:
            own.append((ep.ip, [rec.hostname or rec.container_id[:12]]))
    for net_id in _user_network_ids(store, rec):
        for ep in store.endpoints(net_id):
            if ep.container_id != rec.container_id:
                peers.append((ep.ip, [ep.container_name, *ep.aliases]))
    text = hosts.render_hosts(own, peers, rec.extra_hosts)
    hosts.write_in_place(containers_dir(store.paths, rec.container_id) / "hosts", text)


def _refresh_network_hosts(store: NetworkStore, net_ids: list[str]) -> None:
    """Rewrite the hosts file of every container on these networks (names must follow joins and leaves)."""
    seen = set()
    for net_id in net_ids:
        for ep in store.endpoints(net_id):
            if ep.container_id in seen:
                continue
            seen.add(ep.container_id)
            rec = store.container(ep.container_id)
            if rec is not None:
                _write_hosts(store, rec)


def _copy_files_from(paths: Paths, source_dir: Path, container_id: str) -> None:
    for name in ("hosts", "resolv.conf"):
        try:
            text = (source_dir / name).read_text()
        except OSError:
            continue
        hosts.write_in_place(containers_dir(paths, container_id) / name, text)


def attach(ctx: HasPaths, container_id: str, name: str, pid: int, request: NetworkRequest) -> dict[str, Any]:
    """Network the container whose child ``pid`` already has its own network namespace (see module doc).

    Errors (unknown network, port in use, bad ``-p``) are raised before the command runs, and anything already
    set up for the container is undone first.
    """
    mode = request.mode or "bridge"
    requests = ports.requests_for(request.publish, request.publish_all, request.exposed)
    hostname = request.hostname or container_id[:12]
    cdir = containers_dir(ctx.paths, container_id)
    with root_locked(ctx.paths) as store:
        rec = ContainerNet(container_id=container_id, name=name.lstrip("/"), mode=mode, pid=pid,
                           netns_inode=netns.netns_inode(pid), hostname=hostname, exposed=list(request.exposed),
                           extra_hosts=list(request.extra_hosts), dns=list(request.dns))
        if mode == "host" or mode.startswith("container:"):
            if requests and mode != "host":  # docker: published ports are discarded (with a warning) for host
                raise UsageError("conflicting options: port publishing and the container type network mode")
            store.save_container(rec)
            if mode == "host":
                _copy_files_from(ctx.paths, Path("/etc"), container_id)
            else:
                target = find_container(store, mode.partition(":")[2])
                _copy_files_from(ctx.paths, containers_dir(ctx.paths, target.container_id), container_id)
            return _settings(store, rec)
        hosts.write_in_place(cdir / "resolv.conf", hosts.render_resolv(request.dns))
        if mode == "none":  # the container code's hosts file (localhost, 127.0.1.1 hostname) stays as it is
            store.save_container(rec)
            return _settings(store, rec)
        net = find(store, "bridge" if mode == "bridge" else mode)
        if net.default and request.aliases:
            raise UsageError("network-scoped alias is supported only for containers in user defined networks")
        try:
            # a new bridge: its rules are installed while the veth is made, all under the host lock
            with contextlib.nullcontext() if bridge.exists(net.bridge) else host_locked():
                rules_done = bring_up(store, net, background=True)
                try:
                    ep = _add_endpoint(store, net, rec, [] if net.default else list(request.aliases))
                finally:
                    rules_done()
            _publish(store, rec, net, ep, requests)
            _refresh_network_hosts(store, [net.id])
            _write_hosts(store, rec)
        except (RefrtError, OSError) as exc:
            detach_locked(store, container_id)
            if isinstance(exc, OSError):
                raise NetworkError(f"attaching {name} to {net.name}: {exc}") from exc
            raise
        return _settings(store, rec)


def detach_locked(store: NetworkStore, container_id: str) -> None:
    """Forget the container's endpoints and addresses, then change the kernel in as few runs as possible: the
    last container of the default network takes the bridge, its veth host ends and (for the root's last bridge)
    the chains with it - one ``iptables-restore`` (links go over netlink); otherwise, if it published ports, one
    ``iptables-restore``."""
    rec = store.container(container_id)
    net_ids = list(rec.networks) if rec else []
    for net in store.networks():
        if net.id not in net_ids and (store.endpoint(net.id, container_id) or
                                      container_id in store.allocations(net.id).values()):
            net_ids.append(net.id)
    veths = []
    for net_id in net_ids:
        ep = store.endpoint(net_id, container_id)
        if ep is not None:
            veths.append(ep.host_veth)
        ipam.release(store, net_id, container_id)
        store.delete_endpoint(net_id, container_id)
    store.delete_container(container_id)
    _refresh_network_hosts(store, net_ids)
    going = [net for net in store.networks()  # also after a failed bring-up, before any endpoint existed
             if net.default and not store.endpoints(net.id) and (net.id in net_ids or bridge.exists(net.bridge))]
    for net in going:
        tear_down(store, net, tuple(veths))
        veths = []
    netns.delete_links(veths)
    if going:
        return  # the tear-down rewrote (or removed) the chains without this container's rules
    # a container that never had a bridge (none, host, container:X) changed nothing the rules depend on
    shared = rec is not None and (rec.mode in PSEUDO_MODES or rec.mode.startswith("container:"))
    if rec is None or rec.ports or (not net_ids and not shared):
        if any(bridge.exists(n.bridge) for n in store.networks()):
            apply_firewall(store)
        else:
            drop_base_if_unused(store)


def detach(ctx: HasPaths, container_id: str) -> None:
    """Undo :func:`attach`: veth (deleting the host end is enough), address, port rules, hosts entries on the
    other containers. Idempotent: a second call, or one for a container never attached, does nothing."""
    store = NetworkStore(ctx.paths)
    if store.container(container_id) is None and not any(
        store.endpoint(n.id, container_id) for n in store.networks()
    ):
        return
    with root_locked(ctx.paths) as store:
        detach_locked(store, container_id)


def connect(ctx: HasPaths, network_ref: str, container_ref: str, aliases: list[str] | None = None) -> Endpoint:
    """``network connect``: one more ``ethN`` in a running container."""
    with root_locked(ctx.paths) as store:
        rec = find_container(store, container_ref)
        net = find(store, network_ref)
        if rec.mode in ("none", "host") or rec.mode.startswith("container:"):
            raise ConflictError(f"container sharing network namespace or with --network {rec.mode} "
                                "cannot be connected to networks")
        if not alive(rec):
            raise ConflictError(f"container {rec.name} is not running")
        if net.id in rec.networks:
            raise ConflictError(f"endpoint with name {rec.name} already exists in network {net.name}")
        bring_up(store, net)
        try:
            ep = _add_endpoint(store, net, rec, [] if net.default else list(aliases or []))
        except (RefrtError, OSError):
            _remove_endpoint(store, net.id, rec.container_id, rec.pid)
            rec.networks = [n for n in rec.networks if n != net.id]
            store.save_container(rec)
            raise
        _refresh_network_hosts(store, rec.networks)
        _write_hosts(store, rec)
        return ep


def disconnect(ctx: HasPaths, network_ref: str, container_ref: str) -> None:
    """``network disconnect``: remove the container's interface on that network (and ports published on it)."""
    with root_locked(ctx.paths) as store:
        rec = find_container(store, container_ref)
        net = find(store, network_ref)
        if net.id not in rec.networks:
            raise ConflictError(f"container {rec.name} is not connected to network {net.name}")
        _remove_endpoint(store, net.id, rec.container_id, rec.pid if alive(rec) else 0)
        rec.networks = [n for n in rec.networks if n != net.id]
        kept = [b for b in rec.ports if b.network_id != net.id]
        if len(kept) != len(rec.ports):
            rec.ports = kept
            apply_firewall(store)
        store.save_container(rec)
        _refresh_network_hosts(store, [net.id, *rec.networks])
        _write_hosts(store, rec)
        if net.default and not store.endpoints(net.id):
            tear_down(store, net)


def _settings(store: NetworkStore, rec: ContainerNet) -> dict[str, Any]:
    networks: dict[str, Any] = {}
    by_id = {n.id: n for n in store.networks()}
    for net_id in rec.networks:
        ep = store.endpoint(net_id, rec.container_id)
        net = by_id.get(net_id)
        if ep is None or net is None:
            continue
        networks[net.name] = {
            "IPAMConfig": None, "Links": None, "Aliases": ep.aliases or None, "NetworkID": net.id,
            "EndpointID": ep.endpoint_id, "Gateway": ep.gateway, "IPAddress": ep.ip, "IPPrefixLen": ep.prefix,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": ep.mac,
            "DriverOpts": None,
        }
    if rec.mode in PSEUDO_MODES:
        networks[rec.mode] = {"NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
                              "IPPrefixLen": 0, "MacAddress": "", "Aliases": None}
    first: dict[str, Any] = next(iter(networks.values()), {})
    default_only = bool(networks) and DEFAULT_NETWORK_NAME in networks
    return {
        "Bridge": "", "SandboxID": rec.container_id, "HairpinMode": False,
        "SandboxKey": "" if rec.mode == "host" else netns.netns_path(rec.pid),
        "Ports": ports.docker_ports(rec.ports, rec.exposed),
        "Gateway": first.get("Gateway", "") if default_only else "",
        "IPAddress": first.get("IPAddress", "") if default_only else "",
        "IPPrefixLen": first.get("IPPrefixLen", 0) if default_only else 0,
        "MacAddress": first.get("MacAddress", "") if default_only else "",
        "Networks": networks,
    }


def settings(ctx: HasPaths, container_id: str) -> dict[str, Any] | None:
    """Current ``NetworkSettings`` of a container (reflects connect/disconnect), ``None`` if never attached."""
    store = NetworkStore(ctx.paths)
    rec = store.container(container_id)
    return _settings(store, rec) if rec else None


def container_ports(ctx: HasPaths, container_ref: str) -> list[PortBinding]:
    """The published ports of a container (``refrt port``, ``ps``)."""
    return list(find_container(NetworkStore(ctx.paths), container_ref).ports)


def net_stats(pid: int) -> dict[str, dict[str, int]]:
    """Net I/O counters of the container whose process is ``pid`` (``stats``), ``lo`` excluded."""
    return {k: v for k, v in netns.net_dev_stats(pid).items() if k != "lo"}
