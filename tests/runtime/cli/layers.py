"""Deep images for the layer-limit tests: the offline busybox archive plus tiny layers, as a docker-archive."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any


def tiny_layer(i: int) -> bytes:
    """Layer ``i``: one file, ``layers/NNNN``, holding ``i``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = f"{i}\n".encode()
        info = tarfile.TarInfo(f"layers/{i:04d}")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deep_archive(base: Path, total: int, out: Path, tag: str) -> Path:
    """A docker-archive of ``tag`` with ``total`` layers: ``base``'s (a docker-archive) and tiny ones on top."""
    with tarfile.open(base) as src:
        manifest = json.load(src.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config: dict[str, Any] = json.load(src.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        base_layers = [(name, src.extractfile(name).read()) for name in manifest["Layers"]]  # type: ignore[union-attr]
    layers = list(base_layers)
    for i in range(total - len(base_layers)):
        layers.append((f"tiny{i:04d}/layer.tar", tiny_layer(i)))
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for _, data in layers]
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    config["history"] = [{"created": "2020-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(total)]
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    entries = [("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag],
                                               "Layers": [name for name, _ in layers]}]).encode()),
               (config_name, config_bytes), *layers]
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out
