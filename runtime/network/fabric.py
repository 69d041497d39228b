"""The kernel side of networks: bridges and the root's iptables chains, brought up and torn down together.

Why together, under the host-wide lock: a bridge and its rules are made in one step and a failure half-way
removes the bridge again, so an existing bridge is taken as complete and a container joining a network in use
costs no iptables call. ``firewall`` renders and installs rules; this module decides from the records which
rules a root has (every network whose bridge is up, every container's published ports) and when to rewrite them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable, Iterator

from runtime.locking import locked
from runtime.network import bridge, firewall, ipam, netns
from runtime.network.store import NetworkRecord, NetworkStore, root_tag

HOST_LOCKS = firewall.HOST_STATE / "locks"
_HOST_HELD = threading.local()


@contextlib.contextmanager
def host_locked() -> Iterator[None]:
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


def _done() -> None:
    return None


def bring_up(store: NetworkStore, rec: NetworkRecord, *, background: bool = False) -> Callable[[], None]:
    """Make sure the network's bridge, the root's chains and the network's rules exist. Returns the function
    that waits for the rules: with ``background`` the ``iptables-restore`` runs on a thread meanwhile (the
    caller holds the host lock until it has waited), so a container's veth is made while it runs.

    A bridge that exists already is taken as complete: bridge and rules are made together under the host lock,
    and a failure half-way removes the bridge again (see ``attachment.detach_locked``), so the common path - a container
    joining a network in use - costs no iptables call. Otherwise: the bridge over netlink, one
    ``iptables-restore`` for the root's chains (and their jumps, when this is the root's first bridge)."""
    if bridge.exists(rec.bridge):
        return _done
    with host_locked():
        if not rec.subnet_fixed or not rec.subnet:
            subnet = ipam.choose_subnet(store, exclude=[])
            rec.subnet, rec.gateway = str(subnet), str(next(subnet.hosts()))
            store.save_network(rec)
        else:  # a configured subnet (REFRT_BRIDGE_SUBNET, --subnet after a reboot) must still be free
            ipam.check_subnet_free(store, ipaddress.IPv4Network(rec.subnet), own_id=rec.id)
        first = not any(bridge.exists(n.bridge) for n in store.networks() if n.id != rec.id)
        prefix = ipaddress.IPv4Network(rec.subnet).prefixlen
        bridge.create(rec.bridge, rec.gateway, prefix)
        return apply_firewall(store, with_base=first, background=background)


def apply_firewall(store: NetworkStore, *, with_base: bool = False, leaving: tuple[str, ...] = (),
                    background: bool = False) -> Callable[[], None]:
    """Rewrite the root's chains from the records: the rules of every network whose bridge is up (except the
    ``leaving`` ones) and of every container's published ports (see ``firewall.apply_root``). Returns the
    function that waits for it (with ``background``, it runs on a thread; see ``bring_up``)."""
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
    with host_locked():
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


def tear_down(store: NetworkStore, rec: NetworkRecord, veths: tuple[str, ...] = ()) -> None:
    """Remove the network's rules and bridge (and the ``veths`` host ends still on it); the root's chains too
    once it has no bridge left - one ``iptables-restore`` either way."""
    tag = root_tag(store.paths)
    with host_locked():
        if bridge.exists(rec.bridge):
            if any(bridge.exists(n.bridge) for n in store.networks() if n.id != rec.id):
                apply_firewall(store, leaving=(rec.id,))
            else:
                firewall.remove_root(tag)
            netns.delete_links([*veths, rec.bridge])
        else:  # never came up (a failed bring-up): whatever of it is installed is found by its tag
            netns.delete_links(list(veths))
            firewall.delete_tagged(firewall.tag_comment(tag, "net", rec.id))
            drop_base_if_unused(store)
        if rec.default and not rec.subnet_fixed:
            rec.subnet, rec.gateway = "", ""
            if store.network_dir(rec.id).is_dir():
                store.save_network(rec)


def drop_base_if_unused(store: NetworkStore) -> None:
    """The careful check (the tables are dumped): the root's chains go when none of its bridges is left."""
    if not any(bridge.exists(n.bridge) for n in store.networks()):
        with host_locked():
            firewall.remove_base(root_tag(store.paths))
