"""What an image is to refrt, and the OCI documents (manifest, config, index entries) it is made from.

An image's identity is the digest of its config (docker's "image id"); a manifest ties that config to compressed
layer blobs. The store's ``index.json`` is an OCI image index whose entries point at manifests and carry the
reference they are known by in ``org.opencontainers.image.ref.name`` (the *normalized* reference, or
``name@sha256:...`` for a repo digest); an entry without a name keeps an untagged ("dangling") image alive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runtime.store.errors import StoreError, UnsupportedLayer
from runtime.store.layers import Layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
LAYER_TYPES = (OCI_LAYER_GZIP, OCI_LAYER_TAR, DOCKER_LAYER_GZIP, OCI_LAYER_NONDIST)

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_ID = "io.refrt.image.id"


@dataclass
class Image:
    """One image: its config (``id`` is the config digest), layers bottom to top, and the names it is known by."""

    id: str
    config: dict[str, Any]
    layers: list[Layer]
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    manifest_digest: str = ""
    manifest_media_type: str = OCI_MANIFEST

    @property
    def created(self) -> str:
        return str(self.config.get("created", ""))

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


@dataclass(frozen=True)
class Manifest:
    """The parts of an image manifest refrt uses, and its exact bytes (their digest is the manifest digest)."""

    raw: bytes
    media_type: str
    config_digest: str
    config_size: int
    layers: list[dict[str, Any]]

    @classmethod
    def parse(cls, raw: bytes, media_type: str = "") -> Manifest:
        try:
            doc = json.loads(raw)
            kind = doc.get("mediaType") or media_type or OCI_MANIFEST
            if kind in INDEX_TYPES or "manifests" in doc:
                raise StoreError("got an image index (manifest list); pick one platform's manifest first")
            if kind not in MANIFEST_TYPES:
                raise StoreError(f"unsupported manifest media type {kind!r}")
            config = doc["config"]
            layers = list(doc.get("layers", []))
            for desc in layers:
                layer_type = desc.get("mediaType", OCI_LAYER_GZIP)
                if layer_type not in LAYER_TYPES:
                    raise UnsupportedLayer(f"layer {desc.get('digest')} has unsupported media type {layer_type}")
            return cls(raw, kind, str(config["digest"]), int(config.get("size", 0)), layers)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"malformed image manifest: {exc}") from None


def parse_config(raw: bytes) -> dict[str, Any]:
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError("not an object")
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if not isinstance(diff_ids, list):
            raise ValueError("rootfs.diff_ids is not a list")
        return config
    except (ValueError, AttributeError) as exc:
        raise StoreError(f"malformed image config: {exc}") from None


_GO_ORDER: dict[str, list[str]] = {
    "": ["created", "author", "architecture", "variant", "os", "os.version", "os.features", "config", "rootfs",
         "history"],
    "config": ["User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal",
               "ArgsEscaped"],
    "rootfs": ["type", "diff_ids"],
    "history": ["created", "created_by", "author", "comment", "empty_layer"],
}


def _go_ordered(doc: Any, where: str = "") -> Any:
    if isinstance(doc, list):
        return [_go_ordered(item, where) for item in doc]
    if not isinstance(doc, dict) or where not in _GO_ORDER:
        return doc
    order = _GO_ORDER[where]
    keys = [k for k in order if k in doc] + [k for k in doc if k not in order]
    return {k: _go_ordered(doc[k], k if where == "" else "-") for k in keys}


def canonical_json(doc: dict[str, Any], *, image_config: bool = True) -> bytes:
    """How refrt serialises the configs and manifests it creates: compact, and in the field order and escaping of
    Go's ``encoding/json`` on the OCI structs. Tools that decode and re-encode a config (skopeo converting
    docker-archive to OCI) then produce the same bytes, so the image id survives the trip."""
    text = json.dumps(_go_ordered(doc) if image_config else doc, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()
