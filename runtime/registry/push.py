"""``refrt push``: upload an image's blobs, then its manifest, as the distribution spec orders it.

Per blob: HEAD first (the registry may have it already); else a cross-repository mount when the image is known
to be in another repository of the same registry (its repo digests say so - docker uses the same knowledge);
else an upload, monolithic (POST + PUT streaming the file) up to a GiB, chunked (PATCH with ``Content-Range``)
beyond. Layers go up in parallel (``REFRT_MAX_CONCURRENT_UPLOADS``, default 5, as docker's
``max-concurrent-uploads``), each thread with its own connection; then the config, then the manifest, with its own
media type, so the registry never holds a manifest whose blobs are missing.
The digest the registry answers must be the digest of the bytes sent; it is recorded as a repo digest.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from runtime.registry import manifests
from runtime.registry.client import RegistryClient
from runtime.registry.endpoints import client_for
from runtime.registry.errors import DigestMismatchError, RegistryError
from runtime.registry.manifests import Descriptor
from runtime.registry.parallel import ClientPool, concurrency, run_all
from runtime.store.errors import ImageNotFound, InvalidReference
from runtime.store.images import Image
from runtime.store.reference import Reference, parse_reference
from runtime.store.store import Store

if TYPE_CHECKING:
    from runtime.cli import Context

#: Blobs larger than this are sent in PATCH chunks of CHUNK_SIZE, for proxies that cap a request's body. Below it,
#: one PUT streams the blob from its file: measured against docker-registry, a 40 MiB layer went up faster in one
#: request than in 16 MiB chunks (each chunk is a request the registry writes and hashes before the next starts).
CHUNKED_THRESHOLD = 1 << 30
CHUNK_SIZE = 16 << 20
CONCURRENCY_ENV = "REFRT_MAX_CONCURRENT_UPLOADS"
#: Layers pushed at once, as docker's ``max-concurrent-uploads``.
DEFAULT_CONCURRENCY = 5


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


def max_concurrent_uploads() -> int:
    return concurrency(CONCURRENCY_ENV, DEFAULT_CONCURRENCY)


def _push_layers(
    client: RegistryClient, store: Store, ref: Reference, layers: list[Descriptor], sources: list[str],
    out: TextIO | None,
) -> None:
    """Push the layers, ``max_concurrent_uploads`` at a time (each thread with its own client and connection)."""
    lock = threading.Lock()
    clients = ClientPool(client)

    def one(blob: Descriptor) -> None:
        status = push_blob(clients.get(), store, ref, blob, sources)
        if out:
            with lock:
                print(f"{_short(blob.digest)}: {status}", file=out, flush=True)

    calls: list[Callable[[], object]] = [functools.partial(one, blob) for blob in layers]
    run_all(calls, min(max_concurrent_uploads(), len(layers)), clients)


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
    client.ping()  # settles scheme and challenge once, before the threads clone the client
    _push_layers(client, store, ref, list(reversed(layers)), sources, out)
    push_blob(client, store, ref, config, sources)
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
