"""The one exception hierarchy of refrt.

Every error the CLI can report derives from :class:`RefrtError`; the CLI prints ``refrt: <message>`` on one line
and exits with the error's ``exit_code``, following docker's conventions: 125 when refrt itself fails (bad flags,
missing image, runtime fault), 126 when the container command cannot be invoked, 127 when it is not found, and 1
for "no such object" answers of management commands (``rm``, ``inspect``, ``rmi``), as docker does.
Packages add their own subclasses next to their code (``store.errors``...), never new roots.
"""


class RefrtError(Exception):
    """Base of all refrt errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 125


class UsageError(RefrtError):
    """Bad command line: unknown flag, wrong number of arguments, malformed value."""

    exit_code = 125


class NotFoundError(RefrtError):
    """A named object (container, image, network, volume) does not exist."""

    exit_code = 1


class ConflictError(RefrtError):
    """The request conflicts with current state: name in use, image in use, port already bound."""

    exit_code = 125


class CannotInvokeError(RefrtError):
    """The container command exists but cannot be executed (permission denied, not executable)."""

    exit_code = 126


class CommandNotFoundError(RefrtError):
    """The container command does not exist in the container's filesystem or PATH."""

    exit_code = 127
