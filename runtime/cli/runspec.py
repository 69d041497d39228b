"""``run``/``create`` flags with docker's syntax, parsed into a :class:`runtime.container.ContainerSpec`.

One place for the flags (``_add_create_flags``) and their meaning (``spec_from_args``): the CLI's ``run`` and
``create`` use them, and so does the daemon (``runtime.daemon.convert``) for an API client's create request.
Sizes, CPUs, signals, env files and labels are read the way docker reads them; the flags refrt cannot honour are
in :mod:`runtime.cli.runflags`.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli import runflags
from runtime.container.signals import parse_signal
from runtime.errors import RefrtError, UsageError
from runtime.spec import NetworkRequest

if TYPE_CHECKING:  # the container machinery is imported by the handlers, so ``--help`` stays fast
    from runtime.cli import Context


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgtp]?)b?$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# --------------------------------------------------------------------------------------------- flag parsing
def parse_size(value: str) -> int:
    """docker's RAMInBytes: ``32m``, ``1g``, ``512k``, ``1048576``; ``-1`` means unlimited."""
    if value.strip() == "-1":
        return -1
    match = _SIZE.match(value.strip())
    if not match:
        raise UsageError(f"invalid size: '{value}'")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size >= 1 << 63:  # what the kernel's 64-bit limits take; beyond, the cgroup would get a wrapped value
        raise UsageError(f"invalid size: '{value}': value out of range")
    return size


def parse_cpus(value: str) -> int:
    try:
        nano = round(float(value) * 1e9)
    except ValueError:
        raise UsageError(f'invalid argument "{value}" for "--cpus" flag') from None
    if nano < 0:
        raise UsageError("range of CPUs must be positive")
    return nano


