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

Layout (no module imports one that imports it back): ``records`` finds networks and containers and holds the
root lock; ``fabric`` brings bridges and the root's chains up and down (the host lock); ``attachment`` is a
container's side (namespace, veth, address, ports, hosts files, connect/disconnect); ``networks`` is the
network lifecycle and ``leftovers``. This module only re-exports their public functions, so callers keep
importing ``runtime.network``. Below them: ``store`` (records on disk), ``ipam``, ``bridge``, ``netns`` and
``rtnl`` (netlink), ``firewall`` (iptables), ``ports`` (``-p``), ``hosts`` (hosts/resolv.conf files).
"""

from __future__ import annotations

from runtime.network import errors as errors
from runtime.network import ports as ports
from runtime.network.attachment import (
    attach,
    connect,
    container_ports,
    detach,
    disconnect,
    net_stats,
    netns_path_for,
    settings,
)
from runtime.network.networks import (
    create_network,
    find_network,
    inspect_network,
    leftovers,
    list_networks,
    prune_networks,
    remove_network,
)

__all__ = [
    "attach", "connect", "container_ports", "create_network", "detach", "disconnect", "find_network",
    "inspect_network", "leftovers", "list_networks", "net_stats", "netns_path_for", "prune_networks",
    "remove_network", "settings",
]
