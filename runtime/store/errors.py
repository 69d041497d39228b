"""Errors of the image store, all children of refrt's one hierarchy so the CLI maps them to docker's exit codes."""

from __future__ import annotations

from runtime.errors import ConflictError, NotFoundError, RefrtError, UsageError


class StoreError(RefrtError):
    """The store cannot do what was asked (corrupt blob, unreadable archive...). Nothing stored is lost."""


class ImageNotFound(NotFoundError):
    """No image answers to the reference, id or id prefix."""


class LayerNotFound(NotFoundError):
    """A layer (by diff_id) or blob (by digest) the operation needs is not in the store."""


class InvalidReference(UsageError):
    """The image reference is malformed (uppercase repository, bad tag, bad digest)."""


class AmbiguousReference(UsageError):
    """An id prefix matches more than one image."""


class DigestMismatch(StoreError):
    """Content does not hash to (or is not the size) it claims; the store was left unchanged."""


class UnsafeLayer(StoreError):
    """A layer tar tries to write outside its directory (``..``, absolute path, link escape, device node)."""


class BadLayer(StoreError):
    """A layer is not a readable (gzip-compressed) tar, or unpacking it failed; the store was left unchanged."""


class UnsupportedLayer(StoreError):
    """A layer's media type or compression is not one refrt understands (zstd, foreign layers)."""


class ArchiveError(StoreError):
    """An image archive (docker-archive, OCI layout) is malformed."""


class TooManyLayers(StoreError):
    """An image has more layers than one overlay mount can stack; the message names the limit."""


class ImageInUse(ConflictError):
    """The image is used by a container and removal was not forced. Exit 1, as ``docker rmi`` does."""

    exit_code = 1
