"""``refrt push``: upload an image's blobs, then its manifest, as the distribution spec orders it.

Per blob: HEAD first (the registry may have it already); else a cross-repository mount when the image is known
to be in another repository of the same registry (its repo digests say so - docker uses the same knowledge);
else an upload, monolithic (POST + PUT) for small blobs and chunked (PATCH with ``Content-Range``) for big ones.
The manifest goes last, with its own media type, so the registry never holds a manifest whose blobs are missing.
The digest the registry answers must be the digest of the bytes sent; it is recorded as a repo digest.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, TextIO

from runtime.registry import manifests
from runtime.registry.client import RegistryClient
from runtime.registry.endpoints import client_for
from runtime.registry.errors import DigestMismatchError, RegistryError
from runtime.registry.manifests import Descriptor
from runtime.store.errors import ImageNotFound, InvalidReference
from runtime.store.images import Image
from runtime.store.reference import Reference, parse_reference
from runtime.store.store import Store

if TYPE_CHECKING:
    from runtime.cli import Context

#: Blobs larger than this are sent in PATCH chunks of CHUNK_SIZE (a dropped connection costs one chunk).
CHUNKED_THRESHOLD = 32 << 20
CHUNK_SIZE = 16 << 20


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def mount_sources(image: Image, ref: Reference) -> list[str]:
    """Other repositories of the same registry known to hold this image (from its repo digests)."""
    sources: list[str] = []
    for repo_digest in image.repo_digests:
        name = repo_digest.partition("@")[0]
        try:
            other = parse_reference(name)
        except InvalidReference:
            continue
        if other.domain == ref.domain and other.path != ref.path and other.path not in sources:
            sources.append(other.path)
    return sources


def push_blob(
    client: RegistryClient, store: Store, ref: Reference, blob: Descriptor, sources: list[str]
) -> str:
    """Make ``blob`` present in ``ref``'s repository; returns what happened, in docker's words."""
    scopes = [f"repository:{ref.path}:pull,push"] + [f"repository:{s}:pull" for s in sources[:1]]
    if client.blob_size(ref.path, blob.digest, scopes) is not None:
        return "Layer already exists"
    location: str | None
    if sources:
        location = client.start_upload(ref.path, scopes, mount=(blob.digest, sources[0]))
        if location is None:
            return f"Mounted from {sources[0]}"
    else:
        location = client.start_upload(ref.path, scopes)
    assert location is not None
    with store.blobs.open(blob.digest) as stream:
        if blob.size > CHUNKED_THRESHOLD:
            client.upload_chunked(location, ref.path, blob.digest, stream, blob.size, CHUNK_SIZE)
        else:
            client.upload_monolithic(location, ref.path, blob.digest, stream, blob.size)
    return "Pushed"


def push_image(
    store: Store, client: RegistryClient, ref: Reference, image: Image, *, out: TextIO | None = None
) -> str:
    """Push ``image`` as ``ref``; returns the manifest digest."""
    data = store.manifest_bytes(image)
    media_type = manifests.media_type_of(data, "")
    config, layers = manifests.image_parts(data)
    sources = mount_sources(image, ref)
    if out:
        print(f"The push refers to repository [{ref.name}]", file=out, flush=True)
    for blob in [*reversed(layers), config]:
        status = push_blob(client, store, ref, blob, sources)
        if out and blob is not config:
            print(f"{_short(blob.digest)}: {status}", file=out, flush=True)
    tag = ref.tag or "latest"
    what = f"manifest {ref.familiar_name}:{tag}"
    answered = client.put_manifest(ref.path, tag, data, media_type, what)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if answered and answered.startswith("sha256:") and answered != digest:
        raise DigestMismatchError(f"{what}: registry stored digest {answered}, sent {digest}")
    store.add_repo_digest(image, ref.name)
    if out:
        print(f"{tag}: digest: {digest} size: {len(data)}", file=out, flush=True)
    return digest


def push(ctx: Context, name: str, *, out: TextIO | None = None, quiet: bool = False) -> str:
    """Push the local image ``name`` (``NAME[:TAG]``, tag ``latest`` by default) to its registry."""
    ref = parse_reference(name)
    if ref.digest:
        raise RegistryError(f"cannot push a digest reference: {name}")
    store = Store(ctx.paths)
    try:
        image = store.resolve(ref.familiar)
    except ImageNotFound:
        raise ImageNotFound(f"An image does not exist locally with the tag: {ref.familiar_name}") from None
    with client_for(ref.domain, ctx.config_dir) as client:
        digest = push_image(store, client, ref, image, out=None if quiet else out)
    if quiet and out:
        print(f"{ref.tag}: digest: {digest} size: {len(store.manifest_bytes(image))}", file=out)
    return digest
