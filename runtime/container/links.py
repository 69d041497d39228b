"""docker's legacy container links (``--link NAME[:ALIAS]``, ``HostConfig.Links``): the linked container's
address in /etc/hosts and docker's link variables in the environment, for the CLI and the Engine API alike."""

from __future__ import annotations

from typing import Any

from runtime.errors import UsageError


def apply_links(ctx: Any, spec: Any, links: list[str]) -> None:
    """docker's legacy ``--link NAME[:ALIAS]``: the linked container's address under its alias, name and short id
    in /etc/hosts, and docker's link variables in the environment (``ALIAS_NAME``, ``ALIAS_PORT*`` for its
    exposed ports, ``ALIAS_ENV_*`` for its environment), ahead of the user's own ``-e``. It must be running, on
    the default bridge. The variables are fixed at create (docker computes them at each start)."""
    from runtime.container import lifecycle
    from runtime.container.inspect import config_env, exposed_ports, inspect
    from runtime.container.query import live_network_settings
    from runtime.container.state import ContainerNotFound, all_containers, find

    if links and not spec.name:  # the variables name the new container: pick its name now
        spec.name = lifecycle._random_name({c.name for c in all_containers(ctx.paths)})
    added: list[str] = []
    for link in links:
        name, _, alias = link.partition(":")
        alias = alias or name
        try:
            other = find(ctx.paths, name)
        except ContainerNotFound:
            raise UsageError(f"could not get container for {name}") from None
        lifecycle.reconcile(ctx, other)
        if not other.state.running:
            raise UsageError(f"Cannot link to a non running container: /{other.name} AS /{spec.name}/{alias}")
        live = live_network_settings(ctx, other) or inspect(other)["NetworkSettings"]
        ips = [n.get("IPAddress") for n in (live.get("Networks") or {}).values() if n.get("IPAddress")]
        if not ips:
            raise UsageError(f"Cannot link to /{other.name}: it has no address (links need the default bridge)")
        for host in dict.fromkeys((alias, other.name, other.short_id)):
            spec.network.extra_hosts.append(f"{host}:{ips[0]}")
            spec.link_hosts.append(f"{host}:{ips[0]}")
        added += link_variables(alias.upper().replace("-", "_"), f"/{spec.name}/{alias}", ips[0],
                                list(exposed_ports(other) or {}), config_env(other))
        spec.links.append(f"/{other.name}:/{spec.name}/{alias}")
    spec.link_env = added
    spec.env = [*added, *spec.env]


_NOT_LINKED = ("HOME", "PATH", "HOSTNAME")  # docker's Config.Env never carries the last; the first two it skips


def link_variables(prefix: str, name: str, ip: str, ports: list[str], env: list[str]) -> list[str]:
    """The environment docker gives a container for one link: ``PREFIX_NAME``; for each exposed port (by number,
    tcp first) ``PREFIX_PORT_N_PROTO`` with ``_ADDR``/``_PORT``/``_PROTO``, the first one also as ``PREFIX_PORT``,
    and a run of consecutive ports of one protocol as ``..._START``/``_END``/``_PORT_START``/``_PORT_END`` on its
    first port; ``PREFIX_ENV_K`` for the linked container's environment."""
    out = [f"{prefix}_NAME={name}"]
    parsed = sorted(((int(p.partition("/")[0]), (p.partition("/")[2] or "tcp").lower()) for p in ports),
                    key=lambda item: (item[0], item[1] != "tcp"))
    if parsed:
        out.append(f"{prefix}_PORT={parsed[0][1]}://{ip}:{parsed[0][0]}")
    runs: list[list[tuple[int, str]]] = []
    for port, proto in parsed:
        key = f"{prefix}_PORT_{port}_{proto.upper()}"
        out += [f"{key}={proto}://{ip}:{port}", f"{key}_ADDR={ip}", f"{key}_PORT={port}", f"{key}_PROTO={proto}"]
        if runs and runs[-1][-1] == (port - 1, proto):
            runs[-1].append((port, proto))
        else:
            runs.append([(port, proto)])
    for run in runs:
        if len(run) > 1:
            (first, proto), (last, _) = run[0], run[-1]
            key = f"{prefix}_PORT_{first}_{proto.upper()}"
            out += [f"{key}_START={proto}://{ip}:{first}", f"{key}_PORT_START={first}",
                    f"{key}_END={proto}://{ip}:{last}", f"{key}_PORT_END={last}"]
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key not in _NOT_LINKED:
            out.append(f"{prefix}_ENV_{key}={value}")
    return out
