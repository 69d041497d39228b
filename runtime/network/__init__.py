"""refrt networking: bridges, veth pairs, addresses, published ports and name resolution.

Entry points for the container code (see docs/networking.md for the design):

- :func:`netns_path_for` - before the container's child is made: the network namespace it must *join*
  (``host``: the caller's own, ``container:NAME``: that container's), or ``None`` when it needs a new one
  (``bridge``, ``none``, a user network).
- :func:`attach` - in the parent, once the child has its namespace and before its command runs: veth pair,
  ``eth0`` with address/MAC/default route, published ports, ``/etc/hosts`` and ``resolv.conf`` written in place.
  Returns docker-shaped ``NetworkSettings``; :func:`settings` recomputes them later (after connect/disconnect).
- :func:`detach` - on stop/removal/reconcile: undoes all of it; idempotent.

Management (``refrt network ...``): :func:`create_network`, :func:`remove_network`, :func:`list_networks`,
:func:`find_network`, :func:`inspect_network`, :func:`connect`, :func:`disconnect`, :func:`prune_networks`,
:func:`container_ports`.

Design choices (details in docs/networking.md): names on user networks resolve through kept-current hosts files
(no DNS daemon; ``hosts``), published ports are kernel DNAT in PREROUTING and OUTPUT with ``route_localnet`` and
masquerade for 127.0.0.1 and hairpin (no userland proxy; ``firewall``), every iptables rule lives in per-root
chains and carries a ``refrt:<root tag>`` comment.

Concurrency: every change holds the root's lock ``locks/network``; what all roots on a host share (subnet choice
and bridge creation, host ports, the jumps into refrt's chains, ``ip_forward``) is changed under the host-wide
lock ``/run/refrt-net/locks/host``, always taken inside the root lock.

Naming: the default network is ``bridge`` on interface ``refrt0`` for the default root and ``rf0-<roottag>`` for
any other root; user networks get ``rf-<id12>``; host veth ends ``rv<cid10><n>``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from runtime.errors import ConflictError, RefrtError, UsageError
from runtime.locking import locked
from runtime.network import bridge, firewall, hosts, ipam, netns, ports
from runtime.network.errors import (
    ContainerNotAttached,
    NetworkError,
    NetworkInUse,
    NetworkNotFound,
)
from runtime.network.store import (
    DEFAULT_NETWORK_NAME,
    ContainerNet,
    Endpoint,
    NetworkRecord,
    NetworkStore,
    PortBinding,
    is_default_root,
    root_tag,
)
from runtime.paths import Paths
from runtime.spec import NetworkRequest

__all__ = [
    "attach", "connect", "container_ports", "create_network", "detach", "disconnect", "find_network",
    "inspect_network", "leftovers", "list_networks", "net_stats", "netns_path_for", "prune_networks",
    "remove_network", "settings",
]

HOST_LOCKS = firewall.HOST_STATE / "locks"
PSEUDO_MODES = ("host", "none")
RESERVED_NAMES = ("bridge", "host", "none", "default")


class HasPaths(Protocol):
    @property
    def paths(self) -> Paths: ...


_HOST_HELD = threading.local()


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[NetworkStore]:
    """The root's lock: every change to this root's networking state happens inside it."""
    with locked(paths.locks, "network"):
        yield NetworkStore(paths)


@contextlib.contextmanager
def _host_locked() -> Iterator[None]:
    """The host-wide lock, re-entrant per thread, for what all roots share: subnets (bridge creation), host
    ports, the iptables jumps and ``ip_forward``. Taken inside the root lock, never around it."""
    if getattr(_HOST_HELD, "depth", 0):
        _HOST_HELD.depth += 1
        try:
            yield
        finally:
            _HOST_HELD.depth -= 1
        return
    with locked(HOST_LOCKS, "host"):
        _HOST_HELD.depth = 1
        try:
            yield
        finally:
            _HOST_HELD.depth = 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- networks -----------------------------------------------------------------------------------------------

def _default_bridge_name(paths: Paths, config: dict[str, Any]) -> str:
    name = os.environ.get("REFRT_BRIDGE_NAME") or str((config.get("bridge") or {}).get("name") or "")
    if name:
        return name
    return "refrt0" if is_default_root(paths) else f"rf0-{root_tag(paths)}"


def _default_network(store: NetworkStore) -> NetworkRecord:
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
                        bridge=_default_bridge_name(store.paths, config), default=True, created=_now(),
                        subnet_fixed=bool(subnet))
    store.save_network(rec)
    return rec


def _done() -> None:
    return None


def _bring_up(store: NetworkStore, rec: NetworkRecord, *, background: bool = False) -> Callable[[], None]:
    """Make sure the network's bridge, the root's chains and the network's rules exist. Returns the function
    that waits for the rules: with ``background`` the ``iptables-restore`` runs on a thread meanwhile (the
    caller holds the host lock until it has waited), so a container's veth is made while it runs.

    A bridge that exists already is taken as complete: bridge and rules are made together under the host lock,
    and a failure half-way removes the bridge again (see ``_detach_locked``), so the common path - a container
    joining a network in use - costs no iptables call. Otherwise: the bridge over netlink, one
    ``iptables-restore`` for the root's chains (and their jumps, when this is the root's first bridge)."""
    if bridge.exists(rec.bridge):
        return _done
    with _host_locked():
        if not rec.subnet_fixed or not rec.subnet:
            subnet = ipam.choose_subnet(store, exclude=[])
            rec.subnet, rec.gateway = str(subnet), str(next(subnet.hosts()))
            store.save_network(rec)
        else:  # a configured subnet (REFRT_BRIDGE_SUBNET, --subnet after a reboot) must still be free
            ipam.check_subnet_free(store, ipaddress.IPv4Network(rec.subnet), own_id=rec.id)
        first = not any(bridge.exists(n.bridge) for n in store.networks() if n.id != rec.id)
        prefix = ipaddress.IPv4Network(rec.subnet).prefixlen
        bridge.create(rec.bridge, rec.gateway, prefix)
        return _apply_firewall(store, with_base=first, background=background)


def _apply_firewall(store: NetworkStore, *, with_base: bool = False, leaving: tuple[str, ...] = (),
                    background: bool = False) -> Callable[[], None]:
    """Rewrite the root's chains from the records: the rules of every network whose bridge is up (except the
    ``leaving`` ones) and of every container's published ports (see ``firewall.apply_root``). Returns the
    function that waits for it (with ``background``, it runs on a thread; see ``_bring_up``)."""
    tag = root_tag(store.paths)
    nets = {n.id: n for n in store.networks() if n.id not in leaving and bridge.exists(n.bridge)}
    rules = []
    for crec in store.containers():
        for b in crec.ports:
            if b.network_id in nets:
                rules += firewall.port_rules(tag, crec.container_id, nets[b.network_id].bridge, b.host_ip,
                                             b.host_port, b.proto, b.ip, b.container_port)
    for net in nets.values():
        rules += firewall.network_rules(tag, net.id, net.bridge, net.subnet, net.internal)
    with _host_locked():
        if not background:
            firewall.apply_root(tag, rules, with_base=with_base)
            return _done
        failure: list[BaseException] = []

        def work() -> None:
            try:
                firewall.apply_root(tag, rules, with_base=with_base)
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)

        thread = threading.Thread(target=work, name="iptables-restore", daemon=True)
        thread.start()

    def finish() -> None:
        thread.join()
        if failure:
            raise failure[0]

    return finish


def _tear_down(store: NetworkStore, rec: NetworkRecord, veths: tuple[str, ...] = ()) -> None:
    """Remove the network's rules and bridge (and the ``veths`` host ends still on it); the root's chains too
    once it has no bridge left - one ``iptables-restore`` either way."""
    tag = root_tag(store.paths)
    with _host_locked():
        if bridge.exists(rec.bridge):
            if any(bridge.exists(n.bridge) for n in store.networks() if n.id != rec.id):
                _apply_firewall(store, leaving=(rec.id,))
            else:
                firewall.remove_root(tag)
            netns.delete_links([*veths, rec.bridge])
        else:  # never came up (a failed bring-up): whatever of it is installed is found by its tag
            netns.delete_links(list(veths))
            firewall.delete_tagged(firewall.tag_comment(tag, "net", rec.id))
            _drop_base_if_unused(store)
        if rec.default and not rec.subnet_fixed:
            rec.subnet, rec.gateway = "", ""
            if store.network_dir(rec.id).is_dir():
                store.save_network(rec)


def _drop_base_if_unused(store: NetworkStore) -> None:
    """The careful check (the tables are dumped): the root's chains go when none of its bridges is left."""
    if not any(bridge.exists(n.bridge) for n in store.networks()):
        with _host_locked():
            firewall.remove_base(root_tag(store.paths))


