"""The daemon's life: where its socket is, serving it, and stopping cleanly.

``refrt daemon [--host unix://PATH]`` serves in the foreground until SIGTERM/SIGINT. The default socket is
``<state>/refrt.sock`` (``/run/refrt/refrt.sock`` for the default root), so each root has its own daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

from runtime.daemon import Daemon
from runtime.daemon.http import UnixHTTPServer
from runtime.daemon.routes import build_router
from runtime.errors import UsageError
from runtime.paths import Paths

SOCKET_NAME = "refrt.sock"


def default_socket(paths: Paths) -> Path:
    return paths.state / SOCKET_NAME


def socket_path(host: str | None, paths: Paths) -> Path:
    """``unix:///path`` (or a bare path) → the path; None → the root's default socket."""
    if not host:
        return default_socket(paths)
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://"))
    if "://" in host:
        raise UsageError(f"unsupported daemon host {host!r}: only unix:// sockets are served")
    return Path(host)


def serve(ctx: Any, host: str | None = None, *, verbose: bool = False,
          ready: threading.Event | None = None) -> int:
    """Serve the Engine API for ``ctx.paths`` on ``host`` until SIGTERM or SIGINT."""
    path = socket_path(host, ctx.paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    daemon = Daemon(paths=ctx.paths, ctx=ctx)
    server = UnixHTTPServer(str(path), build_router(daemon), verbose=verbose)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return 0
