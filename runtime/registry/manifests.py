"""Manifest media types, and reading the parts of a manifest or index that push and pull need.

Four kinds are accepted: OCI image manifest and index, Docker v2 schema 2 manifest and manifest list. Docker's
schema 1 (signed, with v1 history) is refused with a clear error, as current docker does.
"""

from __future__ import annotations

import json
import platform as host_platform
from dataclasses import dataclass
from typing import Any

from runtime.registry.errors import UnsupportedManifestError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
#: Sent on every manifest GET. Without the OCI types distribution 2.8 answers 404 for OCI manifests.
ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]

_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        try:
            return cls(
                media_type=str(data.get("mediaType", "")),
                digest=str(data["digest"]),
                size=int(data["size"]),
                platform=data.get("platform"),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UnsupportedManifestError(f"malformed descriptor in manifest: {data!r:.200}") from None


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _ARCH.get(host_platform.machine(), (host_platform.machine(), ""))
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/amd64``, ``linux/arm/v7``, or just ``arm64`` (os linux)."""
        parts = text.split("/")
        if len(parts) == 1:
            return cls("linux", parts[0])
        if len(parts) in (2, 3) and all(parts):
            return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
        raise UnsupportedManifestError(f"invalid platform {text!r} (want os/arch[/variant])")

    def matches(self, spec: dict[str, Any] | None) -> bool:
        if not spec:
            return False
        if spec.get("os") != self.os or spec.get("architecture") != self.architecture:
            return False
        return not self.variant or not spec.get("variant") or spec.get("variant") == self.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def load(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise UnsupportedManifestError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UnsupportedManifestError("manifest is not a JSON object")
    return doc


def media_type_of(data: bytes, content_type: str) -> str:
    """The manifest's media type: the ``mediaType`` field, else Content-Type, else guessed from its shape."""
    doc = load(data)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type in IMAGE_MANIFESTS + INDEXES + DOCKER_SCHEMA1:
        return content_type
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[1]
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    raise UnsupportedManifestError(f"unknown manifest type {content_type!r}")


def check_supported(media_type: str) -> None:
    if media_type in DOCKER_SCHEMA1:
        raise UnsupportedManifestError(
            "Docker Image Format v1 and Docker Image manifest version 2, schema 1 are not supported"
        )
    if media_type not in IMAGE_MANIFESTS + INDEXES:
        raise UnsupportedManifestError(f"unsupported manifest media type {media_type!r}")


def image_parts(data: bytes) -> tuple[Descriptor, list[Descriptor]]:
    """(config, layers) of an image manifest."""
    doc = load(data)
    config = Descriptor.from_json(doc.get("config"))
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise UnsupportedManifestError("image manifest has no layers list")
    return config, [Descriptor.from_json(layer) for layer in layers]


def pick_platform(data: bytes, wanted: Platform) -> Descriptor:
    """The entry of an index for ``wanted`` (docker's choice when several match: the first)."""
    entries = [Descriptor.from_json(m) for m in load(data).get("manifests") or []]
    for entry in entries:
        if wanted.matches(entry.platform):
            return entry
    available = ", ".join(
        str(Platform(e.platform.get("os", "?"), e.platform.get("architecture", "?"), e.platform.get("variant", "")))
        for e in entries
        if e.platform
    )
    raise UnsupportedManifestError(
        f"no matching manifest for {wanted} in the manifest list entries (available: {available or 'none'})"
    )
