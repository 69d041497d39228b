"""Where refrt keeps its state.

Two directories, as docker has ``data-root`` and ``exec-root``: the persistent ``root`` (images, layers,
container layers, volumes; ``--root`` / ``REFRT_ROOT``, default ``/var/lib/refrt``) and the volatile ``state``
(monitor pids, locks, sockets; ``--state`` / ``REFRT_STATE``, default ``/run/refrt``). A test that passes its own
``--root`` gets ``<root>/run`` as state unless it names one, so temporary roots never touch each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/var/lib/refrt")
DEFAULT_STATE = Path("/run/refrt")


@dataclass(frozen=True)
class Paths:
    root: Path
    state: Path

    @classmethod
    def resolve(cls, root: str | None = None, state: str | None = None) -> Paths:
        """Apply flag > environment > default, and derive ``state`` from a non-default root."""
        root_path = Path(root or os.environ.get("REFRT_ROOT") or DEFAULT_ROOT).absolute()
        state_value = state or os.environ.get("REFRT_STATE")
        if state_value:
            state_path = Path(state_value).absolute()
        elif root_path == DEFAULT_ROOT:
            state_path = DEFAULT_STATE
        else:
            state_path = root_path / "run"
        return cls(root=root_path, state=state_path)

    # Each package owns one subdirectory of root; these names are the contract between them.
    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def networks(self) -> Path:
        return self.root / "networks"

    @property
    def build_cache(self) -> Path:
        return self.root / "build-cache"

    @property
    def locks(self) -> Path:
        return self.state / "locks"
