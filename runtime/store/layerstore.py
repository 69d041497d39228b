"""Layers of the image store: the part of :class:`runtime.store.store.Store` that ingests, verifies and unpacks.

Why a module of its own: taking a layer in is one pipeline (read once; hash the compressed bytes and the tar;
keep a gzip blob; unpack into ``tmp/``; rename into ``layers/``; record it in ``layerdb/``) that knows nothing of
image names or the index. :class:`LayerStore` is that half; ``Store`` adds the reference index, images, removal
and garbage collection on top. The layout and the durability policy are described in :mod:`runtime.store.store`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import itertools
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

from runtime.locking import locked
from runtime.paths import Paths
from runtime.store.blobs import BlobStore, digest_hex
from runtime.store.errors import BadLayer, DigestMismatch, StoreError, UnsupportedLayer
from runtime.store.inflate import InflatingReader, Receiver
from runtime.store.layers import Layer, rmtree, unpack_stream, write_dir_as_layer

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20
GZIP_LEVEL = 1
"""Compression of layers refrt creates. Level 1 packs a 170 MB Debian root file system 4x faster than level 6 for
a few percent more bytes; layers are written far more often (every build step, load, commit) than pushed."""


def _check_digest(expected: str | None, got: str) -> None:
    if expected is not None and got != expected:
        raise DigestMismatch(f"blob {expected}: digest mismatch: content hashes to {got}; nothing stored")


def _drain(reader: InflatingReader) -> None:
    """Inflate the rest after the tar's end (the diff_id covers it); a cut or corrupt gzip ends there too."""
    try:
        reader.drain()
    except (EOFError, zlib.error) as exc:
        raise BadLayer(f"layer data is corrupt or truncated: {exc}") from None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts what passes through it, and may copy it to ``sink``."""

    def __init__(self, src: _Readable, sink: IO[bytes] | None = None, head: bytes = b"") -> None:
        self.src = src
        self.sink = sink
        self.head = head
        self.hasher = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.head:
            data, self.head = self.head[: len(view)], self.head[len(view) :]
        else:
            data = self.src.read(len(view))
        n = len(data)
        view[:n] = data
        if n:
            self.hasher.update(data)
            self.count += n
            if self.sink is not None:
                self.sink.write(data)
        return n

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes what it forwards to ``dest`` (the compressed bytes of a new blob)."""

    def __init__(self, dest: IO[bytes]) -> None:
        self.dest = dest
        self.hasher = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.hasher.update(chunk)
        self.dest.write(chunk)
        return len(chunk)



