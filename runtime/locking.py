"""File locks (flock) that make concurrent refrt invocations safe.

Twenty ``refrt run`` at once must not hand out one address twice nor tag over each other; every
read-modify-write of shared state holds the lock named after what it guards. flock locks vanish with the process,
so a SIGKILLed CLI never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(lock_dir: Path, name: str, *, shared: bool = False) -> Iterator[None]:
    """Hold the lock ``lock_dir/name.lock`` (exclusive unless ``shared``) for the ``with`` block."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
