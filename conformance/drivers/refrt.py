"""The refrt driver: the bundled reference runtime, run from this checkout locally or copied to a remote target.

On ``local`` refrt runs from the installed package (``python -m runtime``). On any other target ``prepare``
copies the ``runtime/`` package over SFTP to ``/opt/conformance/refrt`` (skipped when the copy there has the same
content hash, so provisioning twice changes nothing) and runs it with the target's ``python3``: refrt needs
nothing else. The harness keeps refrt's state in its own root, so a run never touches a user's
``/var/lib/refrt``, and ``cleanup`` can remove every container, network and volume in it - also those a
SIGKILLed earlier run left behind, because ``prepare`` starts with a cleanup.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import sys
from pathlib import Path
from typing import Protocol

import runtime
from conformance.drivers.base import RuntimeDriver, register_driver, with_run_label
from conformance.errors import DriverError
from conformance.targets.base import CommandResult, Target, progress_step

# The harness's own refrt root; CONFORMANCE_REFRT_ROOT moves it (tests give each run its own).
HARNESS_ROOT = "/var/lib/conformance/refrt"
REMOTE_DIR = "/opt/conformance/refrt"
BASE_IMAGES = ("busybox",)


def package_hash(package_dir: Path) -> str:
    """A content hash of the runtime package's sources, to make provisioning idempotent."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class _Host(Protocol):
    """What provisioning needs of a target or a bare SSH session: run a command, copy a tree."""

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...


def harness_root() -> str:
    return os.environ.get("CONFORMANCE_REFRT_ROOT", HARNESS_ROOT)


def remote_argv(root: str) -> list[str]:
    """refrt's thin client on a remote target: the guest's python3, lean (isolated, no site)."""
    return ["python3", "-I", "-S", f"{REMOTE_DIR}/runtime/__main__.py", "--root", root, "--state", f"{root}/run"]


def provision(host: _Host) -> bool:
    """Copy the runtime package to ``host`` unless the copy there is current; True when it copied."""
    package = Path(runtime.__file__).parent
    wanted = package_hash(package)
    marker = f"{REMOTE_DIR}/.hash"
    have = host.run(f"cat {marker} 2>/dev/null", timeout=30).stdout.strip()
    if have == wanted:
        return False
    check = host.run("command -v python3", timeout=30)
    if check.exit_status != 0:
        raise DriverError("refrt needs python3 on the target, and it has none")
    host.run(f"rm -rf {REMOTE_DIR}/runtime && mkdir -p {REMOTE_DIR}", timeout=60)
    host.put(package, f"{REMOTE_DIR}/runtime")
    host.run(f"find {REMOTE_DIR} -name __pycache__ -prune -exec rm -rf {{}} + ; "
             f"echo {shlex.quote(wanted)} > {marker}", timeout=60)
    return True


#: How long the daemon started in a warm snapshot waits for connections before it stops by itself: the VM is
#: disposable, so as long as a run may pause between two refrt commands.
WARM_DAEMON_IDLE = 86400


def warm(host: _Host, root: str | None = None) -> None:
    """Make refrt ready on ``host`` before its state is snapshotted: the package copied, its bytecode compiled,
    the busybox base image in ``root`` and the root's daemon listening (with its zygote's imports done), so a
    restored clone's first refrt command costs only the thin client's start."""
    root = root or harness_root()
    provision(host)

    def checked(command: str, what: str, timeout: float) -> None:
        result = host.run(command, timeout=timeout)
        if result.exit_status != 0:
            raise DriverError(f"warming refrt up: {what} failed: {(result.stderr or result.stdout).strip()[-500:]}")

    checked(f"python3 -m compileall -q -j 0 {REMOTE_DIR}/runtime >/dev/null", "compileall", 300)
    client = f"REFRT_DAEMON_IDLE={WARM_DAEMON_IDLE} " + shlex.join(remote_argv(root))
    for image in BASE_IMAGES:
        checked(f"{client} image inspect {image} >/dev/null 2>&1 || {client} image bootstrap {image}",
                f"creating the {image} base image", 600)
    # Every command the driver's prepare() sends, once, so that each code path's modules are imported.
    checked(f"{client} ps -a -q && {client} network ls -q && {client} volume ls -q", "listing", 120)


def warm_check(root: str | None = None) -> str:
    """The shell command that shows refrt usable in a restored warm clone: the daemon the snapshot was taken with
    is still the root's (its pidfile names it), alive, and its socket is in place.

    Why not a refrt command: in a TCG guest the client's interpreter alone costs 0.2-0.4 s, most of what
    restore-to-ready has left. The clone's RAM is the snapshot's, so a daemon that is alive is the one that
    listened, with busybox loaded, when the state was saved; the run's first refrt command uses it anyway."""
    state = shlex.quote(f"{root or harness_root()}/run")
    return (f"{{ read -r pid && read -r sock; }} < {state}/refrt-daemon.pid && kill -0 \"$pid\" && "
            f"test -S \"$sock\" && test -S {state}/refrt.sock")


