"""Helpers of the daemon-life and thin-client tests: the lean refrt invocation, and what processes a root has.

Processes are found by name (``refrt-daemon``, ``refrt-zygote``, ``refrt-worker``, ``refrt-monitor``: the runtime
sets them with prctl) and by the root in their command line, so tests of other sessions never count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
MAIN = REPO / "runtime" / "__main__.py"
DAEMON_NAMES = ("refrt-daemon", "refrt-zygote", "refrt-worker", "refrt-spare")


def lean(root: Path, *args: str) -> list[str]:
    """The thin client as the harness runs it: an isolated interpreter without site."""
    return [sys.executable, "-I", "-S", str(MAIN), "--root", str(root), *args]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    base["REFRT_DAEMON_IDLE"] = "30"  # a test that fails half-way still leaves nothing for long
    base.update(extra)
    return base


def refrt(root: Path, *args: str, input: str | None = None, timeout: float = 60,
          environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lean(root, *args), input=input, capture_output=True, text=True, timeout=timeout,
                          env=environ or env(), check=False)


def processes(root: Path, names: tuple[str, ...] = DAEMON_NAMES) -> list[tuple[int, str]]:
    """(pid, name) of the live processes named ``names`` whose command line mentions ``root``."""
    found = []
    needle = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name not in names or needle not in (entry / "cmdline").read_bytes():
                continue
            if (entry / "stat").read_bytes().split(b") ")[1][:1] == b"Z":
                continue
        except (OSError, IndexError):
            continue
        found.append((int(entry.name), name))
    return found


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def daemon_pid(root: Path) -> int:
    return int((root / "run" / "refrt-daemon.pid").read_text().split()[0])


def stop_daemons(root: Path) -> None:
    """Stop the root's daemon (SIGTERM), then make sure no daemon, zygote or worker of it is left."""
    for pid, _ in processes(root, ("refrt-daemon",)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not processes(root), timeout=15):
        leftovers = processes(root)
        for pid, _ in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes left behind: {leftovers}")


def remove_all_containers(root: Path) -> None:
    ids = refrt(root, "ps", "-aq").stdout.split()
    if ids:
        refrt(root, "rm", "-f", *ids, timeout=120)
