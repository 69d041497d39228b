"""Target hosts: ``get_target("local" | "ssh://..." | "qemu" | "vagrant")``."""

from __future__ import annotations

import importlib

from conformance.targets.base import CommandResult, Target, TargetSpec, register_target, target_class

# Backends register themselves on import; a backend module not written yet is simply absent.
_BACKENDS = ("local", "ssh", "qemu", "vagrant")


def _load_backends() -> None:
    for name in _BACKENDS:
        try:
            importlib.import_module(f"conformance.targets.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"conformance.targets.{name}":
                raise


def get_target(raw: str) -> Target:
    """Build (but do not start) the target described by ``raw``."""
    _load_backends()
    spec = TargetSpec.parse(raw)
    return target_class(spec.scheme)(spec)


__all__ = ["CommandResult", "Target", "TargetSpec", "get_target", "register_target"]
