"""What the user asked for when creating a container (``refrt create``/``run`` flags), as a plain dataclass.

Stored verbatim in ``containers/<id>/config.json`` so ``inspect`` can show it and ``start`` can repeat it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.cgroups.base import Resources
from runtime.spec import MountSpec, NetworkRequest


@dataclass
class ContainerSpec:
    image: str
    command: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None  # None: the image's; []: none (``--entrypoint ""``)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    network: NetworkRequest = field(default_factory=NetworkRequest)
    mounts: list[MountSpec] = field(default_factory=list)
    volumes_from: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    read_only: bool = False
    auto_remove: bool = False
    userns: str = "host"
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)  # normalized (runtime.container.seccomp.normalize)
    restart: str = "no"  # --restart policy (runtime.container.restart)
    stop_signal: str = ""  # --stop-signal (else the image's STOPSIGNAL, else SIGTERM)
    stop_timeout: int | None = None  # --stop-timeout seconds (else 10)
    sysctls: list[str] = field(default_factory=list)  # --sysctl NAME=VALUE (runtime.container.sysctls)
    group_add: list[str] = field(default_factory=list)  # --group-add NAME|GID
    uts: str = ""  # --uts host: the host's UTS namespace (hostname)
    ipc: str = ""  # --ipc host: the host's IPC namespace
    pid: str = ""  # --pid host: the host's PID namespace
    devices: list[str] = field(default_factory=list)  # --device HOST[:CONTAINER[:PERMS]] (runtime.container.devices)
    oom_kill_disable: bool = False  # --oom-kill-disable (cgroup v1's memory.oom_control)
    init: bool = False  # --init: /sbin/docker-init (the host's tini, bound in) runs the command
    ulimits: list[str] = field(default_factory=list)  # --ulimit NAME=SOFT[:HARD] (runtime.container.ulimits)
    healthcheck: dict[str, Any] | None = None  # --health-*/--no-healthcheck, docker's HealthConfig (over the image's)
    links: list[str] = field(default_factory=list)  # --link as docker's HostConfig.Links (/NAME:/CHILD/ALIAS)
    link_env: list[str] = field(default_factory=list)  # what the links put in the environment (not in Config.Env)
    link_hosts: list[str] = field(default_factory=list)  # what the links put in /etc/hosts (not in ExtraHosts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerSpec:
        data = dict(data)
        data["network"] = NetworkRequest(**data.get("network", {}))
        data["mounts"] = [MountSpec(**m) for m in data.get("mounts", [])]
        data["resources"] = Resources.from_dict(data.get("resources", {}))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
