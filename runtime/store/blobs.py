"""Content-addressed blobs under ``blobs/sha256/<hex>``, the OCI image-layout way.

Every write goes to a temporary file in the store, is hashed while it is written and is renamed into place only
when its digest (and size, when known) is right: a reader never sees a half-written or wrong blob, and a failed
download leaves the store exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from runtime.store.errors import DigestMismatch, InvalidReference, LayerNotFound
from runtime.store.reference import is_digest

CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of ``sha256:<hex>``; refuses anything else (a digest ends up in a file name)."""
    if not is_digest(digest):
        raise InvalidReference(f"invalid digest {digest!r} (only sha256 is supported)")
    return digest[len("sha256:") :]


class BlobStore:
    """The ``blobs/`` tree of one store, plus its scratch directory ``tmp/`` on the same file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise LayerNotFound(f"blob {digest} is not in the store") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise LayerNotFound(f"blob {digest} is not in the store") from None

    def digests(self) -> Iterator[str]:
        if self.dir.is_dir():
            for entry in self.dir.iterdir():
                yield "sha256:" + entry.name

    def write_bytes(self, data: bytes) -> str:
        """Store ``data``; return its digest. Idempotent."""
        digest = sha256_digest(data)
        if not self.has(digest):
            self.ensure()
            fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self._publish(Path(tmp), digest)
        return digest

    def ingest(self, stream: BinaryIO, expected_digest: str, expected_size: int | None = None) -> Path:
        """Copy ``stream`` into the store, verifying digest and size while streaming; atomic."""
        want = digest_hex(expected_digest)
        if self.has(expected_digest):
            # Drain nothing: the caller may skip the download entirely by checking has() first.
            return self.path(expected_digest)
        self.ensure()
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="ingest-")
        tmp_path = Path(tmp)
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise DigestMismatch(
                            f"blob {expected_digest}: more than the expected {expected_size} bytes"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
            if expected_size is not None and size != expected_size:
                raise DigestMismatch(f"blob {expected_digest}: got {size} bytes, expected {expected_size}")
            if hasher.hexdigest() != want:
                raise DigestMismatch(f"blob {expected_digest}: content hashes to sha256:{hasher.hexdigest()}")
            return self._publish(tmp_path, expected_digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def adopt(self, tmp_file: Path, digest: str) -> Path:
        """Move a file the caller already hashed (in ``tmp/``) into place under ``digest``."""
        return self._publish(tmp_file, digest)

    def _publish(self, tmp_file: Path, digest: str) -> Path:
        target = self.path(digest)
        os.chmod(tmp_file, 0o644)
        os.replace(tmp_file, target)
        return target

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