def read_env_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"open {path}: {exc.strerror}") from None
    return [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, _, value = item.partition("=")
        labels[key] = value
    return labels


def _add_create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.add_argument("-h", "--hostname", default="")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--rm", action="store_true")
    p.add_argument("--init", action="store_true")
    p.add_argument("--uts", default="")
    p.add_argument("--cpu-period", type=int, default=0)
    p.add_argument("--cpu-quota", type=int, default=0)
    p.add_argument("--device", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--oom-kill-disable", action="store_true")
    p.add_argument("--pid", default="")
    p.add_argument("--ipc", default="")
    p.add_argument("--group-add", action="append", default=[])
    p.add_argument("--shm-size", default="")
    p.add_argument("--sysctl", action="append", default=[])
    p.add_argument("--ulimit", action="append", default=[], help="ulimit options (NAME=SOFT[:HARD], e.g. nofile=1024)")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="timeout (in seconds) to stop a container")
    p.add_argument("--restart", default="no",
                   help="restart policy when the container exits: no, always, unless-stopped, on-failure[:N]")
    p.add_argument("--userns", default="host")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("-m", "--memory", default="")
    p.add_argument("--memory-swap", default="")
    p.add_argument("--cpus", default="")
    p.add_argument("-c", "--cpu-shares", type=int, default=0)
    p.add_argument("--cpuset-cpus", default="")
    p.add_argument("--pids-limit", type=int, default=0)
    p.add_argument("--blkio-weight", type=int, default=0)
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--mount", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--volumes-from", action="append", default=[])
    p.add_argument("--network", "--net", default="")
    p.add_argument("--network-alias", "--net-alias", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--add-host", action="append", default=[])
    runflags.add_accepted(p)
    runflags.add_refused(p)
    runflags.describe(p)
    p.add_argument("image", help="the image to run")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")


def _ip_address(text: str) -> str | None:
    """Go's net.ParseIP as docker's flag checks use it (spaces around are trimmed; no zone), or None."""
    import ipaddress

    text = text.strip()
    if "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _extra_hosts(values: list[str]) -> list[str]:
    """docker's ``--add-host HOST:IP`` check (the CLI's): a name, a colon, an address or ``host-gateway``."""
    for value in values:
        host, sep, ip = value.partition(":")
        if not sep or not host:
            raise UsageError(f'invalid argument "{value}" for "--add-host" flag: bad format for add-host: "{value}"')
        if ip != "host-gateway" and _ip_address(ip) is None:
            raise UsageError(f'invalid argument "{value}" for "--add-host" flag: invalid IP address in add-host: '
                             f'"{ip}"')
    return list(values)


def _dns_servers(values: list[str]) -> list[str]:
    """docker's ``--dns`` check; the addresses are kept as it keeps them (normalized)."""
    servers = []
    for value in values:
        address = _ip_address(value)
        if address is None:
            raise UsageError(f'invalid argument "{value}" for "--dns" flag: {value} is not an ip address')
        servers.append(address)
    return servers


def _workdir(value: str) -> str:
    """dockerd refuses a relative working directory at create (nothing is created)."""
    if value and not value.startswith("/"):
        raise UsageError(f"the working directory '{value}' is invalid, it needs to be an absolute path.")
    return value


def _sysctls(values: list[str], network_mode: str) -> list[str]:
    from runtime.container import sysctls

    for value in values:
        sysctls.parse(value, network_mode)
    return list(values)


def _namespace_mode(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.startswith("container:"):
        raise UsageError(f"{flag} {value}: sharing another container's namespace is not supported by refrt")
    if value not in allowed:
        raise UsageError(f"{flag} {value}: invalid mode (refrt takes {', '.join(m for m in allowed if m)})")
    return "host" if value == "host" else ""


def _nano_cpus(args: argparse.Namespace) -> int:
    """--cpus, or docker's older --cpu-quota/--cpu-period pair as the same CFS quota (period 100 ms default)."""
    if args.cpus and (args.cpu_period or args.cpu_quota):
        raise UsageError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if args.cpus:
        return parse_cpus(args.cpus)
    if args.cpu_period and not 1000 <= args.cpu_period <= 1_000_000:
        raise UsageError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if args.cpu_quota and 0 < args.cpu_quota < 1000:
        raise UsageError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if args.cpu_quota > 0:
        return int(args.cpu_quota * 1_000_000_000 // (args.cpu_period or 100_000))
    return 0


def _ulimits(values: list[str]) -> list[str]:
    from runtime.container import ulimits

    for value in values:
        ulimits.parse(value)
    return list(values)


def _stop_signal(value: str) -> str:
    if value:
        parse_signal(value)  # docker refuses an unknown one at create
    return value


def _restart_policy(args: argparse.Namespace) -> str:
    from runtime.container import restart

    name, _ = restart.parse(args.restart)
    if name != "no" and args.rm:
        raise UsageError("Conflicting options: --restart and --rm")
    return str(args.restart or "no")


def spec_from_args(args: argparse.Namespace) -> Any:
    """The parsed flags as a ContainerSpec (nothing is created yet)."""
    from runtime.cgroups import Resources
    from runtime.container import ContainerSpec, seccomp
    from runtime.container.hooks import default_network_mode
    from runtime.volumes.parse import parse_mount_flag, parse_tmpfs_flag, parse_volume_flag, parse_volumes_from_flag

    env: list[str] = []
    for path in args.env_file:
        env.extend(read_env_file(path))
    env.extend(args.env)
    if args.userns not in ("host", "", "private"):
        raise UsageError(f"--userns={args.userns}: refrt supports host and private")
    memory = parse_size(args.memory) if args.memory else 0
    swap = parse_size(args.memory_swap) if args.memory_swap else 0
    if swap and swap > 0 and memory and swap < memory:
        raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if swap and not memory:
        raise UsageError("You should always set the Memory limit when using Memoryswap limit, see usage")
    if memory and memory < 6 * 1024 * 1024:
        raise UsageError("Minimum memory limit allowed is 6MB")
    if args.blkio_weight and not 10 <= args.blkio_weight <= 1000:
        raise UsageError("Range of blkio weight is from 10 to 1000")
    # one strict parser (runtime.volumes.parse) for every mount flag: a misspelled option is an error, never ignored
    mounts = [parse_volume_flag(v) for v in args.volume]
    mounts += [parse_mount_flag(v) for v in args.mount]
    mounts += [parse_tmpfs_flag(v) for v in args.tmpfs]
    if args.init:
        mounts.append(runflags.init_mount())
    if args.device:
        from runtime.container.devices import mount as device_mount

        mounts += [device_mount(value) for value in args.device]
    shm = parse_size(args.shm_size) if args.shm_size else 0
    if shm < 0:
        raise UsageError(f"invalid size: '{args.shm_size}'")
    if shm:  # a tmpfs of that size over the default 64m /dev/shm, with docker's options (0: the default)
        mounts.append(parse_tmpfs_flag(f"/dev/shm:size={shm},nosuid,nodev,noexec,mode=1777"))
    for item in args.volumes_from:
        parse_volumes_from_flag(item)
    mode = args.network or default_network_mode()
    expose = []
    for item in args.expose:  # a range is spelled out port by port, as docker keeps ExposedPorts
        port, _, proto = item.partition("/")
        first, dash, last = port.partition("-")
        if dash and first.isdigit() and last.isdigit() and int(first) <= int(last):
            expose += [f"{n}/{proto or 'tcp'}" for n in range(int(first), int(last) + 1)]
        else:
            expose.append(f"{port}/{proto or 'tcp'}")
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    return ContainerSpec(
        image=args.image,
        command=list(args.command),
        entrypoint=entrypoint,
        env=env,
        workdir=_workdir(args.workdir),
        user=args.user,
        hostname=args.hostname,
        tty=args.tty,
        interactive=args.interactive,
        name=args.name,
        labels=parse_labels(runflags.read_label_files(args.label_file) + list(args.label)),
        network=NetworkRequest(
            mode=mode,
            aliases=list(args.network_alias),
            publish=list(args.publish),
            publish_all=args.publish_all,
            exposed=expose,
            hostname=args.hostname,
            extra_hosts=_extra_hosts(args.add_host),
            dns=_dns_servers(args.dns),
        ),
        mounts=mounts,
        volumes_from=list(args.volumes_from),
        resources=Resources(
            memory=memory,
            memory_swap=swap,
            nano_cpus=_nano_cpus(args),
            cpu_shares=args.cpu_shares,
            cpuset_cpus=args.cpuset_cpus,
            pids_limit=args.pids_limit,
            blkio_weight=args.blkio_weight,
        ),
        read_only=args.read_only,
        auto_remove=args.rm,
        restart=_restart_policy(args),
        stop_signal=_stop_signal(args.stop_signal),
        stop_timeout=args.stop_timeout,
        ulimits=_ulimits(args.ulimit),
        healthcheck=runflags.healthcheck(args),
        init=args.init,
        group_add=list(args.group_add),
        uts=_namespace_mode("--uts", args.uts, ("", "host")),
        pid=_namespace_mode("--pid", args.pid, ("", "host")),
        oom_kill_disable=args.oom_kill_disable,
        devices=list(args.device),
        ipc=_namespace_mode("--ipc", args.ipc, ("", "host", "private", "shareable")),
        sysctls=_sysctls(args.sysctl, mode),
        userns=args.userns or "host",
        privileged=args.privileged,
        cap_add=list(args.cap_add),
        cap_drop=list(args.cap_drop),
        security_opt=seccomp.normalize(args.security_opt),
    )


def _apply_volumes_from(ctx: Context, spec: Any) -> None:
    """``--volumes-from NAME[:ro|rw]``: the other container's bind and volume mounts (runtime.volumes)."""
    from runtime.volumes import volumes_from

    for item in spec.volumes_from:
        spec.mounts.extend(volumes_from(ctx, item))


def _check_image_depth(ctx: Context, ref: str) -> None:
    """docker's "max depth exceeded" before anything is created (an image pulled or built too deep)."""
    from runtime.store.overlay import check_depth
    from runtime.store.store import Store

    try:
        image = Store(ctx.paths).resolve(ref)
    except RefrtError:
        return  # a missing image is reported by create, in its words
    check_depth(len(image.layers))


def _apply_links(ctx: Context, spec: Any, links: list[str]) -> None:
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
