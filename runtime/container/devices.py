"""``--device HOST[:CONTAINER[:PERMISSIONS]]``: a host device inside the container, as docker's.

The node is bound from the host (``runtime.spec.MountSpec``) and the container's devices cgroup (v1) lets it be
used with the given permissions (``rwm`` by default). cgroup v2 keeps a fixed eBPF device filter in refrt, so
there the flag is refused by name rather than given a node the container could not open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from runtime.errors import RefrtError, UsageError


def parse(value: str) -> tuple[str, str, str]:
    """(host path, container path, permissions), checked as docker checks them."""
    parts = value.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"invalid device specification: {value}")
    host = parts[0]
    target = parts[1] if len(parts) > 1 and parts[1] else host
    perms = parts[2] if len(parts) > 2 else "rwm"
    if len(parts) == 2 and set(parts[1]) <= set("rwm") and not parts[1].startswith("/"):
        target, perms = host, parts[1]
    if not perms or not set(perms) <= set("rwm"):
        raise UsageError(f"invalid device mode: {perms}")
    try:
        info = os.stat(host)
    except OSError as exc:
        raise UsageError(f'error gathering device information while adding custom device "{host}": '
                         f"{exc.strerror.lower() if exc.strerror else exc}") from None
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise UsageError(f'error gathering device information while adding custom device "{host}": not a device node')
    return host, target, perms


def mount(value: str) -> Any:
    from runtime.spec import MountSpec

    host, target, perms = parse(value)
    return MountSpec(type="bind", source=os.path.realpath(host), target=target, read_only="w" not in perms)


def allow(directories: list[Path], values: list[str]) -> None:
    """Let the devices cgroup (v1) open each device; refused on v2."""
    devices = next((d for d in directories if (d / "devices.allow").exists()), None)
    if devices is None:
        raise RefrtError("--device: refrt gives devices only with the cgroup v1 devices controller")
    for value in values:
        host, _, perms = parse(value)
        info = os.stat(host)
        kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
        (devices / "devices.allow").write_text(f"{kind} {os.major(info.st_rdev)}:{os.minor(info.st_rdev)} {perms}")
