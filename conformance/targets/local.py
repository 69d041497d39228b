"""``local``: this host, as the user running the harness (root in CI). Needs nothing else."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conformance.errors import CommandTimeout
from conformance.targets.base import CommandResult, Target, register_target


@register_target
class LocalTarget(Target):
    scheme = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host: Any = None

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        started = time.monotonic()
        # A new session so that a timeout kills the whole process group, not just the shell.
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        try:
            out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(f"{command!r} ran longer than {timeout:.0f}s and was killed") from None
        return CommandResult(command=command, exit_status=proc.returncode,
                             stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                             duration=time.monotonic() - started)

    def put(self, local: Path, remote: str) -> None:
        destination = Path(remote)
        destination.parent.mkdir(parents=True, exist_ok=True)
        if Path(local).is_dir():
            shutil.copytree(local, destination, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(local, destination)

    @property
    def host(self) -> Any:
        if self._host is None:
            import testinfra

            self._host = testinfra.get_host("local://")
        return self._host
