"""The optional packages a container calls into: ``runtime.volumes`` and ``runtime.network``.

They are imported lazily and may be absent (refrt then offers only ``--network none|host`` and plain bind
mounts). Each wrapper is the one place that names the other package's function, so integrating or changing
one is a single edit here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from runtime.errors import UsageError
from runtime.spec import MountSpec, NetworkRequest

BUILTIN_NETWORK_MODES = ("none", "host")


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None


def network_module() -> ModuleType | None:
    return _optional("runtime.network")


def volumes_module() -> ModuleType | None:
    return _optional("runtime.volumes")


def default_network_mode() -> str:
    """docker's default is the bridge network; without the network package a container gets only ``lo``."""
    return "bridge" if network_module() is not None else "none"


def check_network_mode(mode: str) -> None:
    if mode not in BUILTIN_NETWORK_MODES and network_module() is None:
        raise UsageError(f"network {mode!r} not available: only none and host are supported on this refrt")


def needs_network_hook(mode: str) -> bool:
    """With the network package every mode goes through it (it also writes hosts/resolv.conf for none/host)."""
    return network_module() is not None


def netns_to_join(ctx: Any, request: NetworkRequest) -> str:
    """The namespace to join instead of a new one (``container:NAME``), "" for a new one or the host's."""
    module = network_module()
    if module is None or request.mode == "host":
        return ""
    path: str | None = module.netns_path_for(ctx, request)
    return path or ""


def network_attach(ctx: Any, container_id: str, name: str, pid: int, request: NetworkRequest) -> dict[str, Any]:
    module = network_module()
    if module is None:
        return {}
    result: dict[str, Any] = module.attach(ctx, container_id, name, pid, request)
    return result


def network_detach(ctx: Any, container_id: str) -> None:
    module = network_module()
    if module is not None:
        module.detach(ctx, container_id)


def prepare_mounts(
    ctx: Any, container_id: str, mounts: list[MountSpec], image_config: dict[str, Any],
    lower_dirs: list[str] | None = None,
) -> list[MountSpec]:
    """Volumes resolved to host directories (created when new, filled from the image's ``lower_dirs``, top
    first); without the package only binds and tmpfs."""
    module = volumes_module()
    if module is not None:
        prepared: list[MountSpec] = module.prepare_mounts(
            ctx, container_id, mounts, image_config, [Path(p) for p in lower_dirs or []]
        )
        return prepared
    for spec in mounts:
        if spec.type == "volume":
            raise UsageError(f"named and anonymous volumes need runtime.volumes: {spec.target}")
        if spec.type == "bind":
            spec.host_path = spec.source
    return mounts


def release_mounts(ctx: Any, container_id: str, mounts: list[MountSpec], remove_anonymous: bool) -> None:
    module = volumes_module()
    if module is not None:
        module.release_mounts(ctx, container_id, mounts, remove_anonymous)
