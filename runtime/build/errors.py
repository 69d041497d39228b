"""Errors of ``refrt build``.

Docker's CLI exits 1 whenever a build fails, whatever the cause: a Dockerfile that does not parse, a missing
context file, a ``RUN`` step that exits non-zero. refrt does the same, so scripts written against ``docker build``
keep their meaning; only a malformed command line (``--build-arg`` without ``=``...) is a ``UsageError`` (125).
"""

from __future__ import annotations

from runtime.errors import RefrtError


class BuildError(RefrtError):
    """A build failed. Exit code 1, as ``docker build``."""

    exit_code = 1


class DockerfileError(BuildError):
    """The Dockerfile is malformed. The message starts with ``Dockerfile:<line>:`` where the fault is."""

    def __init__(self, message: str, line: int | None = None, *, filename: str = "Dockerfile") -> None:
        self.line = line
        self.reason = message
        where = f"{filename}:{line}: " if line else f"{filename}: "
        super().__init__(where + message)


class ExpansionError(BuildError):
    """A ``$VAR`` expansion is malformed (``${``, ``${:x}``) or a ``${VAR:?msg}`` fired."""


class ContextError(BuildError):
    """A COPY/ADD source is missing, escapes the context, or cannot be read."""


class StepFailed(BuildError):
    """A RUN step's command exited non-zero. ``status`` is its exit code; refrt build still exits 1."""

    def __init__(self, message: str, status: int) -> None:
        self.status = status
        super().__init__(message)
