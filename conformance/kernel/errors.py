"""Errors of the kernel check: the check itself could not run (exit status 2), never a missing feature."""

from __future__ import annotations

from conformance.errors import ConformanceError


class KernelCheckError(ConformanceError):
    """The kernel check could not run: unreadable config file, probe program failed on the target."""
