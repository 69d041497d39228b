"""Runtime drivers: ``get_driver("refrt" | "podman" | "docker", target, run_id)``."""

from __future__ import annotations

import importlib

from conformance.drivers.base import RUN_LABEL, RuntimeDriver, register_driver
from conformance.drivers.base import driver_class as _registered_class
from conformance.targets.base import Target

_DRIVERS = ("refrt", "podman", "docker")


def _load_drivers() -> None:
    for name in _DRIVERS:
        try:
            importlib.import_module(f"conformance.drivers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"conformance.drivers.{name}":
                raise


def driver_class(spec: str) -> type[RuntimeDriver]:
    """The driver class for ``--runtime spec``: ``refrt``, ``podman``, ``podman:runc``, ``custom:/path``..."""
    _load_drivers()
    return _registered_class(spec)


def get_driver(spec: str, target: Target, run_id: str) -> RuntimeDriver:
    return driver_class(spec)(target, run_id)


__all__ = ["RUN_LABEL", "RuntimeDriver", "driver_class", "get_driver", "register_driver"]
