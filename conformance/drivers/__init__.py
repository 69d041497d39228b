"""Runtime drivers: ``get_driver("refrt" | "podman" | "docker", target, run_id)``."""

from __future__ import annotations

import importlib

from conformance.drivers.base import RUN_LABEL, RuntimeDriver, driver_class, register_driver
from conformance.targets.base import Target

_DRIVERS = ("refrt", "podman", "docker")


def _load_drivers() -> None:
    for name in _DRIVERS:
        try:
            importlib.import_module(f"conformance.drivers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"conformance.drivers.{name}":
                raise


def get_driver(name: str, target: Target, run_id: str) -> RuntimeDriver:
    _load_drivers()
    return driver_class(name)(target, run_id)


__all__ = ["RUN_LABEL", "RuntimeDriver", "get_driver", "register_driver"]
