"""``refrt pull``: fetch a manifest (picking the host's platform from an index), then its config and layers.

All or nothing: every blob missing from the store is first downloaded into a staging directory in the store's
scratch space, its digest and size checked while it streams; only when every blob is staged and verified are they
moved into the store (``store.blobs.adopt``, a rename) and the image committed. A wrong digest, a short body or a
dropped connection therefore leaves the store exactly as it was.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from runtime.errors import NotFoundError
from runtime.registry import manifests
from runtime.registry.client import RegistryClient, Response
from runtime.registry.endpoints import client_for
from runtime.registry.errors import ConnectionFailedError, DigestMismatchError, RegistryError
from runtime.registry.manifests import Descriptor, Platform
from runtime.store.images import Image
from runtime.store.reference import Reference, parse_reference
from runtime.store.store import Store

if TYPE_CHECKING:
    from runtime.cli import Context

CHUNK = 1 << 20


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


def _content_range_start(resp: Response) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes START-END/TOTAL``), None when unreadable."""
    value = (resp.header("Content-Range") or "").strip()
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _stage_blob(client: RegistryClient, ref: Reference, blob: Descriptor, target: Path) -> None:
    """Download one blob into ``target``, hashing while writing; refuse any byte beyond the declared size.

    A connection that drops or stalls mid-body is resumed with ``Range`` from the bytes already written (the
    registry answers 206), or started again from zero when the registry ignores ranges (200) - at most
    ``policy.retries`` times. The digest is checked over the whole, however many answers it took.
    """
    hasher = hashlib.sha256()
    size = 0
    resumes = 0
    with open(target, "wb") as out:
        while True:
            resp = client.open_blob(ref.path, blob.digest, offset=size)
            if size and (resp.status != 206 or _content_range_start(resp) != size):
                # No resume from here: start again with the whole blob.
                if resp.status == 206:
                    resp.conn.close()
                    resp = client.open_blob(ref.path, blob.digest)
                out.seek(0)
                out.truncate()
                hasher, size = hashlib.sha256(), 0
            try:
                while True:
                    chunk = resp.stream.read1(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > blob.size:
                        client.close()
                        raise DigestMismatchError(f"blob {blob.digest}: more than the {blob.size} bytes declared")
                    hasher.update(chunk)
                    out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                client.close()
                if resumes >= client.policy.retries:
                    reason = "timeout" if isinstance(exc, TimeoutError) else "connection dropped"
                    raise ConnectionFailedError(
                        f"blob {blob.digest}: {reason} after {size} of {blob.size} bytes: {exc}"
                    ) from None
            if size == blob.size:
                resp.stream.close()  # read1 at the end of a Content-Length body does not mark it done
                break
            client.close()
            if resumes >= client.policy.retries:
                raise ConnectionFailedError(f"blob {blob.digest}: connection dropped after {size} of {blob.size} bytes")
            time.sleep(client.policy.backoff(resumes))
            resumes += 1
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


def _remove_if_empty(dirs: list[Path]) -> None:
    """Undo ``_make_scratch`` after a failed pull into a store that did not exist: only empty dirs go."""
    for path in dirs:
        try:
            path.rmdir()
        except OSError:
            return


def _short(digest: str) -> str:
    return digest.partition(":")[2][:12]


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
    blobs = [config, *layers]
    missing = [b for b in blobs if not store.blobs.has(b.digest)]
    created = _make_scratch(store.tmp)
    staging = Path(tempfile.mkdtemp(dir=store.tmp, prefix="pull-"))
    committed = False
    try:
        for blob in missing:
            _stage_blob(client, ref, blob, staging / blob.digest.partition(":")[2])
            if out and blob is not config:
                print(f"{_short(blob.digest)}: Download complete", file=out, flush=True)
        image = _commit(store, ref, fetched, missing, staging)
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            _remove_if_empty(created)
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
    """Every blob is verified: ingest them, then register the manifest. A failure here (a layer that does not
    unpack to its diff_id) takes back the blobs this pull added."""
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
