"""Services the suites and tests lean on, started on the host for the length of a run (feature ``service.*``).

Each service is a small manager with ``start()`` / ``stop()`` (and a context manager) that owns a real program -
never a stand-in - bound to loopback on a free port, with all its state in a temporary directory it removes.
"""

from __future__ import annotations

from conformance.errors import ConformanceError


class ServiceError(ConformanceError):
    """A service could not be started (program missing, never answered); the message carries its log tail."""


__all__ = ["ServiceError"]
