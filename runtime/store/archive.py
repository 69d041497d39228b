"""Images in and out of tar files: ``import`` (a root file system), ``load`` and ``save``.

``save`` writes docker's archive format (``manifest.json`` + ``repositories`` + one ``layer.tar`` per layer),
which ``docker load``, ``podman load`` and ``skopeo copy docker-archive:`` read. ``load`` reads that format and
OCI image layouts (``oci-archive:`` tarballs), gzip-compressed or not. Configs are copied byte for byte, so an
image keeps its id through any save/load round trip.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import posixpath
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, cast

from runtime.store.errors import ArchiveError, ImageNotFound, InvalidReference, StoreError
from runtime.store.images import INDEX_TYPES, MANIFEST_TYPES, Image
from runtime.store.layers import CheckedTarFile, Layer, end_blocks_required
from runtime.store.reference import parse_reference
from runtime.store.store import Store, host_architecture, now_rfc3339

CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"

# ------------------------------------------------------------------------------------------------------ import


def _decompressing(fileobj: BinaryIO) -> tuple[IO[bytes], bool | None]:
    """Wrap bzip2/xz input in a decompressor; gzip is left to the layer code. Returns (stream, compressed)."""
    buffered = io.BufferedReader(cast(io.RawIOBase, fileobj)) if not hasattr(fileobj, "peek") else fileobj
    head = cast(io.BufferedReader, buffered).peek(6)[:6]
    if head.startswith(b"BZh"):
        return cast(IO[bytes], bz2.BZ2File(buffered)), False
    if head.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.LZMAFile(buffered)), False
    return cast(IO[bytes], buffered), None


def parse_changes(changes: list[str]) -> dict[str, Any]:
    """Apply ``--change`` Dockerfile instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME,
    STOPSIGNAL) to an empty container config."""
    config: dict[str, Any] = {}
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()

        def words(text: str = rest, change: str = change) -> list[str]:
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise InvalidReference(f"--change {change!r}: malformed JSON") from None
                return [str(v) for v in value]
            return ["/bin/sh", "-c", text]

        if keyword == "CMD":
            config["Cmd"] = words()
        elif keyword == "ENTRYPOINT":
            config["Entrypoint"] = words()
        elif keyword == "ENV":
            pairs = shlex.split(rest)
            if len(pairs) == 2 and "=" not in pairs[0]:
                pairs = [f"{pairs[0]}={pairs[1]}"]
            config.setdefault("Env", []).extend(pairs)
        elif keyword == "WORKDIR":
            config["WorkingDir"] = rest
        elif keyword == "USER":
            config["User"] = rest
        elif keyword == "EXPOSE":
            for port in rest.split():
                config.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        elif keyword == "VOLUME":
            for vol in json.loads(rest) if rest.startswith("[") else rest.split():
                config.setdefault("Volumes", {})[vol] = {}
        elif keyword == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                config.setdefault("Labels", {})[key] = value
        elif keyword == "STOPSIGNAL":
            config["StopSignal"] = rest
        else:
            raise InvalidReference(f"--change: {keyword} is not a supported instruction")
    return config


def import_tarball(
    store: Store, fileobj: BinaryIO, tags: list[str], *, message: str = "", changes: list[str] | None = None
) -> Image:
    """``docker import``: one root file system tar (plain, gzip, bzip2 or xz) becomes a one-layer image."""
    for tag in tags:
        parse_reference(tag)  # fail before reading anything
    stream, compressed = _decompressing(fileobj)
    with end_blocks_required():  # no digest vouches for this tar: its end block must show it is whole
        layer = store.add_layer_from_tar(stream, compressed=compressed)
    created = now_rfc3339()
    history: dict[str, Any] = {"created": created, "created_by": ""}
    if message:
        history["comment"] = message
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": created,
        "config": parse_changes(changes or []),
        "history": [history],
    }
    if message:
        config["comment"] = message
    return store.commit_image(config, [layer], tags)


# -------------------------------------------------------------------------------------------------------- save


def _chain_ids(diff_ids: list[str]) -> list[str]:
    """Docker's chain ids (a layer's identity given everything below it): distinct names for layer dirs."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest())
    return chain


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mtime: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = mtime
    tf.addfile(info, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tf.addfile(info)


@contextlib.contextmanager
def _plain_layer(store: Store, layer: Layer) -> Iterator[IO[bytes]]:
    blob = store.blobs.open(layer.digest)
    try:
        if blob.read(2) == b"\x1f\x8b":
            blob.seek(0)
            with gzip.GzipFile(fileobj=blob, mode="rb") as gz:
                yield cast(IO[bytes], gz)
        else:
            blob.seek(0)
            yield blob
    finally:
        blob.close()


def save_docker_archive(store: Store, refs: list[str], out: BinaryIO) -> None:
    """``docker save``: write the images named by ``refs`` to ``out`` in docker-archive format."""
    images: list[tuple[Image, list[str]]] = []
    for ref in refs:
        image = store.resolve(ref)
        tags: list[str] = []
        with contextlib.suppress(InvalidReference):
            parsed = parse_reference(ref)
            if not parsed.digest and parsed.familiar in image.repo_tags:
                tags = [parsed.familiar]
        images.append((image, tags))
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for image, tags in images:
            config_name = image.id.split(":", 1)[1] + ".json"
            if config_name not in written:
                _add_bytes(tf, config_name, store.config_bytes(image))
                written.add(config_name)
            chain = _chain_ids(image.diff_ids)
            layer_names: list[str] = []
            parent = ""
            for layer, chain_id in zip(image.layers, chain, strict=True):
                layer_dir = chain_id.split(":", 1)[1]
                layer_names.append(f"{layer_dir}/layer.tar")
                if layer_dir not in written:
                    written.add(layer_dir)
                    _add_dir(tf, layer_dir)
                    _add_bytes(tf, f"{layer_dir}/VERSION", b"1.0")
                    legacy = {"id": layer_dir, "created": "0001-01-01T00:00:00Z", "container_config": {}}
                    if parent:
                        legacy["parent"] = parent
                    _add_bytes(tf, f"{layer_dir}/json", json.dumps(legacy).encode())
                    info = tarfile.TarInfo(f"{layer_dir}/layer.tar")
                    info.size = layer.size
                    info.mode = 0o644
                    with _plain_layer(store, layer) as plain:
                        tf.addfile(info, plain)
                parent = layer_dir
            manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layer_names})
            for tag in tags:
                name, _, tag_part = tag.rpartition(":")
                repositories.setdefault(name, {})[tag_part] = parent
        _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
        if repositories:
            _add_bytes(tf, "repositories", json.dumps(repositories).encode())


