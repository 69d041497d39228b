"""Running the host tools networking needs (``ip``, ``iptables``, ``nsenter``) with errors that say what failed.

refrt is standard library only, so it drives the kernel through the programs every minimal Debian has rather
than netlink sockets. Every call goes through :func:`run` so a failure always names the command and its stderr.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from runtime.network.errors import NetworkError


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    """Run ``argv``, return its stdout; raise :class:`NetworkError` naming the command when it fails."""
    try:
        proc = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError as exc:
        raise NetworkError(f"{argv[0]} not found: install iproute2/iptables") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise NetworkError(f"{' '.join(argv)}: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def succeeds(argv: Sequence[str]) -> bool:
    """True when ``argv`` exits 0 (used for idempotent deletes and probes)."""
    try:
        return subprocess.run(list(argv), capture_output=True, check=False, timeout=60).returncode == 0
    except FileNotFoundError:
        return False


def in_netns(netns_path: str, argv: Sequence[str], *, input_text: str | None = None) -> str:
    """Run ``argv`` inside the network namespace at ``netns_path`` (``/proc/<pid>/ns/net``)."""
    return run(["nsenter", f"--net={netns_path}", "--", *argv], input_text=input_text)
