"""One command in a throw-away container over given layers: the Dockerfile builder's ``RUN``.

Same init as ``refrt run`` (namespaces, rootfs steps, capabilities), but no monitor, no log and no state: the
caller waits for the exit code and gets the output on the descriptors it passes. Only the upper dir survives;
it is what the builder turns into the new layer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.container import capabilities, init, namespaces, seccomp
from runtime.container.hostfiles import write_host_files
from runtime.container.rootfs import RootfsPlan
from runtime.errors import RefrtError, UsageError
from runtime.spec import MountSpec


def run_in_rootfs(
    ctx: Any,
    lower_dirs: Sequence[Path],
    upper: Path,
    argv: list[str],
    env: list[str],
    workdir: str = "/",
    user: str = "",
    *,
    network: str = "host",
    hostname: str = "buildkitsandbox",
    mounts: Sequence[MountSpec] = (),
    stdin: int | None = None,
    stdout: int = 1,
    stderr: int = 2,
) -> int:
    """Run ``argv`` and return its exit code (128+n when killed by signal n).

    ``network`` is ``host`` (the builder's default, as docker build's RUN reaches the network) or ``none``.
    Raises :class:`RefrtError` (125/126/127) when the command cannot be started at all.
    """
    del ctx  # part of the contract; this runner needs no state of its own
    if network not in ("host", "none"):
        raise UsageError(f"run_in_rootfs: network must be host or none, not {network!r}")
    upper = Path(upper)
    upper.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".run-", dir=upper.parent))
    try:
        (scratch / "work").mkdir()
        (scratch / "merged").mkdir()
        plan = init.LaunchPlan(
            rootfs=RootfsPlan(
                lower_dirs=[Path(p) for p in lower_dirs],
                upper=upper,
                work=scratch / "work",
                merged=scratch / "merged",
                host_files=write_host_files(scratch, hostname, network),
                mounts=list(mounts),
            ),
            argv=argv,
            env=env,
            workdir=workdir or "/",
            user=user,
            hostname=hostname,
            network_mode=network,
            # docker's builder runs RUN under the default profile too
            seccomp=seccomp.filter_for(seccomp.SecurityOptions(), False, list(capabilities.DEFAULT)),
        )
        return _fork_and_wait(plan, stdin, stdout, stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fork_and_wait(plan: init.LaunchPlan, stdin: int | None, stdout: int, stderr: int) -> int:
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    stdio = (stdin if stdin is not None else null, stdout, stderr)
    pid = namespaces.fork_into_new_pid_namespace()
    if pid == 0:  # pragma: no cover - the container's init
        for fd in (sync_r, go_w, err_r):
            os.close(fd)
        init.child_main(plan, stdio, sync_w, go_r, err_w)
    for fd in (sync_w, go_r, err_w, null):
        os.close(fd)
    try:
        if os.read(sync_r, 16) == b"ns\n":
            os.write(go_w, b"gocg")  # no cgroup of its own: the init need not wait for one
    finally:
        os.close(sync_r)
        os.close(go_w)
    with os.fdopen(err_r, "rb") as f:
        failure = f.read()
    status = os.waitpid(pid, 0)[1]
    if failure:
        import json

        report = json.loads(failure)
        error = RefrtError(report["message"])
        error.exit_code = int(report["code"])
        raise error
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
