"""Which module serves which part of the Engine API. Adding a part means adding its module name here."""

from __future__ import annotations

import importlib

from runtime.daemon import Daemon
from runtime.daemon.http import Router

API_MODULES = ("system", "containers", "exec", "images", "build", "networks", "volumes")


def build_router(daemon: Daemon) -> Router:
    router = Router()
    for name in API_MODULES:
        try:
            module = importlib.import_module(f"runtime.daemon.api_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"runtime.daemon.api_{name}":
                raise
            continue  # that part of the API is not there yet
        router.add_all(module.routes(daemon))
    return router
