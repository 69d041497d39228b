"""A container on disk: ``containers/<id>/config.json`` (fixed at create) and ``state.json`` (changes).

Both are replaced atomically (write + rename), so a reader never sees half a file and a crash never loses the
previous version. The live part of the state (is the monitor still there?) is checked against the process
table by ``lifecycle.reconcile``, comparing start times so a recycled pid is not mistaken for ours.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.container.spec import ContainerSpec
from runtime.errors import NotFoundError, UsageError
from runtime.paths import Paths


class ContainerNotFound(NotFoundError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


@dataclass
class State:
    status: str = "created"  # created | running | paused | exited | removing
    pid: int = 0
    pid_start: int = 0
    monitor_pid: int = 0
    monitor_start: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    network_settings: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0  # restarts made by the restart policy (docker's RestartCount)

    @property
    def running(self) -> bool:
        """Running includes paused (its processes exist, frozen), as in docker's State.Running."""
        return self.status in ("running", "paused")

    @property
    def paused(self) -> bool:
        return self.status == "paused"


@dataclass
class Container:
    id: str
    name: str
    created: str
    spec: ContainerSpec
    image_id: str
    image_config: dict[str, Any]
    lower_dirs: list[str]
    argv: list[str]
    env: list[str]
    mounts: list[dict[str, Any]]  # prepared MountSpecs (host_path set)
    cgroup_driver: int = 1
    directory: Path = Path()
    state: State = field(default_factory=State)

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def merged(self) -> Path:
        return self.directory / "merged"

    @property
    def log_path(self) -> Path:
        return self.directory / "ctr.log"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def config_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "spec": self.spec.to_dict(),
            "image_id": self.image_id,
            "ImageID": self.image_id,  # the key runtime.store's in_use_by looks for
            "image_config": self.image_config,
            "lower_dirs": self.lower_dirs,
            "argv": self.argv,
            "env": self.env,
            "mounts": self.mounts,
            "cgroup_driver": self.cgroup_driver,
        }

    def save_config(self) -> None:
        atomic_write_json(self.directory / "config.json", self.config_dict())

    def save_state(self) -> None:
        atomic_write_json(self.directory / "state.json", asdict(self.state))

    def reload_state(self) -> State:
        self.state = load_state(self.directory)
        return self.state


def new_id() -> str:
    return secrets.token_hex(32)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_state(directory: Path) -> State:
    try:
        data = json.loads((directory / "state.json").read_text())
    except FileNotFoundError:
        return State()
    return State(**{k: v for k, v in data.items() if k in State.__dataclass_fields__})


def load(directory: Path) -> Container:
    data = json.loads((directory / "config.json").read_text())
    return Container(
        id=data["id"],
        name=data["name"],
        created=data["created"],
        spec=ContainerSpec.from_dict(data["spec"]),
        image_id=data["image_id"],
        image_config=data.get("image_config", {}),
        lower_dirs=data["lower_dirs"],
        argv=data["argv"],
        env=data["env"],
        mounts=data.get("mounts", []),
        cgroup_driver=data.get("cgroup_driver", 1),
        directory=directory,
        state=load_state(directory),
    )


def all_containers(paths: Paths) -> list[Container]:
    """Every container with a complete config, newest first."""
    result = []
    if paths.containers.is_dir():
        for entry in paths.containers.iterdir():
            if (entry / "config.json").exists():
                try:
                    result.append(load(entry))
                except (OSError, ValueError, KeyError):
                    continue
    result.sort(key=lambda c: c.created, reverse=True)
    return result


def find(paths: Paths, ref: str) -> Container:
    """By full id, name (with or without the leading /), or unique id prefix - docker's lookup order."""
    if not ref:
        raise UsageError("container name or id must not be empty")
    name = ref.lstrip("/")
    containers = all_containers(paths)
    for c in containers:
        if c.id == ref or c.name == name:
            return c
    matches = [c for c in containers if c.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"multiple IDs found with provided prefix: {ref}")
    raise ContainerNotFound(ref)
