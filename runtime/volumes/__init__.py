"""Volumes: bind mounts, named and anonymous volumes, tmpfs - resolved to what the container code mounts.

On disk (``paths.volumes``)::

    volumes/<name>/_data            the content, bind-mounted into containers (never in a container's upper layer)
    volumes/<name>/volume.json      name, created, labels, options, anonymous
    volumes/<name>/users/<cid>      one empty file per container using it ("in use" bookkeeping)

"In use": a volume is in use while a container that mounts it exists (running or stopped, as docker counts).
Users are recorded by :func:`prepare_mounts` and dropped by :func:`release_mounts`; a record whose container
directory (``paths.containers/<cid>``) is gone is stale and ignored, and the containers' ``config.json``
``mounts`` are scanned as well, so a crash between the two never makes a volume removable while used.
Changes hold ``locked(paths.locks, "volumes")``.

Anonymous volumes (the image's ``Volumes``, ``-v /path``, ``--mount type=volume`` without source) get a random
64-hex name and are removed by ``rm -v`` / ``--rm`` (``release_mounts(remove_anonymous=True)``) when no other
container uses them (``--volumes-from`` shares them); named volumes are only removed by ``volume rm``/``prune``.
A new (empty) volume is filled from the image's content at its mount point unless ``nocopy``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runtime.locking import locked
from runtime.paths import Paths
from runtime.spec import MountSpec
from runtime.volumes.errors import (
    BadMountSpec,
    BindSourceMissing,
    VolumeError,
    VolumeInUse,
    VolumeNotFound,
)
from runtime.volumes.parse import (
    check_volume_name,
    parse_mount_flag,
    parse_tmpfs_flag,
    parse_volume_flag,
    parse_volumes_from_flag,
)
from runtime.volumes.populate import copy_image_path

__all__ = [
    "Volume", "VolumeStore", "parse_mount_flag", "parse_tmpfs_flag", "parse_volume_flag",
    "parse_volumes_from_flag", "prepare_mounts",
    "release_mounts", "volumes_from",
]

#: Given the mount target, fill the directory passed as second argument (an alternative to lower dirs).
Populator = Callable[[str, Path], bool]


class HasPaths(Protocol):
    @property
    def paths(self) -> Paths: ...


@dataclass
class Volume:
    name: str
    created: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    mountpoint: str = ""

    def inspect(self) -> dict[str, Any]:
        """docker's ``volume inspect`` shape."""
        labels = dict(self.labels)
        if self.anonymous:
            labels.setdefault("com.docker.volume.anonymous", "")
        return {"CreatedAt": self.created, "Driver": "local", "Labels": labels or None,
                "Mountpoint": self.mountpoint, "Name": self.name, "Options": self.options or None,
                "Scope": "local"}