def find_network(ctx: HasPaths, ref: str) -> NetworkRecord:
    """A network by name, full id or unique id prefix (``bridge`` is the default network)."""
    store = NetworkStore(ctx.paths)
    return _find(store, ref)


def _find(store: NetworkStore, ref: str) -> NetworkRecord:
    if ref == DEFAULT_NETWORK_NAME:
        return _default_network(store)
    nets = store.networks()
    for rec in nets:
        if ref in (rec.name, rec.id):
            return rec
    matches = [r for r in nets if len(ref) >= 3 and r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise NetworkNotFound(f"network {ref} not found")


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
    with _locked(ctx.paths) as store:
        if any(r.name == name for r in store.networks()):
            raise NetworkInUse(f"network with name {name} already exists")
        with _host_locked():
            if net_subnet is not None:
                ipam.check_subnet_free(store, net_subnet)
            else:
                net_subnet = ipam.choose_subnet(store)
            net_id = secrets.token_hex(32)
            rec = NetworkRecord(id=net_id, name=name, subnet=str(net_subnet),
                                gateway=gateway or str(next(net_subnet.hosts())), bridge=f"rf-{net_id[:12]}",
                                internal=internal, labels=dict(labels or {}), created=_now(), subnet_fixed=True)
            store.save_network(rec)
            try:
                _bring_up(store, rec)
            except RefrtError:
                _tear_down(store, rec)
                store.delete_network(rec.id)
                raise
        return rec


def remove_network(ctx: HasPaths, ref: str) -> NetworkRecord:
    """``network rm``: refused for the default network and for networks with endpoints."""
    if ref in PSEUDO_MODES:
        raise ConflictError(f"{ref} is a pre-defined network and cannot be removed")
    with _locked(ctx.paths) as store:
        rec = _find(store, ref)
        if rec.default:
            raise ConflictError(f"{rec.name} is a pre-defined network and cannot be removed")
        if store.endpoints(rec.id):
            raise NetworkInUse(f"error while removing network: network {rec.name} id {rec.id} has active endpoints")
        _tear_down(store, rec)
        store.delete_network(rec.id)
        return rec


def prune_networks(ctx: HasPaths, labels: dict[str, str] | None = None) -> list[str]:
    """``network prune``: remove user networks with no endpoints (matching all ``labels`` if given).

    First reaps the network state of containers that no longer exist (removed while their detach could not run,
    e.g. a killed monitor), so their endpoints do not keep networks alive."""
    removed = []
    with _locked(ctx.paths) as store:
        for crec in store.containers():
            if not (ctx.paths.containers / crec.container_id).exists() and not _alive(crec):
                _detach_locked(store, crec.container_id)
        for rec in store.networks():
            if rec.default or store.endpoints(rec.id):
                continue
            if labels and any(rec.labels.get(k) != v for k, v in labels.items()):
                continue
            _tear_down(store, rec)
            store.delete_network(rec.id)
            removed.append(rec.name)
    return removed


def list_networks(ctx: HasPaths) -> list[dict[str, Any]]:
    """``network ls`` rows: the default network, ``host``, ``none`` and the user networks, by name."""
    store = NetworkStore(ctx.paths)
    recs = store.networks()
    if not any(r.default for r in recs):
        with locked(ctx.paths.locks, "network"):
            recs = [_default_network(store), *recs]
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
    rec = _find(store, ref)
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


# -- containers ---------------------------------------------------------------------------------------------

def _containers_dir(paths: Paths, container_id: str) -> Path:
    return paths.containers / container_id


def _find_container(store: NetworkStore, ref: str) -> ContainerNet:
    recs = store.containers()
    for rec in recs:
        if ref in (rec.container_id, rec.name, rec.name.lstrip("/"), "/" + rec.name.lstrip("/")):
            return rec
    matches = [r for r in recs if r.container_id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    raise ContainerNotAttached(f"No such container: {ref}")


def _container_exists(paths: Paths, ref: str) -> bool:
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


def _alive(rec: ContainerNet) -> bool:
    try:
        return rec.pid > 0 and netns.netns_inode(rec.pid) == rec.netns_inode
    except OSError:
        return False


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
            target = _find_container(NetworkStore(ctx.paths), ref)
        except ContainerNotAttached:
            if _container_exists(ctx.paths, ref):  # known but not running: detach dropped its record
                raise ConflictError(f"cannot join network of a non running container: {ref}") from None
            raise
        if not _alive(target):
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
    with _host_locked():  # check and claim the host ports atomically with respect to every root
        bindings = ports.assign(requests, firewall.published_host_ports())
        for b in bindings:
            b.ip, b.network_id = ep.ip, net.id
        rec.ports = bindings
        store.save_container(rec)
        _apply_firewall(store)  # the chains now with its ports too


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
    hosts.write_in_place(_containers_dir(store.paths, rec.container_id) / "hosts", text)


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
        hosts.write_in_place(_containers_dir(paths, container_id) / name, text)


def attach(ctx: HasPaths, container_id: str, name: str, pid: int, request: NetworkRequest) -> dict[str, Any]:
    """Network the container whose child ``pid`` already has its own network namespace (see module doc).

    Errors (unknown network, port in use, bad ``-p``) are raised before the command runs, and anything already
    set up for the container is undone first.
    """
    mode = request.mode or "bridge"
    requests = ports.requests_for(request.publish, request.publish_all, request.exposed)
    hostname = request.hostname or container_id[:12]
    cdir = _containers_dir(ctx.paths, container_id)
    with _locked(ctx.paths) as store:
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
                target = _find_container(store, mode.partition(":")[2])
                _copy_files_from(ctx.paths, _containers_dir(ctx.paths, target.container_id), container_id)
            return _settings(store, rec)
        hosts.write_in_place(cdir / "resolv.conf", hosts.render_resolv(request.dns))
        if mode == "none":  # the container code's hosts file (localhost, 127.0.1.1 hostname) stays as it is
            store.save_container(rec)
            return _settings(store, rec)
        net = _find(store, "bridge" if mode == "bridge" else mode)
        if net.default and request.aliases:
            raise UsageError("network-scoped alias is supported only for containers in user defined networks")
        try:
            # a new bridge: its rules are installed while the veth is made, all under the host lock
            with contextlib.nullcontext() if bridge.exists(net.bridge) else _host_locked():
                rules_done = _bring_up(store, net, background=True)
                try:
                    ep = _add_endpoint(store, net, rec, [] if net.default else list(request.aliases))
                finally:
                    rules_done()
            _publish(store, rec, net, ep, requests)
            _refresh_network_hosts(store, [net.id])
            _write_hosts(store, rec)
        except (RefrtError, OSError) as exc:
            _detach_locked(store, container_id)
            if isinstance(exc, OSError):
                raise NetworkError(f"attaching {name} to {net.name}: {exc}") from exc
            raise
        return _settings(store, rec)


def _detach_locked(store: NetworkStore, container_id: str) -> None:
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
        _tear_down(store, net, tuple(veths))
        veths = []
    netns.delete_links(veths)
    if going:
        return  # the tear-down rewrote (or removed) the chains without this container's rules
    # a container that never had a bridge (none, host, container:X) changed nothing the rules depend on
    shared = rec is not None and (rec.mode in PSEUDO_MODES or rec.mode.startswith("container:"))
    if rec is None or rec.ports or (not net_ids and not shared):
        if any(bridge.exists(n.bridge) for n in store.networks()):
            _apply_firewall(store)
        else:
            _drop_base_if_unused(store)


def detach(ctx: HasPaths, container_id: str) -> None:
    """Undo :func:`attach`: veth (deleting the host end is enough), address, port rules, hosts entries on the
    other containers. Idempotent: a second call, or one for a container never attached, does nothing."""
    store = NetworkStore(ctx.paths)
    if store.container(container_id) is None and not any(
        store.endpoint(n.id, container_id) for n in store.networks()
    ):
        return
    with _locked(ctx.paths) as store:
        _detach_locked(store, container_id)


def connect(ctx: HasPaths, network_ref: str, container_ref: str, aliases: list[str] | None = None) -> Endpoint:
    """``network connect``: one more ``ethN`` in a running container."""
    with _locked(ctx.paths) as store:
        rec = _find_container(store, container_ref)
        net = _find(store, network_ref)
        if rec.mode in ("none", "host") or rec.mode.startswith("container:"):
            raise ConflictError(f"container sharing network namespace or with --network {rec.mode} "
                                "cannot be connected to networks")
        if not _alive(rec):
            raise ConflictError(f"container {rec.name} is not running")
        if net.id in rec.networks:
            raise ConflictError(f"endpoint with name {rec.name} already exists in network {net.name}")
        _bring_up(store, net)
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
    with _locked(ctx.paths) as store:
        rec = _find_container(store, container_ref)
        net = _find(store, network_ref)
        if net.id not in rec.networks:
            raise ConflictError(f"container {rec.name} is not connected to network {net.name}")
        _remove_endpoint(store, net.id, rec.container_id, rec.pid if _alive(rec) else 0)
        rec.networks = [n for n in rec.networks if n != net.id]
        kept = [b for b in rec.ports if b.network_id != net.id]
        if len(kept) != len(rec.ports):
            rec.ports = kept
            _apply_firewall(store)
        store.save_container(rec)
        _refresh_network_hosts(store, [net.id, *rec.networks])
        _write_hosts(store, rec)
        if net.default and not store.endpoints(net.id):
            _tear_down(store, net)


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
    return list(_find_container(NetworkStore(ctx.paths), container_ref).ports)


def net_stats(pid: int) -> dict[str, dict[str, int]]:
    """Net I/O counters of the container whose process is ``pid`` (``stats``), ``lo`` excluded."""
    return {k: v for k, v in netns.net_dev_stats(pid).items() if k != "lo"}


def leftovers(ctx: HasPaths) -> list[str]:
    """Everything of this root's networking still on the host: tagged rules, chains, bridges, veths.

    User networks still existing keep their bridge and rules by design; they are listed too, so a test that
    removed everything expects an empty list."""
    store = NetworkStore(ctx.paths)
    found = firewall.leftovers(root_tag(ctx.paths))
    names = {n.bridge for n in store.networks()}
    names.add(_default_bridge_name(ctx.paths, store.config()))
    found += [f"bridge {b}" for b in sorted(names) if bridge.exists(b)]
    ifaces = [p.name for p in Path("/sys/class/net").iterdir()]
    for rec in store.containers():
        found.append(f"record {rec.container_id}")
        found += [f"veth {i}" for i in ifaces if i.startswith(f"rv{rec.container_id[:10]}")]
    return found
