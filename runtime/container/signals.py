"""Signal names as docker takes them (``--signal``, ``--stop-signal``, ``kill -s``, the Engine API's
``signal=``): ``TERM``, ``SIGTERM``, ``15``. One parser for the CLI and the daemon."""

from __future__ import annotations

import signal

from runtime.errors import UsageError


def parse_signal(value: str) -> int:
    """The signal number ``value`` names; :class:`UsageError` ("Invalid signal") for anything else."""
    name = value.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"Invalid signal: {value}") from None
