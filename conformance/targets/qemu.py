"""The ``qemu`` target: a disposable VM booted (or restored from the golden snapshot) for this run.

``qemu[:RELEASE][?memory=MB&cpus=N&cgroup=v2|v1|hybrid&accel=auto|kvm|tcg&snapshot=true|false&warm=refrt|none``
``&agent=true|false&boot_timeout=S&ssh_timeout=S&append=ARGS&destroy=always|passing|never]``

- ``RELEASE``: the guest's Debian release, ``bullseye`` (Linux 5.10), ``bookworm`` (6.1, the default) or
  ``trixie`` (6.12); each is its own image, built once from the host's apt mirror and cached by recipe.
- ``cgroup``: the guest's cgroup layout: ``v2`` (the unified hierarchy, the default), ``v1`` (only the v1
  hierarchies) or ``hybrid`` (v1 controllers plus systemd's cgroup2 at ``/sys/fs/cgroup/unified``, as on this
  project's CI host). It is a kernel command line choice, so each layout has its own golden snapshot.

- ``up()``: removes VMs that a killed harness left behind, builds the guest image when its recipe changed
  (cached), picks KVM when it really works else TCG, then restores a clone of the golden snapshot (made once per
  image) and waits for SSH. ``snapshot=false``, or extra kernel arguments in ``append``, boot cold instead.
  With ``warm=refrt`` (the default) the snapshot restored is a *warm* one, taken with refrt provisioned, its
  bytecode compiled, the busybox image loaded and its daemon listening (made once per runtime source hash from
  the plain golden snapshot), so the restored guest's runtime is usable at once.
- ``run``/``put``/``host`` go through one SSH connection to ``127.0.0.1:<free port>`` (qemu's hostfwd); with
  ``agent=true`` (the default) ``run`` sends each command to one long-lived process in the guest
  (:mod:`conformance.targets.agent`) instead of opening a channel, a shell and, for refrt, an interpreter each.
- ``down()``: disconnects and destroys the VM (process, overlay, serial log, port forward) according to
  ``destroy`` (also settable as ``destroy_policy`` or the constructor's ``destroy=``): ``always`` (default);
  ``never`` keeps it; ``passing`` destroys it unless :attr:`run_passed` was set False (a run session that keeps
  a failed run's VM may also simply not call ``down()``: at exit only ``always`` destroys). A kept VM is
  listed by ``conformance vm status`` and removed by ``conformance vm down ID`` or ``conformance vm clean --all``.

The VM is also destroyed on error, on SIGINT (KeyboardInterrupt unwinds through ``down()``), on SIGTERM (turned
into SystemExit here) and at interpreter exit; after a SIGKILL, qemu gets SIGTERM from the kernel (parent-death
signal) and the next ``up()`` or ``conformance vm clean`` removes the files.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from conformance.errors import TargetError
from conformance.targets.base import TargetSpec, image_progress, progress, progress_step, register_target
from conformance.targets.disposable import DisposableVmTarget, install_cleanup_hooks
from conformance.targets.ssh import SshSession, parse_destroy
from vm.errors import ImageBuildError
from vm.image import DEFAULT_RELEASE, BuiltImage, ensure_image, recipe_for
from vm.qemu import (
    Machine,
    MachineConfig,
    Warmup,
    clock_fix_command,
    connect_ssh,
    detect_accel,
    ensure_golden,
    golden_for,
)
from vm.state import reap_orphans

log = logging.getLogger(__name__)

def _float(options: dict[str, str], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except ValueError:
        raise TargetError(f"{name}={options[name]!r}: expected a number") from None


#: Kernel command line per cgroup layout. systemd ≥ 256 (trixie) boots v1 only when forced to.
CGROUP_CMDLINE = {
    "v2": "",
    "v1": "systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1 "
          "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1",
    "hybrid": "systemd.unified_cgroup_hierarchy=0 SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1",
}


def _bool(options: dict[str, str], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise TargetError(f"{name}={value!r}: expected true or false")


@register_target
class QemuTarget(DisposableVmTarget):
    """A disposable qemu VM of the project's guest image."""

    scheme = "qemu"

    def __init__(self, spec: TargetSpec, *, destroy: str | None = None) -> None:
        super().__init__(spec)
        options = spec.options
        if destroy is not None:
            self.destroy = parse_destroy({"destroy": destroy})
        accel = options.get("accel", "auto")
        if accel not in ("auto", "kvm", "tcg"):
            raise TargetError(f"accel={accel!r}: expected auto, kvm or tcg")
        self.accel = accel
        self.release = options.get("release") or DEFAULT_RELEASE
        try:
            self.recipe = recipe_for(self.release)
        except ImageBuildError as exc:
            raise TargetError(str(exc)) from None
        self.cgroup = options.get("cgroup", "v2")
        if self.cgroup not in CGROUP_CMDLINE:
            raise TargetError(f"cgroup={self.cgroup!r}: expected {', '.join(CGROUP_CMDLINE)}")
        cmdline = " ".join(filter(None, (MachineConfig.cmdline, CGROUP_CMDLINE[self.cgroup])))
        self.config = MachineConfig(
            memory_mb=int(_float(options, "memory", 2048)), cpus=int(_float(options, "cpus", 2)), cmdline=cmdline
        )
        self.append = options.get("append", "")
        self.snapshot = _bool(options, "snapshot", True) and not self.append
        self.warm = options.get("warm", "refrt")
        if self.warm not in ("refrt", "none"):
            raise TargetError(f"warm={self.warm!r}: expected refrt or none")
        #: Commands through one long-lived process in the guest (conformance/targets/agent.py), not a channel each.
        self.agent = _bool(options, "agent", True)
        self.boot_timeout = _float(options, "boot_timeout", 300)
        self.ssh_timeout = _float(options, "ssh_timeout", 120)
        self.machine: Machine | None = None
        #: The warm-up key of the snapshot this VM was restored from (None: plain snapshot or cold boot). A
        #: driver whose warm-up it is may skip its provisioning.
        self.warmed: str | None = None
        self.image: BuiltImage | None = None
        #: Seconds spent in each phase of ``up()`` (image, golden, boot/restore), for reports and benchmarks.
        self.timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        """``qemu``, ``qemu:trixie``, ``qemu:bookworm-cgroupv1``: what tells this VM apart from others in a run."""
        name = "qemu" if self.release == DEFAULT_RELEASE and "release" not in self.spec.options else \
            f"qemu:{self.release}"
        return name if self.cgroup == "v2" else f"{name}-cgroup{self.cgroup}"

    def up(self) -> None:
        if self.session is not None:
            return
        install_cleanup_hooks()
        for leftover in reap_orphans():
            log.info("removed VM %s left behind by a killed run", leftover.vm_id)
            progress(f"qemu: removed VM {leftover.vm_id} left behind by a killed run")
        start = time.monotonic()
        with progress_step("qemu", "checking the guest image") as notes:
            notes.append(self.release)
            image = self.image = ensure_image(self.recipe, progress=image_progress("qemu"))
        if self.accel == "auto":
            with progress_step("qemu", "detecting acceleration") as notes:
                accel = detect_accel(image)
                notes.append(accel)
        else:
            accel = self.accel
        self.timings["image"] = time.monotonic() - start
        machine = Machine(
            image, self.config, accel, die_with_owner=self.destroy == "always", extra_cmdline=self.append
        )
        try:
            if self.snapshot:
                start = time.monotonic()
                warmup = self._warmup()
                made = golden_for(image, self.config, accel, warmup).ready
                what = "warm golden snapshot (refrt provisioned)" if warmup else "golden snapshot"
                with progress_step("qemu", f"{what} ready" if made else f"making the {what}"):
                    golden = ensure_golden(image, self.config, accel, self.boot_timeout, warmup)
                self.timings["golden"] = time.monotonic() - start
                start = time.monotonic()
                self.machine = machine
                with progress_step("qemu", f"restoring snapshot ({accel})") as notes:
                    machine.start(golden.disk, incoming=golden.state)
                    notes.append(f"VM {machine.vm_id}")
                with progress_step("qemu", f"waiting for SSH on 127.0.0.1:{machine.port}"):
                    session = connect_ssh(machine, self.ssh_timeout)
                if warmup is not None and warmup.check:
                    with progress_step("qemu", "setting the guest clock; refrt's daemon is up"):
                        ready = session.run(f"{clock_fix_command()} && {warmup.check}", timeout=120)
                    if ready.exit_status != 0:
                        raise TargetError("the runtime warmed up in the snapshot does not answer in its clone: "
                                          f"{(ready.stderr or ready.stdout).strip()[-500:]}")
                    self.warmed = warmup.key
                else:
                    with progress_step("qemu", "setting the guest clock"):
                        session.run(clock_fix_command(), timeout=60)
                self.timings["restore"] = time.monotonic() - start
            else:
                start = time.monotonic()
                self.machine = machine
                with progress_step("qemu", f"booting ({accel}, cold)") as notes:
                    machine.start(image.disk)
                    notes.append(f"VM {machine.vm_id}")
                with progress_step("qemu", f"waiting for SSH on 127.0.0.1:{machine.port}"):
                    session = connect_ssh(machine, self.boot_timeout)
                self.timings["boot"] = time.monotonic() - start
        except BaseException:
            machine.destroy()
            self.machine = None
            raise
        session.use_agent = self.agent
        self._adopt(session)
        progress(f"qemu: ready: VM {machine.vm_id} at root@127.0.0.1:{machine.port}")

    def _warmup(self) -> Warmup | None:
        if self.warm != "refrt":
            return None
        # Imported here: the driver layer sits above the targets.
        from conformance.drivers import refrt

        return Warmup(refrt.warm_key(), refrt.warm, refrt.warm_check())

    def _kept(self, machine: Any) -> None:
        if machine.qmp is not None:
            machine.qmp.close()
        log.warning(
            "kept VM %s: ssh -p %s -i %s root@127.0.0.1; remove with: conformance vm down %s",
            machine.vm_id,
            machine.port,
            machine.image.ssh_key.private,
            machine.vm_id,
        )

    def status(self) -> dict[str, Any]:
        """What the VM is and where to reach it (``state`` is ``down`` before ``up()``/after ``down()``)."""
        machine = self.machine
        if machine is None:
            return {"backend": "qemu", "state": "down"}
        return {
            "backend": "qemu",
            "state": "running" if machine.alive() else "exited",
            "vm_id": machine.vm_id,
            "accel": machine.accel,
            "pid": machine.proc.pid if machine.proc else None,
            "ssh": f"root@127.0.0.1:{machine.port}",
            "key": str(machine.image.ssh_key.private),
            "serial_log": str(machine.serial_log),
        }

    def ssh_url(self) -> str:
        """An ``ssh://`` target spec for this VM (the same VM, another connection)."""
        if self.machine is None or self.image is None:
            raise TargetError("qemu target is not up")
        return f"ssh://root@127.0.0.1:{self.machine.port}?key={self.image.ssh_key.private}"

    def _session(self) -> SshSession:
        if self.session is None:
            self.up()
        assert self.session is not None
        if self.machine is not None and not self.machine.alive():
            raise TargetError(f"VM {self.machine.vm_id} is no longer running", evidence=self.machine.evidence())
        return self.session
