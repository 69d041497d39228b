"""Errors of the VM machinery (``vm/``), children of the harness's one hierarchy.

A VM that cannot be built, booted or reached is a *harness error*: the checks could not run, so nothing about the
runtime under test may be concluded. Boot and reachability faults are :class:`conformance.errors.TargetError`
children and carry the serial console tail as ``evidence``.
"""

from __future__ import annotations

from conformance.errors import ConformanceError, TargetError


class VmError(ConformanceError):
    """Base of the VM machinery's errors that are not about one running target."""


class ToolMissing(VmError):
    """A host program the VM machinery needs (qemu, mmdebstrap, vagrant...) is not installed."""

    def __init__(self, program: str, package: str) -> None:
        self.program = program
        self.package = package
        super().__init__(f"{program} not found: install the Debian package {package} (scripts/setup.sh does)")


class ImageBuildError(VmError):
    """The guest image could not be built. The message names the failing step; ``log`` is the build log path."""

    def __init__(self, message: str, *, log: str = "") -> None:
        self.log = log
        super().__init__(f"{message} (build log: {log})" if log else message)


class VmBootError(TargetError):
    """A VM did not start or never became reachable over SSH; ``evidence`` is the serial console tail."""


class SnapshotError(VmError):
    """The golden snapshot could not be saved or restored."""
