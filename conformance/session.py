"""One conformance run's shared state: the target, the runtime drivers, features and services.

Everything is created lazily, on the first case that needs it, and released in :meth:`RunSession.close` - which
the plugin calls at session end, also after Ctrl-C or SIGTERM. A failure to bring something up is remembered and
re-raised for every case that needs it, so each such case errors with the same clear message instead of
retrying a dead target a hundred times.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from conformance.drivers import RuntimeDriver, get_driver
from conformance.errors import ConformanceError
from conformance.features import Feature, target_features
from conformance.targets import Target, get_target


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class RunSession:
    def __init__(self, target_spec: str, runtimes: list[str], run_id: str | None = None,
                 destroy: str = "always") -> None:
        self.target_spec = target_spec
        self.runtimes = runtimes
        self.run_id = run_id or os.environ.get("CONFORMANCE_RUN_ID") or new_run_id()
        self.destroy = destroy
        self.started = time.time()
        self.any_failed = False
        self._target: Target | None = None
        self._drivers: dict[str, RuntimeDriver] = {}
        self._features: dict[str, Feature] | None = None
        self._facts: dict[str, str] = {}
        self._services: dict[str, Any] = {}
        self._broken: dict[str, ConformanceError] = {}

    def _remembered(self, key: str) -> None:
        if key in self._broken:
            raise self._broken[key]

    @property
    def target(self) -> Target:
        self._remembered("target")
        if self._target is None:
            target = get_target(self.target_spec)
            if hasattr(target, "destroy_policy"):
                target.destroy_policy = self.destroy
            try:
                target.up()
                self._facts = target.facts()
            except ConformanceError as exc:
                self._broken["target"] = exc
                with contextlib.suppress(Exception):
                    target.down()
                raise
            self._target = target
        return self._target

    @property
    def facts(self) -> dict[str, str]:
        return dict(self._facts)

    def features(self) -> dict[str, Feature]:
        self._remembered("features")
        if self._features is None:
            try:
                self._features = target_features(self.target)
            except ConformanceError as exc:
                self._broken["features"] = exc
                raise
            self._features["service.registry"] = Feature(
                self.target.scheme == "local",
                "the registry service runs on the harness host; reaching it from a remote target is not "
                "supported yet" if self.target.scheme != "local" else "docker-registry on 127.0.0.1")
        return self._features

    def driver(self, name: str) -> RuntimeDriver:
        key = f"driver:{name}"
        self._remembered(key)
        if name not in self._drivers:
            try:
                driver = get_driver(name, self.target, self.run_id)
                driver.prepare()
            except ConformanceError as exc:
                self._broken[key] = exc
                raise
            self._drivers[name] = driver
        return self._drivers[name]

    def runtime_features(self, name: str) -> dict[str, Feature]:
        return {key: Feature(ok, f"declared by the {name} driver")
                for key, ok in self.driver(name).features().items()}

    def service(self, name: str) -> Any:
        """Start a service (``registry``) once per run; returns its handle (``.address`` is host:port)."""
        key = f"service:{name}"
        self._remembered(key)
        if name not in self._services:
            try:
                from conformance.services.registry import Registry

                service = Registry()
                service.start()
            except ConformanceError as exc:
                self._broken[key] = exc
                raise
            self._services[name] = service
        return self._services[name]

    def runtime_versions(self) -> dict[str, str]:
        versions = {}
        for name, driver in self._drivers.items():
            try:
                versions[name] = driver.version()
            except ConformanceError:
                versions[name] = "unknown"
        return versions

    def close(self) -> None:
        """Release everything, in reverse order of creation. Never raises."""
        for driver in self._drivers.values():
            with contextlib.suppress(Exception):
                driver.cleanup()
            with contextlib.suppress(Exception):
                driver.close()
        self._drivers.clear()
        for service in self._services.values():
            with contextlib.suppress(Exception):
                service.stop()
        self._services.clear()
        if self._target is not None:
            keep = self.destroy == "never" or (self.destroy == "passing" and self.any_failed)
            if not keep:
                with contextlib.suppress(Exception):
                    self._target.down()
            self._target = None
