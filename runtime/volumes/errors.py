"""Errors of refrt's volumes, children of the one refrt hierarchy."""

from __future__ import annotations

from runtime.errors import ConflictError, NotFoundError, RefrtError, UsageError


class VolumeError(RefrtError):
    """A volume could not be created, populated or removed."""


class VolumeNotFound(NotFoundError):
    """No volume of that name."""


class VolumeInUse(ConflictError):
    """The volume is used by a container (running or not) and may not be removed."""


class BadMountSpec(UsageError):
    """A ``-v``, ``--mount`` or ``--tmpfs`` value that cannot be parsed or is invalid."""


class BindSourceMissing(RefrtError):
    """``--mount type=bind`` names a host path that does not exist (``-v`` would have created it)."""
