"""The build cache: which layer (or none) a step produced, keyed by everything that step depends on.

A step's key chains its parent's key with the instruction text *after* expansion, the build args in effect and,
for COPY/ADD, the digest of the files it reads (paths, modes, owners, contents). Any change upstream changes every
key below it, which is what makes "touching one copied file rebuilds exactly the steps from that COPY on" hold.
Entries live in ``root/build-cache/<key>.json`` and remember the layer's diff_id and the history entry, so a fully
cached rebuild produces a byte-identical config (same image id) and no new layer. A layer that has since been
garbage-collected from the store simply turns the entry into a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def step_key(parent: str, text: str, args: Mapping[str, str], content: str = "") -> str:
    """The cache key of one step (hex sha256)."""
    doc = {"parent": parent, "step": text, "args": sorted(args.items()), "content": content}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """What a step produced: the layer's diff_id (None for a step that changed no file) and its history."""

    diff_id: str | None
    history: dict[str, Any]


class BuildCache:
    """``root/build-cache``: one small JSON file per step key. Writes are atomic (rename)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        #: Entries this object created (keys that had none before): what a failed build takes back.
        self.created: list[str] = []

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> CacheEntry | None:
        try:
            doc = json.loads(self._path(key).read_bytes())
            return CacheEntry(diff_id=doc.get("diff_id"), history=dict(doc["history"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, entry: CacheEntry) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        existed = self._path(key).exists()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"diff_id": entry.diff_id, "history": entry.history}, out)
            os.replace(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if not existed:
            self.created.append(key)

    def discard_created(self) -> int:
        """Remove the entries this object created: a failed build leaves no partial cache behind (its steps are
        built again next time, as after ``builder prune``). Returns how many went."""
        count = 0
        for key in self.created:
            with contextlib.suppress(FileNotFoundError):
                self._path(key).unlink()
                count += 1
        self.created.clear()
        return count

    def clear(self) -> int:
        """Remove every entry (``refrt builder prune``-style); returns how many."""
        count = 0
        if self.dir.is_dir():
            for path in self.dir.glob("*.json"):
                path.unlink(missing_ok=True)
                count += 1
        return count