# -------------------------------------------------------------------------------------------------------- load


class _Archive:
    """A seekable tar opened for random access by (normalised) member name, symlinks followed."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        try:
            self.tf = CheckedTarFile.open(fileobj=fileobj, mode="r:*")
            self.members = {posixpath.normpath(m.name.lstrip("/")): m for m in self.tf.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, EOFError) or "unexpected end" in str(exc):
                raise ArchiveError(f"the image archive is truncated: {exc}") from None
            if "could not be opened successfully" in str(exc):  # tarfile's one line per method tried
                raise ArchiveError("not a readable tar archive (plain, gzip, bzip2 or xz)") from None
            raise ArchiveError(f"not a readable tar archive: {exc}") from None
        # Every header was read: a cut in a member's data or on a header shows as a missing end-of-archive block.
        assert isinstance(self.tf, CheckedTarFile)
        self.tf.check_complete("the image archive", ArchiveError)

    def member(self, name: str, hops: int = 0) -> tarfile.TarInfo:
        key = posixpath.normpath(name.lstrip("/"))
        member = self.members.get(key)
        if member is None:
            raise ArchiveError(f"archive lacks {name!r}")
        if member.issym() and hops < 8:
            return self.member(posixpath.join(posixpath.dirname(key), member.linkname), hops + 1)
        if member.islnk() and hops < 8:
            return self.member(member.linkname, hops + 1)
        return member

    def has(self, name: str) -> bool:
        return posixpath.normpath(name) in self.members

    def open(self, name: str) -> IO[bytes]:
        handle = self.tf.extractfile(self.member(name))
        if handle is None:
            raise ArchiveError(f"{name!r} in the archive is not a file")
        return handle

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise ArchiveError(f"{name} in the archive is not valid JSON: {exc}") from None


def _load_docker_archive(store: Store, archive: _Archive) -> list[str]:
    report: list[str] = []
    entries = archive.json("manifest.json")
    if not isinstance(entries, list):
        raise ArchiveError("manifest.json is not a list")
    for entry in entries:
        config_bytes = archive.read(entry["Config"])
        config = json.loads(config_bytes)
        want = config.get("rootfs", {}).get("diff_ids", [])
        layers: list[Layer] = []
        for path in entry.get("Layers", []):
            with archive.open(path) as fh:
                layers.append(store.add_layer_from_tar(fh))
        got = [layer.diff_id for layer in layers]
        if got != want:
            raise ArchiveError(f"layers of {entry['Config']} do not match its config's diff_ids")
        tags = list(entry.get("RepoTags") or [])
        image = store.add_image_from_config(config_bytes, layers, tags)
        report += [f"Loaded image: {tag}" for tag in tags] or [f"Loaded image ID: {image.id}"]
    return report


def _platform_ok(desc: dict[str, Any]) -> bool:
    platform = desc.get("platform")
    if not platform:
        return True
    return bool(platform.get("os") == "linux" and platform.get("architecture") == host_architecture())


def _oci_manifests(archive: _Archive, index: dict[str, Any], name: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """(manifest descriptor, reference name) for each image of an OCI index, nested indexes followed."""
    for desc in index.get("manifests", []):
        annotations = desc.get("annotations") or {}
        ref = annotations.get(CONTAINERD_NAME) or annotations.get(OCI_REF_NAME) or name
        kind = desc.get("mediaType", "")
        if kind in INDEX_TYPES:
            nested = archive.json(_blob_path(desc["digest"]))
            yield from (d for d in _oci_manifests(archive, nested, ref) if _platform_ok(d[0]))
        elif kind in MANIFEST_TYPES or not kind:
            yield desc, ref


def _blob_path(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _ingest(store: Store, archive: _Archive, desc: dict[str, Any]) -> None:
    digest = str(desc["digest"])
    if store.blobs.has(digest):
        return
    with archive.open(_blob_path(digest)) as fh:
        store.ingest_blob(fh, digest, int(desc["size"]) if "size" in desc else None)


def _tag_from_ref_name(ref: str) -> list[str]:
    """An OCI ``ref.name`` is a full reference (docker, skopeo ``oci-archive:F:name:tag``) or a bare tag, which
    names no repository: then the image is loaded untagged, as docker does."""
    if not ref or ("/" not in ref and ":" not in ref):
        return []
    try:
        parse_reference(ref)
    except InvalidReference:
        return []
    return [ref]


def _load_oci_layout(store: Store, archive: _Archive) -> list[str]:
    report: list[str] = []
    index = archive.json("index.json")
    found = list(_oci_manifests(archive, index))
    if not found:
        raise ArchiveError("the OCI layout's index.json lists no image for this platform")
    for desc, ref in found:
        _ingest(store, archive, desc)
        manifest_bytes = store.blobs.read(desc["digest"])
        manifest = json.loads(manifest_bytes)
        _ingest(store, archive, manifest["config"])
        for layer in manifest.get("layers", []):
            _ingest(store, archive, layer)
        tags = _tag_from_ref_name(ref)
        image = store.add_image_from_manifest(manifest_bytes, desc.get("mediaType", ""), tags)
        report += [f"Loaded image: {parse_reference(t).familiar}" for t in tags] or [f"Loaded image ID: {image.id}"]
    return report


def load_archive(store: Store, fileobj: BinaryIO) -> list[str]:
    """``docker load``: read a docker-archive or OCI-layout tar (maybe gzip) from ``fileobj``; report lines."""
    with tempfile.TemporaryFile(dir=_spool_dir(store)) as spool:
        if not fileobj.seekable():
            shutil.copyfileobj(fileobj, spool, 1 << 20)
            spool.seek(0)
            source: IO[bytes] = spool
        else:
            source = fileobj
        archive = _Archive(source)
        try:
            with store.all_or_nothing():
                if archive.has("manifest.json"):
                    return _load_docker_archive(store, archive)
                if archive.has("index.json"):
                    return _load_oci_layout(store, archive)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"malformed image archive: {exc!r}") from None
        raise ArchiveError("neither a docker archive (manifest.json) nor an OCI layout (index.json)")


def _spool_dir(store: Store) -> str:
    store.ensure()
    return str(store.tmp)


def image_or_none(store: Store, ref: str) -> Image | None:
    try:
        return store.resolve(ref)
    except ImageNotFound:
        return None


__all__ = ["StoreError", "import_tarball", "load_archive", "parse_changes", "save_docker_archive"]
