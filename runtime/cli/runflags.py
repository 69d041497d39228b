"""The ``run``/``create`` flags only the command line acts on: ``--platform``, ``--cidfile``, and the image depth
check made before anything is created.

The flags themselves (every one of docker's, the refused ones too) are defined once, for the CLI and the daemon,
in :mod:`runtime.container.createflags`, and read into a spec by :mod:`runtime.container.createspec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.errors import RefrtError, UsageError


def check_platform(value: str) -> None:
    import platform

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    if value and value not in ("linux", f"linux/{machine}"):
        raise UsageError(f"--platform {value}: refrt runs linux/{machine} images only")


class CidfileExists(RefrtError):
    """docker's CLI refuses an existing --cidfile (exit 1) before it creates anything."""

    exit_code = 1


def claim_cidfile(path: str) -> None:
    if path and Path(path).exists():
        raise CidfileExists(f"container ID file found, make sure the other container isn't running or delete {path}")


def write_cidfile(path: str, container_id: str) -> None:
    if path:
        try:
            Path(path).write_text(container_id)
        except OSError as exc:
            raise UsageError(f"failed to write the container ID to the file: {exc}") from None


def check_image_depth(ctx: Any, ref: str) -> None:
    """docker's "max depth exceeded" before anything is created (an image pulled or built too deep)."""
    from runtime.store.overlay import check_depth
    from runtime.store.store import Store

    try:
        image = Store(ctx.paths).resolve(ref)
    except RefrtError:
        return  # a missing image is reported by create, in its words
    check_depth(len(image.layers))

