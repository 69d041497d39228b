"""Pid/state files of live VMs, so that a harness killed with SIGKILL leaves nothing running for long.

Every VM gets a directory ``<run>/<vm-id>/`` (:func:`vm.paths.run_root`) holding its disposable files and a
``state.json`` that names the VM's process (pid + start time, so a recycled pid is never killed by mistake) and
its *owner*: the harness process that started it. A VM whose owner is gone is an orphan; :func:`reap_orphans`
(called by every VM target's ``up()`` and by ``conformance vm clean``) kills orphans and removes their files.
VMs kept on purpose (``destroy=never``/``passing``) have no owner and are only removed by ``vm down``/``vm clean
--all``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vm import paths

STATE_FILE = "state.json"


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of ``pid``, or None when no such process exists."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def same_process(pid: int | None, start: int | None) -> bool:
    """True when ``pid`` still names the process that had ``start`` as start time."""
    if not pid:
        return False
    current = process_start_time(pid)
    return current is not None and (start is None or current == start)


@dataclass
class VmRecord:
    """What the next run needs to find and remove one VM."""

    vm_id: str
    backend: str
    run_dir: str
    owner_pid: int | None
    owner_start: int | None
    pid: int | None = None
    pid_start: int | None = None
    port: int | None = None
    created: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.owner_pid is None

    def orphaned(self) -> bool:
        return not self.kept and not same_process(self.owner_pid, self.owner_start)

    def save(self) -> None:
        directory = Path(self.run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.rename(directory / STATE_FILE)


def new_record(vm_id: str, backend: str, run_dir: Path) -> VmRecord:
    pid = os.getpid()
    return VmRecord(
        vm_id=vm_id, backend=backend, run_dir=str(run_dir), owner_pid=pid, owner_start=process_start_time(pid)
    )


def load_records(root: Path | None = None) -> list[VmRecord]:
    """Every VM with a state file under the run root (unreadable ones become records to clean)."""
    root = root or paths.run_root()
    records: list[VmRecord] = []
    if not root.is_dir():
        return records
    for directory in sorted(root.iterdir()):
        if not directory.is_dir():
            continue
        state_file = directory / STATE_FILE
        try:
            data = json.loads(state_file.read_text())
            records.append(VmRecord(**data))
        except (OSError, ValueError, TypeError):
            # A directory without a readable state file: the harness died before writing it.
            mtime = directory.stat().st_mtime
            if time.time() - mtime > 60:
                unknown = VmRecord(
                    vm_id=directory.name, backend="unknown", run_dir=str(directory), owner_pid=0, owner_start=0
                )
                records.append(unknown)
    return records


def kill_process(pid: int | None, start: int | None, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, the process ``pid`` if it is still the one recorded."""
    if not same_process(pid, start):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not same_process(pid, start):
            break
        _reap_child(pid)
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap_child(pid)
        if not same_process(pid, start):
            return
        time.sleep(0.05)


def _reap_child(pid: int) -> None:
    """Collect ``pid`` if it is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _backend_destroyer(backend: str) -> Callable[[VmRecord], None] | None:
    """Backends whose VMs are not our child processes (vagrant's live in libvirt) destroy them their own way."""
    if backend == "vagrant":
        from vm.vagrant import destroy_leftover

        return destroy_leftover
    return None


def destroy_record(record: VmRecord) -> None:
    """Kill the VM a record describes and remove its run directory."""
    destroyer = _backend_destroyer(record.backend)
    if destroyer is not None:
        destroyer(record)
    kill_process(record.pid, record.pid_start)
    shutil.rmtree(record.run_dir, ignore_errors=True)


def reap_orphans(*, everything: bool = False, root: Path | None = None) -> list[VmRecord]:
    """Destroy VMs whose owner process is gone (all VMs with ``everything``); return what was removed."""
    removed = []
    for record in load_records(root):
        if everything or record.orphaned() or record.owner_pid == 0:
            destroy_record(record)
            removed.append(record)
    return removed
