"""What a runtime driver is: the bridge between a suite's ``container:`` steps and one runtime's CLI.

Suites speak docker's CLI (``run --rm busybox cat /etc/hostname``). A driver turns such an argument list into the
argv that runs its runtime on the target (binary path, global flags such as ``--root``, storage configuration),
prepares the runtime (provisioning, daemon start, loading the base images the suites use), declares the runtime's
known differences as feature keys, and removes everything the run created. Differences live here, never in suites.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from conformance.targets.base import CommandResult, Target

#: Every container, network and volume a suite creates should carry this label; ``cleanup`` removes by it.
RUN_LABEL = "io.conformance.run"
#: A label unique to one ``container:`` step, so the container a timed-out step started can be found and removed.
STEP_LABEL = "io.conformance.step"


class RuntimeDriver(abc.ABC):
    """One runtime under test on one target."""

    name: ClassVar[str]

    def __init__(self, target: Target, run_id: str) -> None:
        self.target = target
        self.run_id = run_id

    @abc.abstractmethod
    def argv(self, args: list[str]) -> list[str]:
        """The full argv that runs this runtime's CLI with docker-style ``args`` on the target."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Make the runtime usable on the target: install or provision it, start daemons, load base images.

        Raises :class:`conformance.errors.DriverError` when it cannot.
        """

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version string, for report headers."""

    def features(self) -> dict[str, bool]:
        """Runtime feature keys (``runtime.*``) and whether this runtime has them; suites ``require`` them."""
        return {}

    def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Remove every container, network, volume and image this run created. Must not raise."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop what ``prepare`` started (daemons). Must not raise."""

    def leftovers_exist(self) -> bool:
        """Whether state of this driver's run may still be on the target (a root, a session directory)."""
        return True

    def reclaim(self) -> dict[str, int]:
        """Remove what an interrupted (SIGKILLed) run with this driver's run id left on the target.

        Called on a driver made for the dead run's id by the next run, before it prepares anything; returns
        what was removed by kind (``containers``, ``networks``, ``volumes``...), for its one-line notice. The
        default removes the objects labelled with the run id, then calls :meth:`close` (daemons, stores).
        Must not raise.
        """
        removed: dict[str, int] = {}
        if not self.leftovers_exist():
            return removed
        label = f"label={RUN_LABEL}={self.run_id}"
        kinds = (("containers", ["ps", "-a"], self.force_remove_args()),
                 ("networks", ["network", "ls"], ["network", "rm"]),
                 ("volumes", ["volume", "ls"], ["volume", "rm", "-f"]))
        for kind, listing, remove in kinds:
            try:
                found = self.cli([*listing, "-q", "--filter", label], timeout=60)
                ids = found.stdout.split() if found.exit_status == 0 else []
                if ids and self.cli([*remove, *ids], timeout=300).exit_status == 0:
                    removed[kind] = len(ids)
            except Exception:  # a dead runtime has nothing to list; close() still runs
                continue
        self.close()
        return removed

    @classmethod
    def parametrize(cls, argument: str) -> type[RuntimeDriver]:
        """``--runtime NAME:ARG`` (``podman:runc``, ``custom:/usr/bin/nerdctl``): this driver with an argument.
        Drivers that take none refuse."""
        from conformance.errors import DriverError

        raise DriverError(f"runtime {cls.name!r} takes no argument (got {argument!r})")

    def cli(self, args: list[str], *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        """Run the runtime's CLI on the target."""
        return self.target.run_argv(self.argv(args), timeout=timeout, stdin=stdin)

    def step_argv(self, args: list[str], marker: str) -> list[str]:
        """The argv of one ``container:`` step; a container it creates carries ``STEP_LABEL=marker``."""
        return self.argv(with_label(args, STEP_LABEL, marker))

    def force_remove_args(self) -> list[str]:
        """``rm`` that kills at once (what ``docker rm -f`` does)."""
        return ["rm", "-f", "-v"]

    def kill_step(self, marker: str, timeout: float = 30.0) -> list[str]:
        """Remove (killing first) every container the step labelled ``marker`` created; returns their ids.

        Called after a step timed out and its CLI process was killed: the container itself lives on under the
        runtime's monitor (conmon, containerd-shim, refrt's monitor) and would run to its end. Must not raise.
        """
        try:
            found = self.cli(["ps", "-a", "-q", "--filter", f"label={STEP_LABEL}={marker}"], timeout=timeout)
            ids = found.stdout.split() if found.exit_status == 0 else []
            if not ids:
                return []
            self.cli([*self.force_remove_args(), *ids], timeout=timeout)
            left = self.cli(["ps", "-a", "-q", "--filter", f"label={STEP_LABEL}={marker}"], timeout=timeout)
            return [i for i in ids if i not in left.stdout.split()]
        except Exception:  # a dead target or runtime: the run's cleanup tries again
            return []


_REGISTRY: dict[str, type[RuntimeDriver]] = {}


def register_driver(cls: type[RuntimeDriver]) -> type[RuntimeDriver]:
    """Class decorator: make ``cls`` available as ``--runtime cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def driver_class(spec: str) -> type[RuntimeDriver]:
    """The driver class for ``name`` or ``name:argument`` among the registered drivers."""
    from conformance.errors import DriverError

    name, sep, argument = spec.partition(":")
    try:
        cls = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise DriverError(f"unknown runtime {name!r} (known: {known})") from None
    return cls.parametrize(argument) if sep else cls


#: Sub-commands that create objects; the run label is added to them so ``cleanup`` can find what a run made.
_LABELLED = {("run",), ("create",), ("container", "run"), ("container", "create"), ("network", "create"),
             ("volume", "create")}


def with_label(args: list[str], key: str, value: str) -> list[str]:
    """Insert ``--label key=value`` after the sub-command of an object-creating call; others are unchanged."""
    for prefix in _LABELLED:
        if tuple(args[: len(prefix)]) == prefix:
            n = len(prefix)
            return [*args[:n], "--label", f"{key}={value}", *args[n:]]
    return args


def with_run_label(args: list[str], run_id: str) -> list[str]:
    """Insert ``--label io.conformance.run=<run_id>`` after the sub-command of an object-creating call."""
    return with_label(args, RUN_LABEL, run_id)
