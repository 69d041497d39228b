"""``inspect``, ``ps`` rows and human-readable times, in docker's shapes and words."""

from __future__ import annotations

import calendar
import time
from typing import Any

from runtime.container.state import Container
from runtime.humanize import human_duration


def parse_time(stamp: str) -> float:
    """Our RFC 3339 stamps (nanoseconds, ``Z``) to a Unix time; 0 for ""."""
    if not stamp:
        return 0.0
    main, _, frac = stamp.rstrip("Z").partition(".")
    base = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return base + (float("0." + frac) if frac else 0.0)




def status_text(c: Container) -> str:
    state = c.state
    now = time.time()
    if state.running:
        up = f"Up {human_duration(now - parse_time(state.started_at))}"
        if state.paused:
            return up + " (Paused)"
        health = _health_state(c)
        if health is None:
            return up
        word = health["Status"]
        return f"{up} ({'health: starting' if word == 'starting' else word})"
    if state.status == "exited":
        return f"Exited ({state.exit_code}) {human_duration(now - parse_time(state.finished_at))} ago"
    return state.status.capitalize()


def _health_config(c: Container) -> dict[str, Any] | None:
    from runtime.container import health

    return health.config_for(c)


def _health_state(c: Container) -> dict[str, Any] | None:
    from runtime.container import health

    return health.read(c)


def config_env(c: Container) -> list[str]:
    """Config.Env as docker shows it: what the links added to the environment is not part of it (unless the
    user's own ``-e`` said the same)."""
    spec = c.spec
    hidden = set(spec.link_env) - set(spec.env[len(spec.link_env):])
    return [item for item in c.env if item not in hidden]


def exposed_ports(c: Container) -> dict[str, dict[str, Any]] | None:
    """Config.ExposedPorts: the image's, ``--expose`` (ranges spelled out) and the published container ports."""
    ports = dict(c.image_config.get("ExposedPorts") or {})
    words = list(c.spec.network.exposed)
    for item in c.spec.network.publish:
        words.append(item.rpartition(":")[2] if ":" in item.partition("/")[0] else item)
    for word in words:
        number, _, proto = word.partition("/")
        first, _, last = number.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        for port in range(int(first), int(last or first) + 1):
            ports[f"{port}/{proto or 'tcp'}"] = {}
    return ports or None


def _docker_status(c: Container) -> str:
    return {"removing": "removing"}.get(c.state.status, c.state.status)


def ulimit_list(values: list[str]) -> list[dict[str, Any]] | None:
    from runtime.container import ulimits

    return ulimits.inspect(values)


def device_list(values: list[str]) -> list[dict[str, str]]:
    from runtime.container.devices import parse

    return [{"PathOnHost": h, "PathInContainer": t, "CgroupPermissions": p} for h, t, p in map(parse, values)]


def restart_policy(value: str) -> dict[str, Any]:
    from runtime.container.restart import inspect_policy

    return inspect_policy(value)


