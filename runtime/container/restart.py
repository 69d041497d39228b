"""Restart policies (``--restart no|always|unless-stopped|on-failure[:N]``), as docker's daemon applies them.

The monitor, which outlives every CLI, restarts its container when it exits and the policy says so: ``always``
and ``unless-stopped`` whatever the code, ``on-failure`` on a non-zero code (at most N times). ``RestartCount``
counts the restarts. A container that the user stops, kills or removes is not restarted: those commands leave
the mark :data:`STOP_MARK` in the container's directory first, and the monitor looks for it after the exit (and
again after its back-off). The back-off is docker's: 100 ms, doubled at each restart, back to 100 ms after a
run of 10 s or more.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from runtime.errors import UsageError

STOP_MARK = "user-stopped"
POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse(value: str) -> tuple[str, int]:
    """(name, maximum retry count) of a ``--restart`` value; docker's errors for bad ones."""
    name, sep, count = (value or "no").partition(":")
    if name not in POLICIES:
        raise UsageError(f"invalid restart policy '{value}'")
    if sep and name != "on-failure":
        raise UsageError(f"maximum retry count cannot be used with restart policy '{name}'")
    try:
        maximum = int(count) if sep else 0
    except ValueError:
        raise UsageError(f"invalid restart policy '{value}': maximum retry count must be a number") from None
    if maximum < 0:
        raise UsageError("maximum retry count cannot be negative")
    return name, maximum


def inspect_policy(value: str) -> dict[str, object]:
    """HostConfig.RestartPolicy as docker shows it (``no`` when none was given)."""
    name, maximum = parse(value)
    return {"Name": name, "MaximumRetryCount": maximum}


def should_restart(value: str, exit_code: int, restarts: int, directory: Path) -> bool:
    name, maximum = parse(value)
    if name == "no" or stopped_by_user(directory) or not directory.is_dir():
        return False
    if name == "on-failure":
        return exit_code != 0 and (maximum == 0 or restarts < maximum)
    return True


def mark_stopped(directory: Path) -> None:
    """The user stops (kills, removes) the container: its policy must not bring it back."""
    with contextlib.suppress(OSError):
        (directory / STOP_MARK).touch()


def clear_stop_mark(directory: Path) -> None:
    with contextlib.suppress(OSError):
        (directory / STOP_MARK).unlink()


def stopped_by_user(directory: Path) -> bool:
    return (directory / STOP_MARK).exists()


def next_delay(delay: float, ran_for: float) -> float:
    return 0.1 if ran_for >= 10 else min(delay * 2, 60.0)