def warm_key(root: str | None = None) -> str:
    """What a warm snapshot depends on: the runtime's sources and the root it was warmed in."""
    root = root or harness_root()
    digest = hashlib.sha256(f"{root}|{WARM_DAEMON_IDLE}".encode()).hexdigest()[:6]
    return f"refrt-{package_hash(Path(runtime.__file__).parent)}-{digest}"


# suites/cli.yaml: docker's command-line behaviour (messages and exit codes, table headers, -it refused without a
# terminal, attach's exit code, commit's sha256: id); refrt and docker have it, podman declares what it lacks
CLI_FEATURES = ("runtime.cli.docker_error_messages", "runtime.cli.table_header_functions", "runtime.cli.tty_refusal",
                "runtime.cli.attach_exit_code", "runtime.cli.commit_prints_digest", "runtime.cli.exec_exit_codes",
                "runtime.cli.ulimit", "runtime.cli.docker_events", "runtime.health_checks")


@register_driver
class RefrtDriver(RuntimeDriver):
    name = "refrt"

    def __init__(self, target: Target, run_id: str) -> None:
        super().__init__(target, run_id)
        #: The refrt root this driver uses; fixed at creation so a run record can name it.
        self.root = harness_root()

    @property
    def _local(self) -> bool:
        return self.target.scheme == "local"

    def _base_argv(self) -> list[str]:
        # refrt's thin client with a lean interpreter (isolated, no site): the command runs in the root's daemon,
        # started on demand. Run as a file, runtime/__main__.py puts its own package on sys.path.
        if self._local:
            python = [sys.executable, "-I", "-S", str(Path(runtime.__file__).parent / "__main__.py")]
        else:
            return remote_argv(self.root)
        return [*python, "--root", self.root, "--state", f"{self.root}/run"]

    def argv(self, args: list[str]) -> list[str]:
        return [*self._base_argv(), *with_run_label(args, self.run_id)]

    def prepare(self) -> None:
        if getattr(self.target, "warmed", None) == warm_key(self.root):
            # A fresh clone of a snapshot warmed up for these sources and this root (and checked usable by the
            # target's up()): provisioned, busybox loaded, daemon up, nothing to clean.
            with progress_step(self.target.scheme, "refrt: provisioned in the warm snapshot"):
                return
        if not self._local:
            # On a remote target provisioning takes a while: say what happens, as it happens.
            with progress_step(self.target.scheme, f"provisioning refrt in {REMOTE_DIR}") as notes:
                notes.append("copied" if self._provision() else "already current")
        self.cleanup()
        for image in BASE_IMAGES:
            if self.cli(["image", "inspect", image], timeout=60).exit_status == 0:
                continue
            with contextlib.nullcontext() if self._local else progress_step(
                    self.target.scheme, f"refrt: creating the {image} base image"):
                result = self.cli(["image", "bootstrap", image], timeout=600)
            if result.exit_status != 0:
                raise DriverError(f"refrt cannot create the {image} base image: "
                                  f"{(result.stderr or result.stdout).strip()[-500:]}")

    def _provision(self) -> bool:
        """Copy the runtime package to the target unless the copy there is current; True when it copied."""
        return provision(self.target)

    def version(self) -> str:
        result = self.cli(["version", "--format", "{{.Client.Version}}"], timeout=60)
        if result.exit_status == 0 and result.stdout.strip():
            return result.stdout.strip()
        return runtime.__version__

    def features(self) -> dict[str, bool]:
        return {"runtime.refrt": True, "runtime.build.heredoc": True, "runtime.seccomp.docker_profile": True,
                "runtime.seccomp.io_uring_refused": True, "runtime.seccomp.vsock_refused": True,
                "runtime.loopback_guard": True, **dict.fromkeys(CLI_FEATURES, True)}

    def leftovers_exist(self) -> bool:
        # Running refrt on a root that is gone would create it anew.
        return self.target.run(f"test -d {shlex.quote(self.root)}", timeout=30).exit_status == 0

    def cleanup(self) -> None:
        # Containers first (they hold networks and volumes), then user networks and unused volumes.
        ids = self.cli(["ps", "-a", "-q"], timeout=120).stdout.split()
        if ids:
            self.cli([*self.force_remove_args(), *ids], timeout=300)
        networks = self.cli(["network", "ls", "-q", "--filter", "type=custom"], timeout=60)
        if networks.exit_status == 0 and networks.stdout.split():
            self.cli(["network", "rm", *networks.stdout.split()], timeout=120)
        self.cli(["volume", "prune", "-a", "-f"], timeout=120)
