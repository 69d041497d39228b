"""``refrt pull``: fetch a manifest (picking the host's platform from an index), then its config and layers.

All or nothing: the pull runs inside the store's journal (``Store.all_or_nothing``) and stages what it does not
unpack at once in the store's scratch space; a wrong digest, a short body or a dropped connection that cannot be
resumed therefore leaves the store exactly as it was (and a first pull that fails leaves no store behind).

Fast as it can be on one machine: layers download in parallel (``REFRT_MAX_CONCURRENT_DOWNLOADS``, default 3, as
docker's ``max-concurrent-downloads``), and a gzip layer is unpacked *while* it downloads - the body streams
through the compressed-digest hash into the stored blob, the gunzip, the diff_id hash and the unpacker in one pass
(``Store.add_layer_from_tar``), so nothing is written, read back and hashed a second time. Digest, size and
diff_id are checked at the end of that pass; a layer refused there is taken back by the journal. Dropped
connections are resumed below the unpacker (:mod:`runtime.registry.blobstream`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO, cast

from runtime.errors import NotFoundError
from runtime.registry import manifests
from runtime.registry.blobstream import BlobStream
from runtime.registry.client import RegistryClient
from runtime.registry.endpoints import client_for
from runtime.registry.errors import DigestMismatchError, RegistryError
from runtime.registry.manifests import Descriptor, Platform
from runtime.registry.parallel import ClientPool, concurrency, run_all
from runtime.store.images import Image
from runtime.store.reference import Reference, parse_reference
from runtime.store.store import Store

if TYPE_CHECKING:
    from runtime.cli import Context

CHUNK = 1 << 20
CONCURRENCY_ENV = "REFRT_MAX_CONCURRENT_DOWNLOADS"
DEFAULT_CONCURRENCY = 3
#: An image config is read into memory.
MAX_CONFIG_SIZE = 8 << 20
#: Layer media types unpacked while they download (others are staged, then unpacked by the store).
GZIP_LAYERS = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
)


@dataclass
class Fetched:
    """A resolved manifest: what the reference named (``repo_digest``) and the image manifest stored."""

    data: bytes
    media_type: str
    digest: str
    repo_digest: str


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _verify_manifest(data: bytes, expected: str | None, header: str | None, what: str) -> str:
    digest = sha256_digest(data)
    if expected and expected != digest:
        raise DigestMismatchError(f"{what}: manifest digest mismatch: expected {expected}, got {digest}")
    if header and header.startswith("sha256:") and header != digest:
        raise DigestMismatchError(f"{what}: manifest digest mismatch: registry says {header}, content is {digest}")
    return digest


def _get(client: RegistryClient, ref: Reference, reference: str, expected: str | None) -> tuple[bytes, str, str]:
    what = f"manifest for {ref.familiar_name}:{reference}" if not reference.startswith("sha256:") else (
        f"manifest for {ref.familiar_name}@{reference}"
    )
    data, content_type, header = client.get_manifest(ref.path, reference, manifests.ACCEPT, what)
    digest = _verify_manifest(data, expected, header, what)
    media_type = manifests.media_type_of(data, content_type)
    manifests.check_supported(media_type)
    return data, media_type, digest


def fetch_manifest(client: RegistryClient, ref: Reference, wanted: Platform) -> Fetched:
    """The image manifest for ``ref``; through an index when the reference names one."""
    reference = ref.digest or ref.tag or "latest"
    data, media_type, digest = _get(client, ref, reference, ref.digest or None)
    repo_digest = digest
    if media_type in manifests.INDEXES:
        entry = manifests.pick_platform(data, wanted)
        data, media_type, digest = _get(client, ref, entry.digest, entry.digest)
        if media_type not in manifests.IMAGE_MANIFESTS:
            raise RegistryError(f"{ref.familiar}: index entry {entry.digest} is not an image manifest")
    return Fetched(data=data, media_type=media_type, digest=digest, repo_digest=repo_digest)


def _stage_blob(client: RegistryClient, ref: Reference, blob: Descriptor, target: Path) -> None:
    """Download one blob into ``target``, hashing while writing (resumed after drops by :class:`BlobStream`)."""
    with BlobStream(client, ref.path, blob) as stream:
        _save(stream, blob, target)


def _save(stream: BlobStream, blob: Descriptor, target: Path) -> None:
    """Write an opened blob into ``target``, hashing while writing; refuse it unless it hashes to its digest."""
    hasher = hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    got = "sha256:" + hasher.hexdigest()
    if got != blob.digest:
        raise DigestMismatchError(f"blob {blob.digest}: digest mismatch: content hashes to {got}; nothing stored")


def _current_manifest(store: Store, ref: Reference) -> str | None:
    """The manifest digest ``ref`` names in the store now (None when it names nothing)."""
    try:
        return store.resolve(ref.familiar).manifest_digest
    except NotFoundError:
        return None


def _make_scratch(scratch: Path) -> list[Path]:
    """Create the store's scratch dir (and missing parents); returns what was created, deepest first."""
    created = []
    path = scratch
    while not path.exists():
        created.append(path)
        path = path.parent
    scratch.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(dirs: list[Path], store: Store) -> None:
    """After a failed pull, the directories it created (the scratch dir's missing parents, and what the store made
    below them) go if nothing but empty directories is left in them - and, when this pull created the store itself,
    the store's empty index and layout marker with them."""
    if not dirs:
        return
    if store.root in dirs:
        try:
            empty = not json.loads(store.index_path.read_bytes()).get("manifests")
        except (OSError, ValueError, AttributeError):
            empty = False
        if empty:
            for name in (store.index_path, store.root / "oci-layout"):
                with contextlib.suppress(OSError):
                    name.unlink()
    for dirpath, _, _ in os.walk(dirs[-1], topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


def max_concurrent_downloads() -> int:
    return concurrency(CONCURRENCY_ENV, DEFAULT_CONCURRENCY)


def _config_bytes(store: Store, client: RegistryClient, ref: Reference, config: Descriptor, staging: Path) -> bytes:
    """The image config (stored, or downloaded into staging and verified): it names the layers' diff_ids."""
    if store.blobs.has(config.digest):
        return store.blobs.read(config.digest)
    if config.size > MAX_CONFIG_SIZE:
        raise RegistryError(f"{ref.familiar}: config of {config.size} bytes is over the {MAX_CONFIG_SIZE} allowed")
    target = staging / config.digest.partition(":")[2]
    _stage_blob(client, ref, config, target)
    return target.read_bytes()


def _diff_ids(config: bytes, count: int) -> list[str | None]:
    """The config's diff_ids, one per layer (None where the config does not say: the store's check decides)."""
    try:
        found = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    except (ValueError, AttributeError):
        found = []
    if not isinstance(found, list) or len(found) != count:
        return [None] * count
    return [str(d) for d in found]


class _Fetcher:
    """Fetches the config and the missing layers of one pull in threads, each with its own client: the config
    alongside at most ``max_concurrent_downloads`` layers. A layer's request goes out at once; only before reading
    its body does it wait for the config, which says whether to unpack it on the way (and checks it after)."""

    def __init__(self, store: Store, client: RegistryClient, ref: Reference, staging: Path, out: TextIO | None):
        self.store, self.ref, self.staging, self.out = store, ref, staging, out
        self.clients = ClientPool(client)
        self.staged: list[Descriptor] = []
        self._lock = threading.Lock()

    def run(self, config: Descriptor, layers: list[Descriptor], missing: list[Descriptor]) -> None:
        """Fetch the config (when missing) and the layers in ``missing``; raise the first failure, after every
        thread has stopped."""
        diff_ids: Future[list[str | None]] = Future()

        def fetch_config() -> None:
            try:
                diff_ids.set_result(self._config(config, len(layers)))
            except BaseException as exc:
                diff_ids.set_exception(exc)
                raise

        calls: list[Callable[[], object]] = [fetch_config]
        for index, layer in enumerate(layers):
            if layer in missing:
                calls.append(functools.partial(self._fetch, layer, index, diff_ids))
        run_all(calls, min(max_concurrent_downloads(), len(missing)) + 1, self.clients)

    def _config(self, config: Descriptor, count: int) -> list[str | None]:
        missing = not self.store.blobs.has(config.digest)
        diff_ids = _diff_ids(_config_bytes(self.store, self.clients.get(), self.ref, config, self.staging), count)
        if missing:
            with self._lock:
                self.staged.append(config)
        return diff_ids

    def _fetch(
        self, layer: Descriptor, index: int, diff_ids: Future[list[str | None]]
    ) -> None:
        client = self.clients.get()
        target = self.staging / layer.digest.partition(":")[2]
        with BlobStream(client, self.ref.path, layer) as stream:
            diff_id = diff_ids.result()[index]
            if layer.media_type in GZIP_LAYERS and diff_id is not None and self.store.get_layer(diff_id) is None:
                self._unpack_while_downloading(stream, layer, diff_id)
            else:
                _save(stream, layer, target)
                with self._lock:
                    self.staged.append(layer)
        if self.out:
            with self._lock:
                print(f"{_short(layer.digest)}: Download complete", file=self.out, flush=True)

    def _unpack_while_downloading(self, stream: BlobStream, layer: Descriptor, diff_id: str) -> None:
        """The store checks the digest and the diff_id before it keeps anything; a layer that does not unpack is
        still read to its end there, so that wrong bytes are told as a digest mismatch, not as a bad tar."""
        self.store.add_layer_from_tar(cast(BinaryIO, stream), compressed=True, digest=layer.digest, diff_id=diff_id)


def pull_image(
    store: Store,
    client: RegistryClient,
    ref: Reference,
    *,
    out: TextIO | None = None,
    platform: str | None = None,
) -> Image:
    """Pull ``ref`` with ``client`` into ``store`` (all or nothing) and return the stored image."""
    wanted = Platform.parse(platform) if platform else Platform.host()
    if out:
        print(f"{ref.tag or ref.digest}: Pulling from {ref.path}", file=out, flush=True)
    fetched = fetch_manifest(client, ref, wanted)
    before = _current_manifest(store, ref)
    config, layers = manifests.image_parts(fetched.data)
    missing = [b for b in layers if not store.blobs.has(b.digest)]
    created = _make_scratch(store.tmp)
    staging = Path(tempfile.mkdtemp(dir=store.tmp, prefix="pull-"))
    committed = False
    try:
        with store.all_or_nothing():
            fetcher = _Fetcher(store, client, ref, staging, out)
            fetcher.run(config, layers, missing)
            image = _commit(store, ref, fetched, fetcher.staged, staging)
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            _remove_if_empty(created, store)
    if out:
        for layer in layers:
            if layer in missing:
                print(f"{_short(layer.digest)}: Pull complete", file=out)
        print(f"Digest: {fetched.repo_digest}", file=out)
        status = "Image is up to date for" if before == fetched.digest else "Downloaded newer image for"
        print(f"Status: {status} {ref.familiar}", file=out)
        print(str(ref), file=out, flush=True)
    return image


def _commit(store: Store, ref: Reference, fetched: Fetched, staged: list[Descriptor], staging: Path) -> Image:
    """Every blob is verified: ingest the staged ones, then register the manifest. A failure here (a layer that
    does not unpack to its diff_id) takes back the blobs this pull added."""
    added: list[str] = []
    store.ensure()
    try:
        for blob in staged:
            if store.blobs.has(blob.digest):
                continue
            # Verified while it streamed (``_stage_blob``) and already in the store's scratch space on the same file
            # system: a rename, not a second copy and hash as ``store.ingest_blob`` would make.
            store.blobs.adopt(staging / blob.digest.partition(":")[2], blob.digest)
            added.append(blob.digest)
        tags = [ref.familiar] if ref.tag and not ref.digest else []
        return store.add_image_from_manifest(fetched.data, fetched.media_type, tags, repository=ref.name)
    except BaseException:
        for digest in added:
            store.blobs.delete(digest)
        raise


def pull(ctx: Context, reference: str, *, out: TextIO | None = None, platform: str | None = None) -> Image:
    """Pull an image into the store of ``ctx`` - for ``refrt pull``, ``FROM`` and ``run`` of an absent image."""
    ref = parse_reference(reference)
    store = Store(ctx.paths)
    with client_for(ref.domain, ctx.config_dir) as client:
        return pull_image(store, client, ref, out=out, platform=platform)
