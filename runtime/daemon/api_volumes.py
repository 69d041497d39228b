"""The Engine API's volumes: list, create, inspect, delete, prune (the ``local`` driver only).

``runtime.volumes.VolumeStore`` does the work, as for ``refrt volume``; changes hold the ``volumes`` lock as the
CLI's do. API 1.41 (docker 20.10) prunes every unused volume, named ones included; refrt follows the version it
serves (the "anonymous only" default came with API 1.42).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.daemon import Daemon
from runtime.daemon.api_images import api_filters, labels_match
from runtime.daemon.api_system import events
from runtime.daemon.http import ApiError, Request, Response
from runtime.locking import locked
from runtime.volumes import Volume, VolumeStore


def _size(path: Path) -> int:
    """Bytes of the files under ``path`` (what a prune gives back)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _listed(store: VolumeStore, vol: Volume, filters: dict[str, list[str]]) -> bool:
    if filters.get("name") and not any(n in vol.name for n in filters["name"]):
        return False
    if filters.get("driver") and "local" not in filters["driver"]:
        return False
    labels = vol.inspect()["Labels"] or {}
    if filters.get("label") and not labels_match(labels, filters["label"]):
        return False
    unused = not store.users(vol.name) if filters.get("dangling") else False
    return all((value.lower() in ("true", "1")) == unused for value in filters.get("dangling", []))


def routes(daemon: Daemon) -> list[tuple[str, str, Callable[[Request], Response | None]]]:
    paths = daemon.paths

    def list_volumes(request: Request) -> Response:
        filters = api_filters(request, ("name", "driver", "label", "dangling"))
        store = VolumeStore(paths)
        return Response({"Volumes": [v.inspect() for v in store.all() if _listed(store, v, filters)],
                         "Warnings": None})

    def create(request: Request) -> Response:
        body: Any = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid body: not a JSON object")
        if body.get("Driver") not in (None, "", "local"):
            raise ApiError(400, f"volume driver {body['Driver']!r} is not supported (local only)")
        labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
        options = {str(k): str(v) for k, v in (body.get("DriverOpts") or {}).items()}
        with locked(paths.locks, "volumes"):
            vol, _ = VolumeStore(paths).create(str(body.get("Name") or ""), labels=labels, options=options)
        events(daemon).publish("volume", "create", vol.name, {"driver": "local"})
        return Response(vol.inspect(), status=201)

    def inspect(request: Request) -> Response:
        return Response(VolumeStore(paths).get(request.params["name"]).inspect())

    def delete(request: Request) -> Response:
        with locked(paths.locks, "volumes"):
            VolumeStore(paths).remove(request.params["name"], force=request.flag("force"))
        events(daemon).publish("volume", "destroy", request.params["name"], {"driver": "local"})
        return Response(None, status=204)

    def prune(request: Request) -> Response:
        filters = api_filters(request, ("label", "all"))
        labels = dict(item.partition("=")[::2] for item in filters.get("label", []))
        store = VolumeStore(paths)
        with locked(paths.locks, "volumes"):
            sizes = {v.name: _size(Path(v.mountpoint)) for v in store.all() if not store.users(v.name)}
            removed = store.prune(all_volumes=True, labels=labels)
        for name in removed:
            events(daemon).publish("volume", "destroy", name, {"driver": "local"})
        return Response({"VolumesDeleted": removed or None, "SpaceReclaimed": sum(sizes.get(n, 0) for n in removed)})

    return [
        ("GET", "/volumes", list_volumes),
        ("POST", "/volumes/create", create),
        ("POST", "/volumes/prune", prune),
        ("GET", "/volumes/{name}", inspect),
        ("DELETE", "/volumes/{name}", delete),
    ]
