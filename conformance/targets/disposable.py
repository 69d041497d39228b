"""What the disposable VM targets (qemu, vagrant) share: the set of live VMs that interpreter exit and SIGTERM
destroy, and ``down()`` by the ``destroy`` policy - destroy, or keep the VM, disown it (so no later run reaps it)
and say how to reach and remove it."""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import socket
import threading
from typing import Any

import paramiko

from conformance.errors import TargetError
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

    def forward_to_host(self, port: int) -> None:
        """Make the harness host's ``127.0.0.1:port`` (a service the harness started, such as the registry)
        answer at the guest's ``127.0.0.1:port``, so suites use one address on both sides.

        Why this way: the guest's sshd listens on its own loopback (the default ``GatewayPorts no``) and sends each
        connection back through this run's SSH connection, whose end here connects to the host's loopback. The
        host service stays bound to 127.0.0.1; nothing listens on any other host address, and only this VM can
        reach it.
        """
        session = self.session
        if session is None:
            raise TargetError(f"{self.scheme} target is not up: cannot forward port {port}")
        transport = session._transport()

        def accept(channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
            threading.Thread(target=_pump_to_host, args=(channel, port), daemon=True,
                             name=f"forward-{port}").start()

        try:
            transport.request_port_forward("127.0.0.1", port, handler=accept)
        except paramiko.SSHException as exc:
            raise TargetError(f"the guest's sshd refused to forward 127.0.0.1:{port} to the host: {exc}") from exc

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


def _pump_to_host(channel: paramiko.Channel, port: int) -> None:
    """Relay one forwarded connection between the SSH channel and the host's ``127.0.0.1:port``."""
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        channel.close()
        return
    upstream.settimeout(None)

    def to_host() -> None:
        with contextlib.suppress(OSError, EOFError):
            while data := channel.recv(65536):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    reader = threading.Thread(target=to_host, daemon=True)
    reader.start()
    with contextlib.suppress(OSError, EOFError):
        while data := upstream.recv(65536):
            channel.sendall(data)
    with contextlib.suppress(OSError, EOFError):
        channel.shutdown_write()
    reader.join()
    channel.close()
    upstream.close()
