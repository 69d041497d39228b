"""``--ulimit NAME=SOFT[:HARD]``: resource limits of the container's processes, as docker's HostConfig.Ulimits.

The monitor sets them on the container's init with prlimit(2) right after the fork, before the init may go on
(see monitor), so the command and everything it starts inherit them. Raising a hard limit needs
CAP_SYS_RESOURCE; without it the start fails with the kernel's answer, as docker's does.
"""

from __future__ import annotations

import resource
from typing import Any

from runtime.errors import RefrtError, UsageError

NAMES = {
    "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE, "locks": 10,  # RLIMIT_LOCKS (not in every resource module)
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
}  # fmt: skip


def parse(value: str) -> tuple[str, int, int]:
    """(name, soft, hard) of ``name=soft[:hard]`` (docker's go-units ParseUlimit); -1 is unlimited."""
    name, eq, limits = value.partition("=")
    if not eq:
        raise UsageError(f"invalid ulimit argument: {value}")
    if name not in NAMES:
        raise UsageError(f"invalid ulimit type: {name}")
    soft_text, colon, hard_text = limits.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if colon else soft
    except ValueError:
        raise UsageError(f"invalid ulimit argument: {value}") from None
    if soft > hard and hard != -1:
        raise UsageError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return name, soft, hard


def inspect(values: list[str]) -> list[dict[str, Any]] | None:
    return [{"Name": n, "Soft": s, "Hard": h} for n, s, h in map(parse, values)] or None


def apply(pid: int, values: list[str]) -> None:
    """Set each limit on process ``pid``."""
    for name, soft, hard in map(parse, values):
        limits = tuple(resource.RLIM_INFINITY if v == -1 else v for v in (soft, hard))
        try:
            resource.prlimit(pid, NAMES[name], limits)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            raise RefrtError(f"setrlimit {name}={soft}:{hard}: {exc}") from None
