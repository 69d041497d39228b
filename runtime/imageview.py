"""docker's views of a stored image, for ``refrt images``/``history``/``inspect`` and the Engine API's
``/images/...`` alike: the inspect JSON, the history rows, and image creation times ("N days ago")."""

from __future__ import annotations

import datetime
import re
from typing import Any

from runtime.humanize import human_duration, human_size
from runtime.store import Image, Store

NONE = "<none>"


def parse_time(text: str) -> datetime.datetime | None:
    if not text:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if not match:
        return None
    base = datetime.datetime.fromisoformat(match.group(1))
    micro = int((match.group(2) or "0")[:6].ljust(6, "0"))
    zone = match.group(3) or "Z"
    tz = datetime.UTC if zone == "Z" else datetime.datetime.strptime(zone, "%z").tzinfo
    return base.replace(microsecond=micro, tzinfo=tz)


def since(text: str) -> str:
    when = parse_time(text)
    if when is None:
        return "N/A"
    delta = datetime.datetime.now(datetime.UTC) - when
    return human_duration(max(delta.total_seconds(), 0)) + " ago"


def inspect_image(store: Store, ref: str) -> dict[str, Any]:
    """``docker image inspect`` JSON for one image (raises ``ImageNotFound``)."""
    image = store.resolve(ref)
    config = image.config
    lowers = [str(p) for p in reversed([layer.path for layer in image.layers])]  # top first
    data: dict[str, str] = {}
    if lowers:
        data["UpperDir"] = lowers[0]
        if len(lowers) > 1:
            data["LowerDir"] = ":".join(lowers[1:])
    return {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": config.get("comment", ""),
        "Created": image.created,
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config", {}),
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": data},
        "RootFS": {"Type": "layers", "Layers": image.diff_ids},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "ManifestDigest": image.manifest_digest,
    }


def history_rows(image: Image, *, no_trunc: bool = False, human: bool = True) -> list[dict[str, Any]]:
    """Newest first: each history entry with the size of the layer it made (0 for ``empty_layer`` ones)."""
    history = list(image.config.get("history") or [])
    if not history:
        history = [{"created": image.created, "created_by": ""} for _ in image.layers]
    layer_sizes = [layer.size for layer in image.layers]
    rows: list[dict[str, Any]] = []
    index = 0
    for entry in history:
        size = 0
        if not entry.get("empty_layer") and index < len(layer_sizes):
            size = layer_sizes[index]
            index += 1
        created_by = str(entry.get("created_by", ""))
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append(
            {
                "ID": NONE,
                "CreatedSince": since(str(entry.get("created", ""))),
                "CreatedAt": str(entry.get("created", "")),
                "CreatedBy": created_by,
                "Size": human_size(size) if human else str(size),
                "Comment": str(entry.get("comment", "")),
            }
        )
    rows.reverse()
    for i, row in enumerate(rows):
        row["ID"] = (image.id if no_trunc else image.short_id) if i == 0 else "<missing>"
    return rows
