"""refrt's daemon: the Docker Engine API (v1.41) on a unix socket, one daemon per root.

Map:
- ``http``     the HTTP/1.1 layer on the standard library's server: routing, versions, errors, chunked bodies,
               streamed answers and hijacked connections. Knows nothing of containers.
- ``routes``   which ``api_*`` module serves which part of the API; :func:`routes.build_router`.
- ``api_*``    one module per part of the Engine API (system, containers, exec, images, build, networks,
               volumes). Each exposes ``routes(daemon) -> list[(METHOD, pattern, handler)]`` and calls the same
               runtime packages the CLI calls (``runtime.container``, ``runtime.store`` ...).
- ``server``   the daemon's life: socket, lock, live restore, serving, shutdown.

Containers keep their per-container monitor, so the daemon can die and come back without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.paths import Paths


@dataclass
class Daemon:
    """What every API handler shares: the root's paths, a CLI-style context for the runtime's functions, and the
    daemon's in-memory state (pending attaches, event subscribers, exec sessions)."""

    paths: Paths
    ctx: Any  # runtime.cli.Context: the runtime's functions take it as the CLI passes it
    state: dict[str, Any] = field(default_factory=dict)
