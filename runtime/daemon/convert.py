"""docker's ``POST /containers/create`` body as a :class:`runtime.container.ContainerSpec`.

The body is the docker client's parsed flags (``Config`` at the top, ``HostConfig``, ``NetworkingConfig``). The
scalar flags fill the namespace of the create flags' own parser (:mod:`runtime.container.createflags`, which the
CLI's ``run``/``create`` use too) and go through :func:`runtime.container.createspec.spec_from_args` (one place
for the defaults and the checks dockerd makes too: minimum memory, swap without memory, blkio range, userns); the
structured parts (argv lists, labels, mounts, ports) are set from the body, with ``-v``/``--tmpfs`` strings
parsed by :mod:`runtime.volumes.parse`.
"""

from __future__ import annotations

import argparse
from typing import Any

from runtime.errors import UsageError
from runtime.spec import MountSpec


def _list(value: Any, field: str) -> list[str]:
    """docker's StrSlice: a list of strings, a single string, or null."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"invalid {field}: expected a list of strings")


def _mount(item: dict[str, Any]) -> MountSpec:
    """One ``HostConfig.Mounts`` entry (``--mount``), already parsed by the client."""
    kind = (item.get("Type") or "volume").lower()
    if kind not in ("bind", "volume", "tmpfs"):
        raise UsageError(f"mount type {kind!r} is not supported")
    target = item.get("Target") or ""
    if not target.startswith("/"):
        raise UsageError(f"invalid mount config: mount path must be absolute: {target!r}")
    source = item.get("Source") or ""
    options: dict[str, str] = {}
    if kind == "bind":
        if not source:
            raise UsageError('invalid mount config for type "bind": field Source must not be empty')
        options["create_host_path"] = "false"
        propagation = (item.get("BindOptions") or {}).get("Propagation")
        if propagation:
            options["propagation"] = propagation
    elif kind == "volume":
        if (item.get("VolumeOptions") or {}).get("NoCopy"):
            options["nocopy"] = "true"
    else:
        tmpfs = item.get("TmpfsOptions") or {}
        if tmpfs.get("SizeBytes"):
            options["size"] = str(tmpfs["SizeBytes"])
        if tmpfs.get("Mode"):
            options["mode"] = f"{int(tmpfs['Mode']):o}"
    return MountSpec(type=kind, target=target, source=source, read_only=bool(item.get("ReadOnly")),  # type: ignore[arg-type]
                     options=options, anonymous=kind == "volume" and not source)


def _publish(bindings: dict[str, Any] | None) -> list[str]:
    """``PortBindings`` {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]} as ``-p`` strings."""
    result = []
    for port, hosts in (bindings or {}).items():
        number, _, proto = port.partition("/")
        for host in hosts or [{}]:
            ip, host_port = host.get("HostIp") or "", host.get("HostPort") or ""
            text = f"{ip}:{host_port}:{number}" if ip else (f"{host_port}:{number}" if host_port else number)
            result.append(f"{text}/{proto or 'tcp'}")
    return result


#: Settings refrt cannot honour, refused rather than silently dropped (the refrt CLI has no such flags either):
#: (where, field, the docker flag that sets it).
_UNSUPPORTED = (
    ("HostConfig", "Init", "--init"), ("HostConfig", "Devices", "--device"),
    ("HostConfig", "DeviceRequests", "--gpus"), ("HostConfig", "PidMode", "--pid"),
    ("HostConfig", "IpcMode", "--ipc"), ("HostConfig", "UTSMode", "--uts"), ("HostConfig", "Sysctls", "--sysctl"),
    ("HostConfig", "Ulimits", "--ulimit"), ("HostConfig", "GroupAdd", "--group-add"),
    ("HostConfig", "OomKillDisable", "--oom-kill-disable"), ("HostConfig", "DnsSearch", "--dns-search"),
    ("HostConfig", "DnsOptions", "--dns-option"), ("Config", "StopSignal", "--stop-signal"),
    ("Config", "StopTimeout", "--stop-timeout"), ("Config", "MacAddress", "--mac-address"),
    ("HostConfig", "CpuQuota", "--cpu-quota"), ("HostConfig", "CpuPeriod", "--cpu-period"),
    ("HostConfig", "CpusetMems", "--cpuset-mems"), ("HostConfig", "MemoryReservation", "--memory-reservation"),
    ("HostConfig", "CgroupParent", "--cgroup-parent"), ("HostConfig", "OomScoreAdj", "--oom-score-adj"),
    ("HostConfig", "DeviceCgroupRules", "--device-cgroup-rule"),
)
_PLAIN_IPC = ("", "private", "shareable")


def check_supported(body: dict[str, Any]) -> None:
    """Refuse (400) a create body asking for what refrt does not do; docker's zero values pass."""
    host = body.get("HostConfig") or {}
    for where, key, flag in _UNSUPPORTED:
        value = (host if where == "HostConfig" else body).get(key)
        if key == "IpcMode" and value in _PLAIN_IPC:
            continue
        if value:
            raise UsageError(f"refrt does not support {flag} ({where}.{key})")
    log_driver = (host.get("LogConfig") or {}).get("Type") or ""
    if log_driver not in ("", "json-file"):
        raise UsageError(f"refrt does not support --log-driver {log_driver}: its log is json-file")
    runtime_name = host.get("Runtime") or ""
    if runtime_name not in ("", "runc", "refrt"):
        raise UsageError(f"refrt does not support --runtime {runtime_name}")
    shm = int(host.get("ShmSize") or 0)
    if shm and shm != 64 << 20:
        raise UsageError("refrt does not support --shm-size: /dev/shm is 64MB")
    for name, endpoint in ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).items():
        if (endpoint or {}).get("IPAMConfig"):
            raise UsageError(f"refrt does not support --ip/--ip6 (network {name})")


