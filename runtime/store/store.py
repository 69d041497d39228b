"""The image store: blobs, unpacked layers and the reference index of one refrt root.

Layout under ``paths.store`` (an OCI image layout, so ``skopeo copy oci:<store>:<name>`` can read it too)::

    oci-layout, index.json      the OCI layout marker and the index of references (see ``images``)
    blobs/sha256/<hex>          manifests, configs, compressed layers
    layers/<diffid-hex>/        each layer unpacked once, in overlay form, shared by all images and containers
    layerdb/<diffid-hex>.json   what the store knows of an unpacked layer (uncompressed size, one blob digest)
    tmp/                        scratch on the same file system, for atomic renames

Writers of ``index.json`` hold the ``store`` lock. Layers are unpacked *outside* the lock into ``tmp/`` and
renamed into place: two processes unpacking the same layer both succeed, the loser discards its copy.

Durability - no fsync, by decision (docker's policy too: it fsyncs none of a layer's files). What the store
promises is consistency: every blob, layer tree and metadata file is written under ``tmp/``, checked, and renamed
into place only when whole, and ``index.json`` - the one file that makes an image visible - is replaced last. A
process killed at any point (SIGKILL, OOM, Ctrl-C) therefore never leaves a half-written object visible, and the
journal of ``all_or_nothing`` takes back what a failed command added. What is not promised is surviving an OS
crash or power loss within the few seconds before the kernel writes the data out: a pull, load or build that ended
just before one may have to be repeated (``rmi``, then again). Why not fsync: per file it would cost seconds for a
Debian image's ten thousand files; one ``syncfs`` per command would flush every other writer's dirty data on the
file system with ours (on a shared machine, unbounded). Bulk data - a pulled blob, and unpacked files of 1 MiB or
more - is written with O_DIRECT (:mod:`runtime.store.inflate`), so it has reached the device, if not its volatile
cache, before its rename.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

from runtime.paths import Paths
from runtime.store.errors import (
    AmbiguousReference,
    ImageInUse,
    ImageNotFound,
    InvalidReference,
    LayerNotFound,
    StoreError,
)
from runtime.store.images import (
    IMAGE_ID,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    REF_NAME,
    Image,
    Manifest,
    canonical_json,
    parse_config,
)
from runtime.store.layers import Layer, rmtree
from runtime.store.layerstore import CHUNK, GZIP_MAGIC, LayerStore
from runtime.store.reference import Reference, parse_reference

GC_GRACE_SECONDS = 600.0
"""Unreferenced layers and blobs younger than this survive garbage collection: a build or pull in progress has
added them but not yet committed the image that references them."""

_HEX_PREFIX = re.compile(r"^(?:sha256:)?([0-9a-f]{1,64})$")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store(LayerStore):
    """The image store of one refrt root. See the module docstring for the layout; blobs and layers are the
    :class:`~runtime.store.layerstore.LayerStore` half, the reference index and images this one."""

    in_use_check: ClassVar[Callable[[str], bool | str | None] | None] = None
    """Set by the container package to answer "is image <id> used by a container?" (truthy = in use; a string
    names the container). When unset, the store scans ``paths.containers/*/config.json`` for the image id."""

    def __init__(self, paths: Paths) -> None:
        super().__init__(paths)
        self.index_path = self.root / "index.json"

    def ensure(self) -> None:
        """Create the layout (idempotent)."""
        super().ensure()
        if not self.index_path.exists():
            with self.lock():
                if not self.index_path.exists():
                    self._write_index([])

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Inside the block, layers and blobs this store object adds are journaled; if the block fails, the ones
        no image references are removed again (``load`` of an archive whose third layer is hostile leaves
        nothing of the first two behind)."""
        outer = self._journal
        self._journal = ([], [])
        try:
            yield
        except BaseException:
            layers, blobs = self._journal
            self._discard(layers, blobs)
            raise
        finally:
            self._journal = outer

    def _referenced(self) -> tuple[set[str], set[str]]:
        """(blob digests, layer diff_ids) that images in the index use. Call with the lock held."""
        keep_blobs: set[str] = set()
        keep_layers: set[str] = set()
        for digest in {e["digest"] for e in self._read_index()}:
            keep_blobs.add(digest)
            with contextlib.suppress(StoreError):
                manifest = Manifest.parse(self.blobs.read(digest))
                keep_blobs.add(manifest.config_digest)
                keep_blobs.update(str(d["digest"]) for d in manifest.layers)
                config = parse_config(self.blobs.read(manifest.config_digest))
                keep_layers.update(config.get("rootfs", {}).get("diff_ids", []))
        return keep_blobs, keep_layers

    def _discard(self, layers: list[str], blobs: list[str]) -> None:
        with self.lock():
            keep_blobs, keep_layers = self._referenced()
            for diff_id in layers:
                if diff_id not in keep_layers:
                    with contextlib.suppress(FileNotFoundError):
                        self._layer_meta_path(diff_id).unlink()
                    rmtree(str(self.layer_path(diff_id)))
            for digest in blobs:
                if digest not in keep_blobs:
                    self.blobs.delete(digest)

    # -------------------------------------------------------------------------------------------------- index

    def _read_index(self) -> list[dict[str, Any]]:
        try:
            doc = json.loads(self.index_path.read_bytes())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise StoreError(f"{self.index_path} is corrupt: {exc}") from None
        return list(doc.get("manifests", []))

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        self._write_atomic(self.index_path, json.dumps(doc, indent=1).encode())

    @staticmethod
    def _entry_name(entry: dict[str, Any]) -> str:
        return str(entry.get("annotations", {}).get(REF_NAME, ""))

    @staticmethod
    def _entry_id(entry: dict[str, Any]) -> str:
        return str(entry.get("annotations", {}).get(IMAGE_ID, ""))

    def _load_image(self, manifest_digest: str, entries: list[dict[str, Any]]) -> Image:
        manifest = Manifest.parse(self.blobs.read(manifest_digest))
        config = parse_config(self.blobs.read(manifest.config_digest))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(manifest.layers):
            raise StoreError(f"image {manifest.config_digest}: config and manifest disagree on the layer count")
        layers = []
        for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
            layer = self.get_layer(diff_id, desc["digest"])
            if layer is None:
                layer = Layer(diff_id, desc["digest"], int(desc.get("size", 0)), self.layer_path(diff_id))
            layers.append(layer)
        image_id = manifest.config_digest
        tags: list[str] = []
        digests: list[str] = []
        for entry in entries:
            name = self._entry_name(entry)
            if not name or self._entry_id(entry) != image_id:
                continue
            familiar = parse_reference(name, default_tag=False).familiar
            (digests if "@" in name else tags).append(familiar)
        return Image(
            id=image_id,
            config=config,
            layers=layers,
            repo_tags=tags,
            repo_digests=digests,
            manifest_digest=manifest_digest,
            manifest_media_type=manifest.media_type,
        )

    def images(self) -> list[Image]:
        """Every image, one per id, newest first."""
        entries = self._read_index()
        seen: dict[str, str] = {}
        for entry in entries:
            seen.setdefault(self._entry_id(entry), entry["digest"])
        found = [self._load_image(digest, entries) for digest in seen.values()]
        return sorted(found, key=lambda image: image.created, reverse=True)

    def resolve(self, ref: str) -> Image:
        """Find an image by ``name[:tag]``, ``name@digest``, full id or unique id prefix."""
        entries = self._read_index()
        parsed: Reference | None = None
        with contextlib.suppress(InvalidReference):
            parsed = parse_reference(ref)
        if parsed is not None and not ref.startswith("sha256:"):
            wanted = str(parsed)
            for entry in entries:
                if self._entry_name(entry) == wanted:
                    return self._load_image(entry["digest"], entries)
            if parsed.digest:
                # name@digest also finds the manifest when the repository knows it only by a tag
                for entry in entries:
                    name = self._entry_name(entry)
                    if name and entry["digest"] == parsed.digest and parse_reference(name).name == parsed.name:
                        return self._load_image(entry["digest"], entries)
        match = _HEX_PREFIX.match(ref)
        if match:
            prefix = "sha256:" + match.group(1)
            ids = {self._entry_id(e): e["digest"] for e in entries if self._entry_id(e).startswith(prefix)}
            if len(ids) > 1:
                raise AmbiguousReference(f"image id prefix {ref!r} is ambiguous: {len(ids)} images match")
            if ids:
                return self._load_image(next(iter(ids.values())), entries)
        raise ImageNotFound(f"No such image: {ref}")

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
        except ImageNotFound:
            return False
        return True

    # ------------------------------------------------------------------------------------------- registering

    def commit_image(self, config: dict[str, Any], layers: list[Layer], tags: list[str]) -> Image:
        """Write ``config`` (its ``rootfs`` set from ``layers``) and an OCI manifest; tag it. Returns the image."""
        doc = json.loads(json.dumps(config))
        doc.setdefault("created", now_rfc3339())
        doc.setdefault("architecture", host_architecture())
        doc.setdefault("os", "linux")
        doc.setdefault("config", {})
        doc["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        if "history" not in doc:
            doc["history"] = [{"created": doc["created"], "created_by": ""} for _ in layers]
        config_bytes = canonical_json(doc)
        return self.add_image_from_config(config_bytes, layers, tags)

    def add_image_from_config(self, config_bytes: bytes, layers: list[Layer], tags: list[str]) -> Image:
        """Like :meth:`commit_image` but keeps the config's exact bytes (so its id survives a save/load)."""
        config = parse_config(config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if diff_ids != [layer.diff_id for layer in layers]:
            raise StoreError("image config's rootfs.diff_ids do not match the layers given")
        self.ensure()
        config_digest = self.blobs.write_bytes(config_bytes)
        descriptors = []
        for layer in layers:
            with self.blobs.open(layer.digest) as blob:
                media_type = OCI_LAYER_GZIP if blob.read(2) == GZIP_MAGIC else OCI_LAYER_TAR
            descriptors.append({"mediaType": media_type, "digest": layer.digest, "size": self.blobs.size(layer.digest)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": descriptors,
        }
        return self._register(canonical_json(manifest, image_config=False), OCI_MANIFEST, config_digest, tags, [])

    def add_image_from_manifest(
        self, manifest_bytes: bytes, media_type: str, tags: list[str], *, repository: str | None = None
    ) -> Image:
        """Register a manifest exactly as given (pulled or loaded); its config and layer blobs must be stored.

        Layers are unpacked (and checked against the config's diff_ids) if not yet. With ``repository``
        (``registry:5000/app``), the image also gets the repo digest ``repository@<manifest digest>``.
        """
        manifest = Manifest.parse(manifest_bytes, media_type)
        if not self.blobs.has(manifest.config_digest):
            raise LayerNotFound(f"config blob {manifest.config_digest} is not in the store")
        config = parse_config(self.blobs.read(manifest.config_digest))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(manifest.layers):
            raise StoreError("manifest and config disagree on the number of layers")
        for desc, diff_id in zip(manifest.layers, diff_ids, strict=True):
            self.ensure_layer(str(desc["digest"]), str(diff_id))
        repo_digests = []
        if repository:
            repo = parse_reference(repository, default_tag=False)
            digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
            repo_digests.append(str(repo.with_digest(digest)))
        return self._register(manifest_bytes, manifest.media_type, manifest.config_digest, tags, repo_digests)

    def _register(
        self, manifest_bytes: bytes, media_type: str, image_id: str, tags: list[str], repo_digests: list[str]
    ) -> Image:
        names = [str(parse_reference(tag)) for tag in tags] + repo_digests
        manifest_digest = self.blobs.write_bytes(manifest_bytes)
        entry_base = {"mediaType": media_type, "digest": manifest_digest, "size": len(manifest_bytes)}
        with self.lock():
            entries = self._read_index()
            for name in names:
                entries = self._point(entries, name, entry_base, image_id)
            if not any(self._entry_id(e) == image_id for e in entries):
                entries.append({**entry_base, "annotations": {IMAGE_ID: image_id, "io.refrt.created": now_rfc3339()}})
            self._write_index(entries)
            return self._load_image(manifest_digest, entries)

    def _point(
        self, entries: list[dict[str, Any]], name: str, entry_base: dict[str, Any], image_id: str
    ) -> list[dict[str, Any]]:
        """Make ``name`` point at the given manifest; an image losing its last name stays, untagged."""
        previous = [e for e in entries if self._entry_name(e) == name]
        kept = [e for e in entries if self._entry_name(e) != name]
        for old in previous:
            old_id = self._entry_id(old)
            if old_id != image_id and not any(self._entry_id(e) == old_id for e in kept):
                annotations = {IMAGE_ID: old_id, "io.refrt.created": now_rfc3339()}
                kept.append({k: v for k, v in old.items() if k != "annotations"} | {"annotations": annotations})
        kept = [e for e in kept if self._entry_name(e) or self._entry_id(e) != image_id]
        kept.append({**entry_base, "annotations": {REF_NAME: name, IMAGE_ID: image_id}})
        return kept

    def tag(self, image: Image | str, ref: str) -> Image:
        """Point ``ref`` (``name[:tag]``) at ``image``."""
        target = image if isinstance(image, Image) else self.resolve(image)
        parsed = parse_reference(ref)
        if parsed.digest:
            raise InvalidReference(f"refusing to create a tag with a digest reference: {ref}")
        base = {
            "mediaType": target.manifest_media_type,
            "digest": target.manifest_digest,
            "size": self.blobs.size(target.manifest_digest),
        }
        with self.lock():
            entries = self._point(self._read_index(), str(parsed), base, target.id)
            self._write_index(entries)
            return self._load_image(target.manifest_digest, entries)

    def add_repo_digest(self, image: Image, repository: str) -> str:
        """Record ``repository@<manifest digest>`` for ``image`` (after a push); returns it in familiar form."""
        name = str(parse_reference(repository, default_tag=False).with_digest(image.manifest_digest))
        base = {
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
            "size": self.blobs.size(image.manifest_digest),
        }
        with self.lock():
            self._write_index(self._point(self._read_index(), name, base, image.id))
        return parse_reference(name).familiar

    def untag(self, ref: str) -> Image:
        """Remove the name ``ref``; the image stays (untagged if that was its last name). Returns the image."""
        name = str(parse_reference(ref))
        with self.lock():
            entries = self._read_index()
            hits = [e for e in entries if self._entry_name(e) == name]
            if not hits:
                raise ImageNotFound(f"No such image: {ref}")
            image = self._load_image(hits[0]["digest"], entries)
            kept = [e for e in entries if self._entry_name(e) != name]
            if not any(self._entry_id(e) == image.id for e in kept):
                kept.append({**hits[0], "annotations": {IMAGE_ID: image.id, "io.refrt.created": now_rfc3339()}})
            self._write_index(kept)
            return self._load_image(hits[0]["digest"], kept)

    def manifest_bytes(self, image: Image) -> bytes:
        return self.blobs.read(image.manifest_digest)

    def config_bytes(self, image: Image) -> bytes:
        return self.blobs.read(image.id)

    def lower_dirs(self, image: Image) -> list[Path]:
        """The image's unpacked layers, top first: the order of overlay's ``lowerdir``."""
        if not image.layers:
            # FROM scratch with no files: overlay still needs one lower dir, so give it an empty one
            empty = self.root / "empty-layer"
            empty.mkdir(parents=True, exist_ok=True)
            return [empty]
        dirs = []
        for layer in reversed(image.layers):
            if not layer.path.is_dir():
                raise LayerNotFound(f"layer {layer.diff_id} of image {image.short_id} is not unpacked")
            dirs.append(layer.path)
        return dirs

    # ------------------------------------------------------------------------------------------------ removal

    def in_use_by(self, image_id: str) -> str | None:
        """The container using ``image_id`` ("" if one does but its name is unknown), or None."""
        check = type(self).in_use_check
        if check is not None:
            answer = check(image_id)
            if not answer:
                return None
            return answer if isinstance(answer, str) else ""
        containers = self.paths.containers
        if not containers.is_dir():
            return None
        for config_file in sorted(containers.glob("*/config.json")):
            with contextlib.suppress(OSError, ValueError):
                config = json.loads(config_file.read_bytes())
                if isinstance(config, dict) and image_id in (config.get("Image"), config.get("ImageID")):
                    return config_file.parent.name
        return None

    def remove(self, image_or_ref: Image | str, force: bool = False) -> list[str]:
        """``docker rmi``: untag ``ref``, and delete the image when that was its last name and no container uses
        it. Returns docker's report lines (``Untagged: ...``, ``Deleted: ...``)."""
        if isinstance(image_or_ref, Image):
            image, ref, by_name = image_or_ref, image_or_ref.id, False
        else:
            ref = image_or_ref
            image = self.resolve(ref)
            by_name = self._is_name_of(ref, image)
        report: list[str] = []
        # A name is only untagged while the image keeps another one. A repo digest (``repo@sha256:...``) alone
        # does not keep an image whose last tag goes, as with docker; a tag does keep it when a digest goes.
        by_digest = "@" in ref
        others = (bool(image.repo_tags) or len(image.repo_digests) > 1) if by_digest else len(image.repo_tags) > 1
        if by_name and others:
            self.untag(ref)
            return [f"Untagged: {parse_reference(ref).familiar}"]
        user = self.in_use_by(image.id)
        if not by_name and len(image.repo_tags) > 1 and not force:
            raise ImageInUse(
                f"conflict: unable to delete {image.short_id} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        if user is not None and not force:
            who = f"container {user[:12]}" if user else "a container"
            if by_name:
                raise ImageInUse(
                    f'conflict: unable to remove repository reference "{ref}" (must force) - '
                    f"{who} is using its referenced image {image.short_id}"
                )
            raise ImageInUse(
                f"conflict: unable to delete {image.short_id} (must be forced) - image is being used by {who}"
            )
        with self.lock():
            entries = self._read_index()
            current = [e for e in entries if self._entry_id(e) == image.id]
            for entry in current:
                name = self._entry_name(entry)
                if name:
                    report.append(f"Untagged: {parse_reference(name, default_tag=False).familiar}")
            if user is not None:
                # Forced while a container uses it: docker keeps the image, untagged, until the container goes.
                kept = [e for e in entries if self._entry_id(e) != image.id]
                base = {k: v for k, v in current[0].items() if k != "annotations"}
                kept.append(base | {"annotations": {IMAGE_ID: image.id, "io.refrt.created": now_rfc3339()}})
                self._write_index(kept)
                return report
            self._write_index([e for e in entries if self._entry_id(e) != image.id])
        report.append(f"Deleted: {image.id}")
        self.gc()
        return report

    def _is_name_of(self, ref: str, image: Image) -> bool:
        try:
            parsed = parse_reference(ref)
        except InvalidReference:
            return False
        if _HEX_PREFIX.match(ref) and not any(
            self._entry_name(e) == str(parsed) for e in self._read_index()
        ):
            return False
        return parsed.familiar in image.repo_tags or parsed.familiar in image.repo_digests

    def prune(self, *, all_images: bool = False) -> tuple[list[str], int]:
        """Delete untagged images (every unused image with ``all_images``) no container uses.

        Returns the report lines and the bytes of layer content freed."""
        report: list[str] = []
        for image in self.images():
            if image.repo_tags and not all_images:
                continue
            if self.in_use_by(image.id) is not None:
                continue
            with self.lock():
                entries = self._read_index()
                for entry in entries:
                    if self._entry_id(entry) == image.id and self._entry_name(entry):
                        report.append(f"untagged: {parse_reference(self._entry_name(entry)).familiar}")
                self._write_index([e for e in entries if self._entry_id(e) != image.id])
            report.append(f"deleted: {image.id}")
        freed = self.gc()
        return report, freed

    def gc(self, grace_seconds: float = GC_GRACE_SECONDS) -> int:
        """Delete blobs and unpacked layers no image references (older than ``grace_seconds``); bytes freed."""
        freed = 0
        cutoff = time.time() - grace_seconds
        with self.lock():
            keep_blobs, keep_layers = self._referenced()
            if self.layerdb.is_dir():
                for meta in list(self.layerdb.glob("*.json")):
                    diff_id = "sha256:" + meta.stem
                    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                        record = json.loads(meta.read_bytes())
                        if diff_id in keep_layers or meta.stat().st_mtime >= cutoff:
                            keep_blobs.add(str(record["digest"]))  # a young layer's blob stays with it
                            continue
                        freed += int(record["size"])
                        meta.unlink()
                        rmtree(str(self.layer_path(diff_id)))
            for digest in list(self.blobs.digests()):
                path = self.blobs.path(digest)
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    if digest not in keep_blobs and st.st_mtime < cutoff:
                        path.unlink()
                        freed += st.st_size
            self._clean_scratch(cutoff)
        return freed

    def _clean_scratch(self, cutoff: float) -> None:
        """Remove what killed processes left in ``tmp/`` (only old entries: live ones are still being written)."""
        if not self.tmp.is_dir():
            return
        for entry in list(self.tmp.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                st = entry.lstat()
                if max(st.st_mtime, st.st_ctime) >= cutoff:  # ctime: unpacking resets mtimes to the tar's
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    rmtree(str(entry))
                else:
                    entry.unlink()


def host_architecture() -> str:
    """The host's architecture in GOARCH spelling, as image configs and manifests write it."""
    machine = os.uname().machine
    return {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "armv7l": "arm",
        "i686": "386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)


def copy_stream(src: IO[bytes], dst: IO[bytes]) -> None:
    shutil.copyfileobj(src, dst, CHUNK)
