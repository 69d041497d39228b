"""Where refrt keeps its state.

Two directories, as docker has ``data-root`` and ``exec-root``: the persistent ``root`` (images, layers,
container layers, volumes; ``--root`` / ``REFRT_ROOT``, default ``/var/lib/refrt``) and the volatile ``state``
(monitor pids, locks, sockets; ``--state`` / ``REFRT_STATE``, default ``/run/refrt``). A test that passes its own
``--root`` gets ``<root>/run`` as state unless it names one, so temporary roots never touch each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.client import directory_option
from runtime.errors import UsageError

DEFAULT_ROOT = Path("/var/lib/refrt")
DEFAULT_STATE = Path("/run/refrt")


def check_directory(option: str, variable: str, value: str | None, *, writable: bool = True) -> str | None:
    """The directory named by ``option`` or else ``variable`` (None when neither is given), refused with a
    :class:`UsageError` when it cannot serve; the check is the client's (:func:`runtime.client.directory_option`),
    so both paths of a command refuse the same input with the same line."""
    try:
        return directory_option(option, variable, value, writable=writable)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Paths:
    root: Path
    state: Path

    @classmethod
    def resolve(cls, root: str | None = None, state: str | None = None) -> Paths:
        """Apply flag > environment > default, and derive ``state`` from a non-default root.

        A flag or variable that is given is checked first (:func:`check_directory`): ``--root ''`` is an error,
        not the system root, and a file where a directory belongs is named as such, not met in a traceback."""
        root = check_directory("--root", "REFRT_ROOT", root)
        state = check_directory("--state", "REFRT_STATE", state)
        root_path = Path(root or DEFAULT_ROOT).absolute()
        state_value = state
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
