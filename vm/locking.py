"""flock helpers for the VM machinery: one image build and one golden snapshot at a time, across processes.

flock locks vanish with their process, so a SIGKILLed build never leaves a stale lock (its half-built
``.partial`` directory is removed by the next build).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(lock_dir: Path, name: str) -> Iterator[None]:
    """Hold the exclusive lock ``lock_dir/name.lock`` for the ``with`` block."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
