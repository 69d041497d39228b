"""The one exception hierarchy of the harness.

Three verdicts must never blur: a *failure* is the runtime or host not conforming (an expectation not met); a
*skip* names a missing feature; everything below is a *harness error*: the harness could not find out. Raise
these for harness errors only; a failed expectation is ``conformance.suite.steps.ExpectationFailed``.

    ConformanceError
    ├── SuiteError          malformed suite file (file, line and key in the message)
    ├── TargetError         target unreachable, SSH dropped, VM never booted (may carry a log tail)
    │   └── CommandTimeout  a command on the target outlived its timeout
    ├── DriverError         the runtime under test cannot be prepared (binary missing, daemon won't start)
    ├── MatchTimeout        a suite's regex did not finish by the case's deadline (catastrophic backtracking)
    └── ReportError         a report cannot be written or read
"""

from __future__ import annotations


class ConformanceError(Exception):
    """Base of every harness error."""


class SuiteError(ConformanceError):
    """A suite file is malformed. The message names the file, line and key."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")


class TargetError(ConformanceError):
    """The target host cannot be reached or used. ``evidence`` holds what explains it (a serial log tail...)."""

    def __init__(self, message: str, *, evidence: str = "") -> None:
        self.evidence = evidence
        super().__init__(message)


class CommandTimeout(TargetError):
    """A command on the target ran longer than its timeout and was killed.

    ``killed`` says what was killed ("process group 1234"), so a verdict can say exactly that and no more.
    """

    def __init__(self, message: str, *, evidence: str = "", killed: str = "") -> None:
        self.killed = killed
        super().__init__(message, evidence=evidence)


class DriverError(ConformanceError):
    """The runtime under test cannot be prepared or driven."""


class MatchTimeout(ConformanceError):
    """A suite's regex ran past the case's deadline and was stopped: the harness could not judge the output."""


class ReportError(ConformanceError):
    """A report cannot be written, or a results file cannot be read."""
