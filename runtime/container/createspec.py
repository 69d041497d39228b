"""The ``create``/``run`` flags (:mod:`runtime.container.createflags`) parsed into a
:class:`runtime.container.ContainerSpec`: what each flag means, and the checks dockerd makes before creating
anything (minimum memory, swap without memory, blkio range, userns, addresses, working directory ...).

Shared by the CLI's ``run``/``create`` and the daemon's ``POST /containers/create``, so they cannot disagree.
Sizes, CPUs, signals, env files and labels are read the way docker reads them.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from runtime.container.signals import parse_signal
from runtime.errors import UsageError
from runtime.spec import NetworkRequest

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgtp]?)b?$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


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


def read_label_files(paths: list[str]) -> list[str]:
    """docker's --label-file: one KEY=VALUE per line, blank lines and # comments skipped."""
    labels: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"open {path}: {exc.strerror}") from None
        labels += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return labels


INIT_CANDIDATES = ("/usr/bin/docker-init", "/usr/libexec/docker/docker-init", "/usr/bin/tini-static")


def init_mount() -> Any:
    """``--init``: the host's docker-init (a static tini, as docker ships it), bound read-only at
    /sbin/docker-init; refused when the host has none."""
    import os

    from runtime.spec import MountSpec

    for candidate in INIT_CANDIDATES:
        if os.path.isfile(candidate):
            return MountSpec(type="bind", target="/sbin/docker-init", source=os.path.realpath(candidate),
                             read_only=True)
    raise UsageError("--init: no docker-init (tini) on this host (looked for " + ", ".join(INIT_CANDIDATES) + ")")


def healthcheck(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--health-*`` flags as docker's HealthConfig (runtime.container.health)."""
    from runtime.container import health

    return health.from_flags(args.health_cmd, args.health_interval, args.health_timeout,
                             args.health_start_period, args.health_retries, args.no_healthcheck)


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
        mounts.append(init_mount())
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
        labels=parse_labels(read_label_files(args.label_file) + list(args.label)),
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
        healthcheck=healthcheck(args),
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


def apply_volumes_from(ctx: Any, spec: Any) -> None:
    """``--volumes-from NAME[:ro|rw]``: the other container's bind and volume mounts (runtime.volumes)."""
    from runtime.volumes import volumes_from

    for item in spec.volumes_from:
        spec.mounts.extend(volumes_from(ctx, item))