def _restart_flag(policy: dict[str, Any]) -> str:
    """``HostConfig.RestartPolicy`` as the ``--restart`` value the CLI parses (and checks)."""
    name = policy.get("Name") or "no"
    retries = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{retries}" if retries else name


def _defaults() -> argparse.Namespace:
    """Every ``create`` flag at its default, from the parser the CLI uses too (so a flag added there is never
    missing here)."""
    from runtime.container.createflags import add_create_flags

    parser = argparse.ArgumentParser(add_help=False)
    add_create_flags(parser)
    return parser.parse_args(["image"])


def spec_from_body(ctx: Any, body: dict[str, Any], name: str) -> Any:
    """The ContainerSpec that ``docker create`` with these flags asks for (nothing is created yet)."""
    from runtime.container import health
    from runtime.container.createspec import apply_volumes_from, spec_from_args
    from runtime.container.links import apply_links
    from runtime.volumes.parse import parse_tmpfs_flag, parse_volume_flag

    if not isinstance(body, dict):
        raise UsageError("invalid container config: expected a JSON object")
    image = body.get("Image") or ""
    if not image:
        raise UsageError("No image specified: the container config needs an Image")
    check_supported(body)
    host: dict[str, Any] = body.get("HostConfig") or {}
    endpoints: dict[str, Any] = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    mode = host.get("NetworkMode") or ""
    if mode == "default":
        mode = ""
    aliases = [a for config in endpoints.values() for a in (config or {}).get("Aliases") or []]
    userns = host.get("UsernsMode") or "host"
    args = _defaults()
    vars(args).update(
        image=image, env=_list(body.get("Env"), "Env"),
        workdir=body.get("WorkingDir") or "", user=body.get("User") or "", hostname=body.get("Hostname") or "",
        interactive=bool(body.get("OpenStdin")), tty=bool(body.get("Tty")), name=name, label=[],
        rm=bool(host.get("AutoRemove")), read_only=bool(host.get("ReadonlyRootfs")), userns=userns,
        privileged=bool(host.get("Privileged")),
        cap_add=_list(host.get("CapAdd"), "CapAdd"), cap_drop=_list(host.get("CapDrop"), "CapDrop"),
        memory=str(host["Memory"]) if host.get("Memory") else "",
        memory_swap=str(host["MemorySwap"]) if host.get("MemorySwap") else "",
        cpus="", cpu_shares=int(host.get("CpuShares") or 0), cpuset_cpus=host.get("CpusetCpus") or "",
        pids_limit=int(host.get("PidsLimit") or 0), blkio_weight=int(host.get("BlkioWeight") or 0),
        volume=[], mount=[], tmpfs=[], volumes_from=_list(host.get("VolumesFrom"), "VolumesFrom"),
        network=mode, network_alias=aliases, publish=_publish(host.get("PortBindings")),
        publish_all=bool(host.get("PublishAllPorts")), expose=list((body.get("ExposedPorts") or {}).keys()),
        dns=_list(host.get("Dns"), "Dns"), add_host=_list(host.get("ExtraHosts"), "ExtraHosts"),
    )
    if hasattr(args, "security_opt"):
        args.security_opt = _list(host.get("SecurityOpt"), "SecurityOpt")
    args.restart = _restart_flag(host.get("RestartPolicy") or {})
    spec = spec_from_args(args)
    spec.command = _list(body.get("Cmd"), "Cmd")
    if body.get("Entrypoint") is not None:
        entrypoint = _list(body.get("Entrypoint"), "Entrypoint")
        spec.entrypoint = [] if entrypoint in ([], [""]) else entrypoint  # [""]: ``--entrypoint ""``
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise UsageError("invalid Labels: expected an object")
    spec.labels = {str(k): str(v) for k, v in labels.items()}
    nano = int(host.get("NanoCpus") or 0)
    if nano < 0:
        raise UsageError("range of CPUs must be positive")
    spec.resources.nano_cpus = nano
    mounts = [parse_volume_flag(b) for b in _list(host.get("Binds"), "Binds")]
    mounts += [_mount(m) for m in host.get("Mounts") or []]
    mounts += [parse_tmpfs_flag(f"{target}:{opts}" if opts else target)
               for target, opts in (host.get("Tmpfs") or {}).items()]
    taken = {m.target for m in mounts}
    mounts += [MountSpec(type="volume", target=t, anonymous=True) for t in (body.get("Volumes") or {})
               if t not in taken]
    spec.mounts = mounts
    spec.healthcheck = health.check(body.get("Healthcheck"))  # the client parsed --health-*; dockerd's checks
    apply_volumes_from(ctx, spec)
    apply_links(ctx, spec, _list(host.get("Links"), "Links"))
    return spec