class LayerStore:
    """Blobs and unpacked layers of one refrt root, and the scratch space they are made in (no index here)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.root = paths.store
        self.blobs = BlobStore(self.root)
        self.layers_dir = self.root / "layers"
        self.layerdb = self.root / "layerdb"
        self.tmp = self.root / "tmp"
        self._journal: tuple[list[str], list[str]] | None = None
        """(layer diff_ids, blob digests) added inside ``Store.all_or_nothing``; None outside it."""

    # ------------------------------------------------------------------------------------------------ plumbing

    def ensure(self) -> None:
        """Create the layout of blobs and layers (idempotent); ``Store.ensure`` adds the index."""
        for d in (self.blobs.dir, self.layers_dir, self.layerdb, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            self._write_atomic(marker, b'{"imageLayoutVersion":"1.0.0"}')


    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.paths.locks, "store"):
            yield

    def _write_atomic(self, target: Path, data: bytes) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="meta-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)

    @contextlib.contextmanager
    def _scratch_dir(self) -> Iterator[Path]:
        self.ensure()
        path = Path(tempfile.mkdtemp(dir=self.tmp, prefix="unpack-"))
        os.chmod(path, 0o755)  # a layer tar without a "./" entry must not leave the layer root private
        try:
            yield path
        finally:
            if path.exists():
                rmtree(str(path))

    @contextlib.contextmanager
    def _scratch_file(self) -> Iterator[tuple[Path, IO[bytes]]]:
        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="layer-")
        path = Path(name)
        try:
            with os.fdopen(fd, "w+b") as fh:
                yield path, fh
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -------------------------------------------------------------------------------------------------- layers

    def layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / digest_hex(diff_id)

    def _layer_meta_path(self, diff_id: str) -> Path:
        return self.layerdb / f"{digest_hex(diff_id)}.json"

    def get_layer(self, diff_id: str, digest: str | None = None) -> Layer | None:
        """The unpacked layer ``diff_id``, or None. ``digest`` overrides the recorded compressed blob digest."""
        try:
            meta = json.loads(self._layer_meta_path(diff_id).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        path = self.layer_path(diff_id)
        if not path.is_dir():
            return None
        return Layer(diff_id=diff_id, digest=digest or meta["digest"], size=int(meta["size"]), path=path)

    def _record_layer(self, diff_id: str, digest: str, size: int, unpacked: Path) -> Layer:
        """Move a freshly unpacked tree into place unless another process won the race, then record it."""
        target = self.layer_path(diff_id)
        if not target.is_dir():
            try:
                os.rename(unpacked, target)
                if self._journal is not None:
                    self._journal[0].append(diff_id)
            except OSError:
                if not target.is_dir():
                    raise
        meta = {"diff_id": diff_id, "digest": digest, "size": size}
        self._write_atomic(self._layer_meta_path(diff_id), json.dumps(meta).encode())
        return Layer(diff_id=diff_id, digest=digest, size=size, path=target)

    def add_layer_from_tar(
        self,
        fileobj: IO[bytes] | BinaryIO,
        *,
        compressed: bool | None = None,
        digest: str | None = None,
        diff_id: str | None = None,
    ) -> Layer:
        """Add a layer from a tar stream (gzip detected unless ``compressed`` says); verified, atomic.

        The stream is read once: it is hashed (diff_id, and the compressed digest), kept as a gzip blob (compressed
        here when it came plain) and unpacked into a scratch directory that is renamed into ``layers/``. A gzip
        stream is received on one thread and unpacked on this one (:mod:`runtime.store.inflate`).

        ``digest`` and ``diff_id``, when given, are what the compressed bytes and the tar must hash to: checked
        before anything is stored. When a gzip stream does not unpack, it is still read to its end, so that bytes
        other than the ones ``digest`` names are reported as that (a corrupted download) rather than as a bad tar.
        """
        head = fileobj.read(4)
        if head.startswith(ZSTD_MAGIC):
            raise UnsupportedLayer("zstd-compressed layers are not supported")
        is_gzip = head.startswith(GZIP_MAGIC) if compressed is None else compressed
        with self._scratch_file() as (blob_path, blob_file), self._scratch_dir() as tree:
            if is_gzip:
                receiver = Receiver(fileobj, str(blob_path), head)
                inflating = InflatingReader(receiver.next)
                plain: _HashingReader | InflatingReader = inflating
                try:
                    unpack_stream(inflating, tree)
                    _drain(inflating)
                except StoreError:
                    receiver.close(drain=True)
                    _check_digest(digest, receiver.digest)
                    raise
                except BaseException:
                    receiver.close(drain=False)
                    raise
                got = receiver.digest
            else:
                writer = _HashingWriter(blob_file)
                gz_out = cast(IO[bytes], writer)
                with gzip.GzipFile(fileobj=gz_out, mode="wb", mtime=0, compresslevel=GZIP_LEVEL) as gz:
                    plain = _HashingReader(fileobj, sink=cast(IO[bytes], gz), head=head)
                    unpack_stream(cast(IO[bytes], plain), tree)
                    plain.drain()
                got = "sha256:" + writer.hasher.hexdigest()
            _check_digest(digest, got)
            if diff_id is not None and plain.digest != diff_id:
                raise DigestMismatch(f"layer {got} unpacks to {plain.digest}, but the config says {diff_id}")
            blob_file.flush()
            self._note_blob(got)
            self.blobs.adopt(blob_path, got)
            return self._record_layer(plain.digest, got, plain.count, tree)

    def add_layer_from_dir(self, upperdir: Path) -> Layer | None:
        """Turn an overlay upper dir (or any tree) into a layer; overlay whiteouts become OCI ones. None if empty."""
        with self._scratch_file() as (_tar_path, tar_file):
            if not write_dir_as_layer(Path(upperdir), tar_file):
                return None
            tar_file.seek(0)
            return self.add_layer_from_tar(tar_file, compressed=False)

    def ensure_layer(self, digest: str, diff_id: str) -> Layer:
        """The layer stored as blob ``digest``, unpacked if it is not yet; its content must hash to ``diff_id``."""
        existing = self.get_layer(diff_id, digest)
        if existing is not None:
            with contextlib.suppress(OSError):
                os.utime(self._layer_meta_path(diff_id))  # fresh again: protects it from a concurrent gc
            return existing
        with self.blobs.open(digest) as blob, self._scratch_dir() as tree:
            head = blob.read(4)
            if head.startswith(ZSTD_MAGIC):
                raise UnsupportedLayer(f"layer {digest} is zstd-compressed, which is not supported")
            plain: _HashingReader | InflatingReader
            if head.startswith(GZIP_MAGIC):
                chunks = itertools.chain([head], iter(functools.partial(blob.read, CHUNK), b""))
                plain = InflatingReader(functools.partial(next, chunks, None))
                unpack_stream(plain, tree)
                _drain(plain)
            else:
                plain = _HashingReader(blob, head=head)
                unpack_stream(cast(IO[bytes], plain), tree)
                plain.drain()
            if plain.digest != diff_id:
                raise DigestMismatch(f"layer {digest} unpacks to {plain.digest}, but the config says {diff_id}")
            return self._record_layer(diff_id, digest, plain.count, tree)

    def ingest_blob(self, stream: IO[bytes] | BinaryIO, expected_digest: str, expected_size: int | None) -> Path:
        """Stream a blob into the store, verifying digest and size on the way (the registry client's pull)."""
        self.ensure()
        self._note_blob(expected_digest)
        return self.blobs.ingest(cast(BinaryIO, stream), expected_digest, expected_size)

    def _note_blob(self, digest: str) -> None:
        if self._journal is not None and not self.blobs.has(digest):
            self._journal[1].append(digest)
