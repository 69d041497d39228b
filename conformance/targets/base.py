"""What a target host is: somewhere to run shell commands as root, copy files to, and learn facts about.

Every backend (local, ssh://, qemu, vagrant) is a small subclass registered under its URL scheme, the way
testinfra registers its backends; ``conformance.targets.get_target(spec)`` picks one from a spec string such as
``local``, ``ssh://root@127.0.0.1:2222?key=/path/id&sudo=false``, ``qemu`` or ``vagrant``.
"""

from __future__ import annotations

import abc
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit


@dataclass
class CommandResult:
    """The outcome of one command on a target."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float


@dataclass
class TargetSpec:
    """A parsed ``--target`` value: ``scheme://user@host:port?opt=value`` or a bare scheme name."""

    raw: str
    scheme: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> TargetSpec:
        if "://" not in raw:
            name, _, query = raw.partition("?")
            options = {k: v[-1] for k, v in parse_qs(query).items()}
            name, colon, release = name.partition(":")  # qemu:bullseye - a VM target's guest release
            if colon:
                options["release"] = release
            return cls(raw=raw, scheme=name, options=options)
        parts = urlsplit(raw)
        return cls(
            raw=raw,
            scheme=parts.scheme,
            user=parts.username,
            host=parts.hostname,
            port=parts.port,
            options={k: v[-1] for k, v in parse_qs(parts.query).items()},
        )


class Target(abc.ABC):
    """A host the suites run on. Subclasses set ``scheme`` and implement the abstract methods.

    Life cycle: ``up()`` (boot, connect, provision) → any number of ``run()`` → ``down()`` (disconnect, and
    destroy when disposable). ``run`` raises :class:`conformance.errors.TargetError` for transport faults and
    :class:`conformance.errors.CommandTimeout` on timeout; a non-zero exit status is *not* an error.
    """

    scheme: ClassVar[str]
    #: True for targets created for this run and destroyed by ``down()`` (VMs).
    disposable: ClassVar[bool] = False

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        """Short name used in report paths and JUnit class names."""
        return self.spec.scheme

    def up(self) -> None:  # noqa: B027 - optional hook
        """Make the target usable (boot a VM, open the SSH connection). Idempotent."""

    def down(self) -> None:  # noqa: B027 - optional hook
        """Release the target; a disposable one is destroyed. Idempotent, safe after a failed ``up``."""

    @abc.abstractmethod
    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        """Run ``command`` through ``/bin/sh -c`` as root on the target."""

    @abc.abstractmethod
    def put(self, local: Path, remote: str) -> None:
        """Copy a local file or directory tree to ``remote`` on the target (parents created)."""

    def run_argv(self, argv: list[str], *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        return self.run(shlex.join(argv), timeout=timeout, stdin=stdin)

    @property
    def host(self) -> Any:
        """A testinfra ``Host`` for this target (file, package, service modules)."""
        raise NotImplementedError(f"target {self.name} has no testinfra host")

    def facts(self) -> dict[str, str]:
        """Kernel release, architecture, cgroup version and backend, for report headers."""
        script = (
            "uname -r; uname -m; "
            "if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo v2; "
            "elif [ -d /sys/fs/cgroup/unified ] && grep -q ' /sys/fs/cgroup/unified ' /proc/mounts; "
            "then echo hybrid; else echo v1; fi; hostname"
        )
        out = self.run(script, timeout=30).stdout.split()
        keys = ("kernel", "arch", "cgroup", "hostname")
        facts = dict(zip(keys, out, strict=False))
        facts["backend"] = self.scheme
        return facts


_PROGRESS: list[Callable[[str], None]] = []


def set_progress_writer(writer: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Where progress lines go (default: stderr); returns the writer it replaces. A run installs a writer that
    reaches the terminal even while pytest captures the output of the case that happens to bring the target up."""
    previous = _PROGRESS[0] if _PROGRESS else None
    _PROGRESS[:] = [writer] if writer is not None else []
    return previous


def progress(line: str) -> None:
    """Write one progress line now (a target bringing itself up says what it does, as it does it)."""
    if _PROGRESS:
        _PROGRESS[0](line)
    else:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def progress_step(scheme: str, what: str) -> Iterator[list[str]]:
    """``qemu: restoring snapshot …`` when a step starts, ``qemu: restoring snapshot … 2.4 s`` when it ends (or
    ``… failed after 2.4 s``), so a minute of VM start-up is never silent. What the step appends to the list
    it is given is shown before the duration (``qemu: detecting acceleration … tcg, 3.1 s``)."""
    progress(f"{scheme}: {what} …")
    started = time.monotonic()
    notes: list[str] = []
    try:
        yield notes
    except BaseException:
        progress(f"{scheme}: {what} … failed after {seconds(time.monotonic() - started)} s")
        raise
    progress(f"{scheme}: {what} … {''.join(n + ', ' for n in notes)}{seconds(time.monotonic() - started)} s")


def image_progress(scheme: str) -> Callable[[str], None]:
    """A ``progress`` callback for the VM image builders: their step lines, not every line of their tools."""

    def say(line: str) -> None:
        if line.strip() and not line.startswith(" "):
            progress(f"{scheme}: image: {line.strip()}")

    return say


def seconds(value: float) -> str:
    """A duration for messages: ``5``, ``2.5``, ``120`` (one decimal at most, no exponent)."""
    return f"{round(value, 1):g}" if value < 1e6 else f"{value:.0f}"


_REGISTRY: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: make ``cls`` available under ``cls.scheme``."""
    _REGISTRY[cls.scheme] = cls
    return cls


def target_class(scheme: str) -> type[Target]:
    from conformance.errors import TargetError

    try:
        return _REGISTRY[scheme]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise TargetError(f"unknown target scheme {scheme!r} (known: {known})") from None