class VolumeStore:
    """Volumes of one refrt root (callers hold the ``volumes`` lock around changes)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.base = paths.volumes

    def _dir(self, name: str) -> Path:
        return self.base / name

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "volume.json").is_file()

    def get(self, name: str) -> Volume:
        try:
            data = json.loads((self._dir(name) / "volume.json").read_text())
        except FileNotFoundError:
            raise VolumeNotFound(f"no such volume: {name}") from None
        vol = Volume(**data)
        vol.mountpoint = str(self._dir(name) / "_data")
        return vol

    def all(self) -> list[Volume]:
        if not self.base.is_dir():
            return []
        return [self.get(d.name) for d in sorted(self.base.iterdir()) if self.exists(d.name)]

    def create(self, name: str = "", *, labels: dict[str, str] | None = None,
               options: dict[str, str] | None = None, anonymous: bool = False) -> tuple[Volume, bool]:
        """Return the volume, creating it when missing; the flag says whether it was created now."""
        name = check_volume_name(name) if name else secrets.token_hex(32)
        if self.exists(name):
            return self.get(name), False
        if options:
            raise BadMountSpec(f"volume options are not supported by the local driver here: {sorted(options)}")
        d = self._dir(name)
        (d / "_data").mkdir(parents=True, exist_ok=True)
        (d / "users").mkdir(exist_ok=True)
        vol = Volume(name=name, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     labels=dict(labels or {}), anonymous=anonymous)
        tmp = d / ".volume.json.tmp"
        tmp.write_text(json.dumps({k: v for k, v in asdict(vol).items() if k != "mountpoint"}, indent=1))
        os.replace(tmp, d / "volume.json")
        return self.get(name), True

    def add_user(self, name: str, container_id: str) -> None:
        users = self._dir(name) / "users"
        users.mkdir(exist_ok=True)
        (users / container_id).touch()

    def drop_user(self, name: str, container_id: str) -> None:
        (self._dir(name) / "users" / container_id).unlink(missing_ok=True)

    def users(self, name: str, *, excluding: str = "") -> list[str]:
        """Ids of existing containers using the volume: user records plus a scan of container configs (a bind of
        the volume's directory counts: that is how ``--volumes-from`` may hand it on)."""
        found = set()
        users = self._dir(name) / "users"
        if users.is_dir():
            found |= {u.name for u in users.iterdir() if (self.paths.containers / u.name).is_dir()}
        data = str(self._dir(name) / "_data")
        found |= {cid for cid, mounts in _container_mounts(self.paths) if any(
            (m.get("type") == "volume" and m.get("source") == name)
            or (m.get("type") == "bind" and str(m.get("host_path") or m.get("source") or "") == data)
            for m in mounts)}
        found.discard(excluding)
        return sorted(found)

    def remove(self, name: str, *, force: bool = False) -> None:
        """``volume rm``: refused while a container uses it (even with ``force``, as docker does)."""
        if not self.exists(name):
            if force:
                return
            raise VolumeNotFound(f"no such volume: {name}")
        users = self.users(name)
        if users:
            raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(users)}]")
        self._delete(name)

    def _delete(self, name: str) -> None:
        d = self._dir(name)
        tomb = d.with_name(f".removing-{name}-{secrets.token_hex(4)}")
        os.replace(d, tomb)  # atomic disappearance, then the slow part
        shutil.rmtree(tomb, ignore_errors=True)

    def prune(self, *, all_volumes: bool = False, labels: dict[str, str] | None = None) -> list[str]:
        """Remove unused volumes: anonymous ones, or every unused one with ``all_volumes`` (docker >= 23)."""
        removed: list[str] = []
        for vol in self.all():
            if not (vol.anonymous or all_volumes) or self.users(vol.name):
                continue
            if labels and any(vol.labels.get(k) != v for k, v in labels.items()):
                continue
            self._delete(vol.name)
            removed.append(vol.name)
        return removed


def _container_mounts(paths: Paths) -> list[tuple[str, list[dict[str, Any]]]]:
    """(container id, prepared mounts) from every container's ``config.json`` (the container code's key
    ``mounts``; ``spec.mounts`` as a fallback)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    if not paths.containers.is_dir():
        return out
    for d in paths.containers.iterdir():
        try:
            config = json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            continue
        mounts = config.get("mounts") or (config.get("spec") or {}).get("mounts") or []
        out.append((str(config.get("id") or d.name), [m for m in mounts if isinstance(m, dict)]))
    return out


def _image_volumes(image_config: dict[str, Any]) -> list[str]:
    """Targets of the image's ``VOLUME`` instructions (full OCI config or its inner ``config`` accepted)."""
    inner = image_config.get("config", image_config) if isinstance(image_config, dict) else {}
    vols = (inner or {}).get("Volumes") or {}
    return sorted(str(v) for v in vols)


def _prepare_bind(spec: MountSpec) -> None:
    source = Path(spec.source)
    if not source.exists():
        if spec.options.get("create_host_path") != "false":
            source.mkdir(parents=True, exist_ok=True)
        else:
            raise BindSourceMissing(
                f'invalid mount config for type "bind": bind source path does not exist: {spec.source}'
            )
    spec.host_path = str(source)


