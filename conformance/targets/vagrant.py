"""The ``vagrant`` target: a disposable VM brought up by ``vagrant up`` (libvirt provider) from the project's
``Vagrantfile``, with the box built locally from the harness's own guest image.

``vagrant[:RELEASE][?release=RELEASE&cgroup=v2|v1|hybrid&memory=MB&cpus=N&driver=qemu|kvm&boot_timeout=S``
``&destroy=always|passing|never]``

- ``RELEASE``: the guest's Debian release, spelled as for the qemu target: ``bullseye`` (Linux 5.10, refrt on
  the image's borrowed Python 3.11), ``bookworm`` (6.1, the default) or ``trixie`` (6.12). Each release boots its
  own box, ``conformance-RELEASE-KEY``, packed from that release's cached guest image (the one ``qemu:RELEASE``
  boots) and replaced when the image's recipe changes.
- ``cgroup``: the guest's cgroup layout, as for the qemu target (the same kernel arguments, given to the box's
  direct kernel boot through the ``Vagrantfile``).

``up()`` builds the image and adds the box when missing (as ``conformance vm box RELEASE`` does), runs
``vagrant up`` through the project's ``Vagrantfile`` in a dotfile directory of its own, reads
``vagrant ssh-config`` and opens the one SSH connection everything then uses. ``down()`` follows the same
``destroy`` policy as the qemu target. The VM lives on libvirt's management network (192.168.121.0/24 by
default): the harness's own tests run libvirtd, vagrant and this target inside a network namespace they create.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from conformance.errors import TargetError
from conformance.targets.base import TargetSpec, image_progress, progress, progress_step, register_target
from conformance.targets.disposable import DisposableVmTarget, install_cleanup_hooks
from conformance.targets.qemu import CGROUP_CMDLINE
from conformance.targets.ssh import SshSession, parse_destroy
from vm.errors import ImageBuildError, VmBootError
from vm.image import DEFAULT_RELEASE, ensure_image, recipe_for
from vm.state import reap_orphans
from vm.vagrant import CMDLINE, VagrantMachine, ensure_box

log = logging.getLogger(__name__)

@register_target
class VagrantTarget(DisposableVmTarget):
    scheme = "vagrant"

    def __init__(self, spec: TargetSpec, *, destroy: str | None = None) -> None:
        super().__init__(spec)
        if destroy is not None:
            self.destroy = parse_destroy({"destroy": destroy})
        options = spec.options
        try:
            self.memory_mb = int(options.get("memory", "2048"))
            self.cpus = int(options.get("cpus", "2"))
            self.boot_timeout = float(options.get("boot_timeout", "600"))
        except ValueError as exc:
            raise TargetError(f"{spec.raw}: {exc}") from None
        self.release = options.get("release") or DEFAULT_RELEASE
        try:
            self.recipe = recipe_for(self.release)  # a box per release, each built locally from its image
        except ImageBuildError as exc:
            raise TargetError(str(exc)) from None
        self.cgroup = options.get("cgroup", "v2")
        if self.cgroup not in CGROUP_CMDLINE:
            raise TargetError(f"cgroup={self.cgroup!r}: expected {', '.join(CGROUP_CMDLINE)}")
        self.cmdline = " ".join(filter(None, (CMDLINE, CGROUP_CMDLINE[self.cgroup])))
        self.driver = options.get("driver", "qemu")
        if self.driver not in ("qemu", "kvm"):
            raise TargetError(f"driver={self.driver!r}: expected qemu or kvm")
        self.machine: VagrantMachine | None = None
        self.timings: dict[str, float] = {}

    @property
    def name(self) -> str:
        """``vagrant``, ``vagrant:trixie``, ``vagrant:bullseye-cgroupv1``, as the qemu target names its VMs."""
        name = f"vagrant:{self.release}" if "release" in self.spec.options else "vagrant"
        return name if self.cgroup == "v2" else f"{name}-cgroup{self.cgroup}"

    def up(self) -> None:
        if self.session is not None:
            return
        install_cleanup_hooks()
        for leftover in reap_orphans():
            progress(f"vagrant: removed VM {leftover.vm_id} left behind by a killed run")
        start = time.monotonic()
        with progress_step("vagrant", "checking the guest image") as notes:
            notes.append(self.release)
            image = ensure_image(self.recipe, progress=image_progress("vagrant"))
        with progress_step("vagrant", "checking the box"):
            box = ensure_box(image, self.release, progress=image_progress("vagrant"))
        self.timings["box"] = time.monotonic() - start
        machine = VagrantMachine(image, box, memory_mb=self.memory_mb, cpus=self.cpus, driver=self.driver,
                                 cmdline=self.cmdline)
        self.machine = machine
        try:
            start = time.monotonic()
            with progress_step("vagrant", f"vagrant up ({self.driver})") as notes:
                endpoint = machine.up(self.boot_timeout)
                notes.append(f"VM {machine.vm_id}")
            session = SshSession(endpoint.host, endpoint.port, endpoint.user, key=endpoint.key)
            try:
                with progress_step("vagrant", f"waiting for SSH on {endpoint.host}:{endpoint.port}"):
                    session.connect(timeout=120)
            except TargetError as exc:
                raise VmBootError(f"vagrant VM {machine.vm_id} did not answer SSH: {exc}",
                                  evidence=machine.evidence()) from exc
            self.timings["up"] = time.monotonic() - start
        except BaseException:
            machine.destroy()
            self.machine = None
            raise
        self._adopt(session)
        progress(f"vagrant: ready: VM {machine.vm_id} at {session.address}")

    def status(self) -> dict[str, Any]:
        machine = self.machine
        if machine is None or self.session is None:
            return {"backend": "vagrant", "state": "down"}
        return {
            "backend": "vagrant",
            "state": "running",
            "vm_id": machine.vm_id,
            "ssh": self.session.address,
            "key": str(machine.image.ssh_key.private),
            "serial_log": str(machine.serial_log),
        }
