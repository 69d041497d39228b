"""What the disposable VM targets (qemu, vagrant) share: the set of live VMs that interpreter exit and SIGTERM
destroy, and ``down()`` by the ``destroy`` policy - destroy, or keep the VM, disown it (so no later run reaps it)
and say how to reach and remove it."""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from typing import Any

from conformance.targets.ssh import RemoteTarget, SshSession

log = logging.getLogger(__name__)

_LIVE: set[DisposableVmTarget] = set()
_LIVE_LOCK = threading.Lock()
_HOOKS_INSTALLED = False


def _destroy_live() -> None:
    """atexit: destroy what is still up (a run that ended without calling ``down()``)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for target in live:
        try:
            target.down(at_exit=True)
        except Exception as exc:
            log.warning("could not destroy VM %s at exit: %s", target.name, exc)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_cleanup_hooks() -> None:
    """atexit + SIGTERM → SystemExit, so VMs are destroyed when the harness is asked to stop."""
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_destroy_live)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


class DisposableVmTarget(RemoteTarget):
    """A VM made for this run. Subclasses boot it in ``up()`` and call :meth:`_adopt` with its SSH session."""

    disposable = True
    #: The backend's machine: has ``vm_id``, ``record`` (state file) and ``destroy()``.
    machine: Any = None

    def _adopt(self, session: SshSession) -> None:
        """The VM is up: use ``session`` for everything, and destroy the VM at exit unless ``down()`` runs."""
        self.session = session
        with _LIVE_LOCK:
            _LIVE.add(self)

    def down(self, *, at_exit: bool = False) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if self.session is not None:
            self.session.close()
            self.session = None
        machine, self.machine = self.machine, None
        if machine is None:
            return
        if self.should_destroy(at_exit=at_exit):
            machine.destroy()
            return
        if machine.record is not None:
            machine.record.owner_pid = machine.record.owner_start = None
            machine.record.save()
        self._kept(machine)

    def _kept(self, machine: Any) -> None:
        """Say how to remove a VM kept on purpose."""
        log.warning("kept %s VM %s; remove with: conformance vm down %s", self.scheme, machine.vm_id, machine.vm_id)
