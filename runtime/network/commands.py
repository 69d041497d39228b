"""Running the host tools networking needs (``iptables``) with errors that say what failed.

refrt is standard library only: links, addresses and routes are netlink requests (``rtnl``), but packet
filtering goes through the iptables programs every minimal Debian has. Every call goes through :func:`run` so a
failure always names the command and its stderr.

Why not ``subprocess.run(timeout=...)``: with a timeout, the wait for the child's exit after its pipes closed is
a sleep-and-poll loop (0.5 ms doubling to 50 ms), which on a slow guest adds tens of milliseconds per command.
Here the wait blocks, and a timer kills a command that hangs.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence

from runtime.network.errors import NetworkError

TIMEOUT = 60.0


def _call(argv: Sequence[str], input_text: str | None) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate(input_text)
    finally:
        timer.cancel()
        timer.join()
    return proc.returncode, out, err


def run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    """Run ``argv``, return its stdout; raise :class:`NetworkError` naming the command when it fails."""
    try:
        code, out, err = _call(argv, input_text)
    except FileNotFoundError as exc:
        raise NetworkError(f"{argv[0]} not found: install iptables") from exc
    if check and code != 0:
        detail = (err or out).strip().splitlines()
        raise NetworkError(f"{' '.join(argv)}: {detail[-1] if detail else f'exit {code}'}")
    return out


def succeeds(argv: Sequence[str]) -> bool:
    """True when ``argv`` exits 0 (used for idempotent deletes and probes)."""
    try:
        return _call(argv, None)[0] == 0
    except FileNotFoundError:
        return False

