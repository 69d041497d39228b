"""Errors of the registry client: every registry answer a user can meet maps to one clear line.

All derive from :class:`RegistryError` (a :class:`runtime.errors.RefrtError`); "no such manifest or repository"
is also a :class:`runtime.errors.NotFoundError` so callers that handle missing objects catch it unchanged.
"""

from __future__ import annotations

from runtime.errors import NotFoundError, RefrtError


class RegistryError(RefrtError):
    """Talking to a registry failed (transport, protocol or an error answer)."""


class AuthenticationError(RegistryError):
    """401: no credentials, wrong credentials, or a token the registry refused."""


class DeniedError(RegistryError):
    """403: the credentials are valid but lack access to the repository."""


class ManifestNotFoundError(NotFoundError, RegistryError):
    """404 on a manifest or repository."""

    exit_code = 1


class DigestMismatchError(RegistryError):
    """Content whose digest or size differs from what the manifest promised: never stored."""


class ServerError(RegistryError):
    """5xx, or an answer that breaks the distribution protocol."""


class ConnectionFailedError(RegistryError):
    """The registry could not be reached, or the connection dropped mid-transfer."""


class UnsupportedManifestError(RegistryError):
    """A manifest type refrt cannot store (schema 1), or an index without a matching platform."""


class ConnectionDroppedError(ConnectionFailedError):
    """The server closed or reset the connection (worth another try of an idempotent request)."""


class RegistryTimeoutError(ConnectionFailedError):
    """No connection within the connect timeout, or a stalled answer (less than the low-speed limit)."""


class TransferStopped(RegistryError):
    """Another transfer of the same command failed, or the command was interrupted: this one was stopped."""
