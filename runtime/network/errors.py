"""Errors of refrt's networking, children of the one refrt hierarchy (exit codes follow docker)."""

from __future__ import annotations

from runtime.errors import ConflictError, NotFoundError, RefrtError, UsageError


class NetworkError(RefrtError):
    """A host networking step failed (ip, iptables, sysctl); the message names the step and its output."""


class NetworkNotFound(NotFoundError):
    """No network has that name, id or id prefix."""


class NetworkInUse(ConflictError):
    """The network still has containers attached, or its name/subnet is already taken."""


class PortInUse(ConflictError):
    """A host port asked for with ``-p`` is already bound on the host or published by another container."""


class PoolExhausted(NetworkError):
    """No free subnet is left in the address pool, or no free address in a network's subnet."""


class BadPortSpec(UsageError):
    """A ``-p`` value that cannot be parsed."""


class ContainerNotAttached(NotFoundError):
    """``connect``/``disconnect``/``port`` named a container refrt has no network record of."""