def inspect(c: Container) -> dict[str, Any]:
    spec = c.spec
    res = spec.resources
    cfg = c.image_config
    entrypoint = spec.entrypoint if spec.entrypoint is not None else cfg.get("Entrypoint")
    cmd = spec.command or (cfg.get("Cmd") if spec.entrypoint is None else [])
    binds = [
        f"{m['source']}:{m['target']}{':ro' if m.get('read_only') else ''}" for m in c.mounts if m["type"] == "bind"
    ]
    mounts = [
        {
            "Type": m["type"],
            "Name": m["source"] if m["type"] == "volume" else "",
            "Source": m.get("host_path") or m["source"],
            "Destination": m["target"],
            "Driver": "local" if m["type"] == "volume" else "",
            "Mode": "ro" if m.get("read_only") else "",
            "RW": not m.get("read_only"),
            "Propagation": "rprivate" if m["type"] == "bind" else "",
        }
        for m in c.mounts
    ]
    state = c.state
    argv = c.argv[2:] if spec.init and c.argv[:2] == ["/sbin/docker-init", "--"] else c.argv  # as docker shows it
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": argv[0],
        "Args": argv[1:],
        "State": {
            "Status": _docker_status(c),
            "Running": state.running,
            "Paused": state.paused,
            "Restarting": False,
            "OOMKilled": state.oom_killed,
            "Dead": False,
            "Pid": state.pid if state.running else 0,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at or "0001-01-01T00:00:00Z",
            "FinishedAt": state.finished_at or "0001-01-01T00:00:00Z",
            "Health": _health_state(c),  # null without a health check (docker: a nil pointer, {{json}} says null)
        },
        "Image": c.image_id,
        "RestartCount": state.restart_count,
        "ResolvConfPath": str(c.directory / "resolv.conf"),
        "HostnamePath": str(c.directory / "hostname"),
        "HostsPath": str(c.directory / "hosts"),
        "LogPath": str(c.log_path),
        "Name": "/" + c.name,
        "Driver": "overlay2",
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds or None,
            "NetworkMode": spec.network.mode,
            "PortBindings": {},
            "AutoRemove": spec.auto_remove,
            "Init": spec.init or None,
            "UTSMode": spec.uts,
            "PidMode": spec.pid,
            "OomKillDisable": spec.oom_kill_disable,
            "Devices": device_list(spec.devices),
            "IpcMode": spec.ipc or "private",
            "RestartPolicy": restart_policy(spec.restart),
            "Ulimits": ulimit_list(spec.ulimits),
            "CapAdd": spec.cap_add or None,
            "CapDrop": spec.cap_drop or None,
            "Privileged": spec.privileged,
            "SecurityOpt": spec.security_opt or None,
            "ReadonlyRootfs": spec.read_only,
            "UsernsMode": "" if spec.userns == "host" else spec.userns,
            "Memory": res.memory,
            "MemorySwap": res.memory_swap,
            "NanoCpus": res.nano_cpus,
            "CpuShares": res.cpu_shares,
            "CpusetCpus": res.cpuset_cpus,
            "PidsLimit": res.pids_limit or None,
            "BlkioWeight": res.blkio_weight,
            "VolumesFrom": spec.volumes_from or None,
            "Tmpfs": {m["target"]: "" for m in c.mounts if m["type"] == "tmpfs"} or None,
            "ExtraHosts": [h for h in spec.network.extra_hosts if h not in spec.link_hosts] or None,
            "Links": spec.links or None,
            "Dns": spec.network.dns,
        },
        "GraphDriver": {
            "Name": "overlay2",
            "Data": {
                "LowerDir": ":".join(c.lower_dirs),
                "UpperDir": str(c.upper),
                "WorkDir": str(c.work),
                "MergedDir": str(c.merged),
            },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": spec.hostname or c.short_id,
            "User": spec.user or cfg.get("User", ""),
            "AttachStdin": spec.interactive,
            "Tty": spec.tty,
            "OpenStdin": spec.interactive,
            "Env": config_env(c),
            "Cmd": cmd or None,
            "Image": spec.image,
            "Volumes": cfg.get("Volumes"),
            "WorkingDir": spec.workdir or cfg.get("WorkingDir", ""),
            "Entrypoint": entrypoint or None,
            "Labels": {**(cfg.get("Labels") or {}), **spec.labels},
            "ExposedPorts": exposed_ports(c),
            **({"Healthcheck": check} if (check := _health_config(c)) else {}),
            **({"StopSignal": spec.stop_signal or cfg["StopSignal"]}
               if spec.stop_signal or cfg.get("StopSignal") else {}),
            **({"StopTimeout": spec.stop_timeout} if spec.stop_timeout is not None else {}),
        },
        "NetworkSettings": state.network_settings or {"Networks": {}, "Ports": {}},
    }


def ps_row(c: Container, no_trunc: bool = False) -> dict[str, Any]:
    """The fields ``ps --format`` knows (docker's names)."""
    command = " ".join(c.argv)
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    labels = {**(c.image_config.get("Labels") or {}), **c.spec.labels}
    ports = ""
    settings = c.state.network_settings or {}
    if c.state.running and settings.get("Ports"):
        parts = []
        for cport, bindings in sorted(settings["Ports"].items()):
            for b in bindings or []:
                parts.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{cport}")
        ports = ", ".join(parts)
    return {
        "ID": c.id if no_trunc else c.short_id,
        "Image": c.spec.image,
        "Command": f'"{command}"',
        "CreatedAt": c.created,
        "RunningFor": human_duration(time.time() - parse_time(c.created)) + " ago",
        "Ports": ports,
        "State": c.state.status,
        "Status": status_text(c),
        "Size": "",
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "Mounts": ",".join(m["target"] for m in c.mounts),
        "Networks": c.spec.network.mode,
    }