def prepare_mounts(ctx: HasPaths, container_id: str, mounts: list[MountSpec], image_config: dict[str, Any],
                   rootfs_lower_dirs: list[Path] | None = None, *,
                   populate: Populator | None = None) -> list[MountSpec]:
    """Resolve every mount to a host path (``host_path``), adding anonymous volumes for the image's ``Volumes``.

    Named volumes are created when missing; a volume whose ``_data`` is empty is filled from the image's content
    at the target (``rootfs_lower_dirs``, top first, or the ``populate`` callable) unless ``nocopy``. Binds: a
    ``-v`` source is created when missing, a ``--mount`` source must exist (``options["create_host_path"]`` is
    "false" for ``--mount``; absent counts as ``-v``). On error nothing new is left behind.
    """
    specs = [MountSpec(**asdict(m)) for m in mounts]
    targets = {os.path.normpath(m.target) for m in specs}
    for path in _image_volumes(image_config):
        if os.path.normpath(path) not in targets:
            specs.append(MountSpec(type="volume", target=os.path.normpath(path), anonymous=True))
    store = VolumeStore(ctx.paths)
    created: list[str] = []
    try:
        with locked(ctx.paths.locks, "volumes"):
            for spec in specs:
                if spec.type == "bind":
                    _prepare_bind(spec)
                elif spec.type == "volume":
                    vol, new = store.create(spec.source, anonymous=not spec.source)
                    if new:
                        created.append(vol.name)
                    spec.source, spec.host_path = vol.name, vol.mountpoint
                    spec.anonymous = vol.anonymous
                    store.add_user(vol.name, container_id)
        for spec in specs:
            if spec.type == "volume" and spec.options.get("nocopy") != "true":
                data = Path(spec.host_path)
                if not any(data.iterdir()):
                    if populate is not None:
                        populate(spec.target, data)
                    elif rootfs_lower_dirs:
                        copy_image_path([Path(p) for p in rootfs_lower_dirs], spec.target, data)
    except (OSError, BadMountSpec, BindSourceMissing) as exc:
        with locked(ctx.paths.locks, "volumes"):
            for spec in specs:
                if spec.type == "volume" and spec.source:
                    store.drop_user(spec.source, container_id)
            for name in created:
                if not store.users(name):
                    store._delete(name)
        if isinstance(exc, OSError):
            raise VolumeError(f"preparing volumes: {exc}") from exc
        raise
    return specs


def release_mounts(ctx: HasPaths, container_id: str, mounts: list[MountSpec], remove_anonymous: bool) -> None:
    """The container is going away: drop it as a user; with ``remove_anonymous`` (``rm -v``, ``--rm``) delete
    its anonymous volumes that no other container uses. Idempotent."""
    store = VolumeStore(ctx.paths)
    with locked(ctx.paths.locks, "volumes"):
        for spec in mounts:
            if spec.type != "volume" or not spec.source or not store.exists(spec.source):
                continue
            store.drop_user(spec.source, container_id)
            if remove_anonymous and store.get(spec.source).anonymous and not store.users(
                spec.source, excluding=container_id
            ):
                store._delete(spec.source)


def _find_container_dir(paths: Paths, ref: str) -> Path:
    name = ref.lstrip("/")
    prefix_matches = []
    if paths.containers.is_dir():
        for d in paths.containers.iterdir():
            try:
                config = json.loads((d / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if d.name == ref or config.get("name", "").lstrip("/") == name:
                return d
            if d.name.startswith(ref):
                prefix_matches.append(d)
    if len(prefix_matches) == 1:
        return prefix_matches[0]
    raise VolumeNotFound(f"No such container: {ref}")


def volumes_from(ctx: HasPaths, container_ref: str) -> list[MountSpec]:
    """``--volumes-from NAME[:ro|:rw]``: that container's bind and volume mounts (from its ``config.json``
    ``mounts``), with the given access mode if any. tmpfs mounts are not shared, as in docker."""
    ref, mode = parse_volumes_from_flag(container_ref)
    config = json.loads((_find_container_dir(ctx.paths, ref) / "config.json").read_text())
    raw = config.get("mounts") or (config.get("spec") or {}).get("mounts") or []
    out: list[MountSpec] = []
    for m in raw:
        if m.get("type") not in ("bind", "volume"):
            continue
        spec = MountSpec(**{k: v for k, v in m.items() if k in MountSpec.__dataclass_fields__})
        spec.anonymous = False
        spec.options = {k: v for k, v in spec.options.items() if k != "create_host_path"}
        if mode:
            spec.read_only = mode == "ro"
        out.append(spec)
    return out
