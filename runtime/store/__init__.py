"""refrt's image store: content-addressed blobs, layers unpacked once and shared, references, overlay mounts.

``Store`` is the entry point (see ``store.py`` for the on-disk layout); ``overlay`` mounts a container's root;
``archive`` imports, loads and saves image tars; ``baseimage`` builds busybox (and debian) offline.
"""

from runtime.store.errors import (
    DigestMismatch,
    ImageInUse,
    ImageNotFound,
    StoreError,
    TooManyLayers,
    UnsafeLayer,
)
from runtime.store.images import Image
from runtime.store.layers import Layer
from runtime.store.reference import normalize_reference, parse_reference
from runtime.store.store import Store

__all__ = [
    "DigestMismatch",
    "Image",
    "ImageInUse",
    "ImageNotFound",
    "Layer",
    "Store",
    "StoreError",
    "TooManyLayers",
    "UnsafeLayer",
    "normalize_reference",
    "parse_reference",
]
