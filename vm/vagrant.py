"""The Vagrant backend's machinery: the locally built box, ``vagrant up/destroy``, and ``vagrant ssh-config``.

The box is the same guest image the qemu backend boots (:mod:`vm.image`), packaged for the libvirt provider:
``box.img`` (the qcow2), the guest kernel and tiny initrd (direct kernel boot, as with qemu), ``metadata.json``
and a box Vagrantfile. There is a box per guest release, named ``conformance-RELEASE-KEY`` after the release and
its image's recipe key: a changed recipe is a new image, hence a new box, and adding it removes the release's
older boxes (and the base volumes vagrant-libvirt uploaded of them into its pool). The project's
``Vagrantfile`` (repository root) is driven through environment variables: each VM gets its own
``VAGRANT_DOTFILE_PATH`` and libvirt name prefix, so parallel runs never share a machine.

libvirt's qemu runs as its own user and reads the kernel from the box directory, so ``VAGRANT_HOME`` defaults to
``/var/lib/conformance/vagrant`` for root (``~/.vagrant.d`` otherwise; ``$CONFORMANCE_VAGRANT_HOME`` overrides).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vm import paths
from vm.errors import ToolMissing, VmBootError, VmError
from vm.image import BuiltImage
from vm.locking import locked
from vm.state import VmRecord, new_record

BOX_PREFIX = "conformance"
#: A box this module made: ``conformance-RELEASE-KEY``.
BOX_NAME = re.compile(rf"{BOX_PREFIX}-([a-z]+)-([0-9a-f]+)")
CMDLINE = "root=/dev/vda rw console=ttyS0 quiet panic=1"

BOX_VAGRANTFILE = f"""# Box Vagrantfile: direct kernel boot of the conformance guest image (libvirt provider).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
    lv.cpu_mode = "maximum"
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    lv.cmd_line = "{CMDLINE}"
  end
end
"""

Progress = Callable[[str], None]


def vagrant_home() -> Path:
    explicit = os.environ.get("CONFORMANCE_VAGRANT_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/conformance/vagrant")
    return Path.home() / ".vagrant.d"


def vagrantfile_dir() -> Path:
    """The directory of the project's Vagrantfile: the repository root, or ``$CONFORMANCE_VAGRANTFILE_DIR``."""
    explicit = os.environ.get("CONFORMANCE_VAGRANTFILE_DIR")
    directory = Path(explicit) if explicit else Path(__file__).resolve().parents[1]
    if not (directory / "Vagrantfile").exists():
        raise VmError(f"no Vagrantfile in {directory}: set CONFORMANCE_VAGRANTFILE_DIR")
    return directory


def box_name(release: str, key: str) -> str:
    """The box of ``release``'s image ``key``."""
    return f"{BOX_PREFIX}-{release}-{key}"


def base_volume_prefix(box: str) -> str:
    """How vagrant-libvirt names the base volume it uploads of a box into its pool (each VM's disk is an overlay
    on it): ``BOX_vagrant_box_image_VERSION_MTIME_box.img``."""
    return f"{box}_vagrant_box_image_"


def vagrant_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for every vagrant call: no update checks, no network lookups, our home and Vagrantfile."""
    if shutil.which("vagrant") is None:
        raise ToolMissing("vagrant", "vagrant")
    home = vagrant_home()
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    env = dict(os.environ)
    env.update(
        {
            "VAGRANT_HOME": str(home),
            "VAGRANT_CWD": str(vagrantfile_dir()),
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "VAGRANT_LOG": os.environ.get("VAGRANT_LOG", "warn"),
        }
    )
    env.update(extra or {})
    return env


def _vagrant(args: list[str], env: dict[str, str], timeout: float, log: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            ["vagrant", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise VmError(f"vagrant {' '.join(args)} did not finish within {timeout:.0f} s") from exc
    if log is not None:
        with log.open("a") as log_file:
            log_file.write(f"$ vagrant {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-800:]
        raise VmError(f"vagrant {' '.join(args)} failed ({proc.returncode}): {output}")
    return proc.stdout


def listed_boxes(env: dict[str, str]) -> list[str]:
    """The boxes this module made that ``vagrant box list`` shows."""
    listing = _vagrant(["box", "list"], env, 120)
    return [m.group(0) for m in (BOX_NAME.match(line) for line in listing.splitlines()) if m]


def ensure_box(image: BuiltImage, release: str, progress: Progress | None = None) -> str:
    """Package ``release``'s ``image`` as a libvirt box and ``vagrant box add`` it, unless a box of that name
    exists; a box added replaces the release's boxes of older images."""
    say = progress or (lambda _line: None)
    name = box_name(release, image.key)
    env = vagrant_env()
    with locked(paths.locks_dir(), f"box-{release}-{image.key}"):
        boxes = listed_boxes(env)
        if name in boxes:
            say(f"box {name} already added")
            return name
        box_file = image.directory / "vagrant.box.partial"
        say(f"packaging {box_file.name}")
        try:
            with tarfile.open(box_file, "w") as tar:
                tar.add(image.disk, arcname="box.img")
                tar.add(image.kernel, arcname="vmlinuz")
                tar.add(image.initrd, arcname="initrd.img")
                for arcname, text in (
                    ("metadata.json", json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": 4})),
                    ("Vagrantfile", BOX_VAGRANTFILE),
                ):
                    member = image.directory / f".{arcname}"
                    member.write_text(text)
                    tar.add(member, arcname=arcname)
                    member.unlink()
            say(f"vagrant box add --name {name}")
            _vagrant(["box", "add", "--force", "--name", name, str(box_file)], env, 600)
        finally:
            box_file.unlink(missing_ok=True)
    older = [box for box in boxes if box.startswith(f"{BOX_PREFIX}-{release}-")]
    for removed in remove_boxes(older, env):
        say(f"removed {removed} (an older image of {release})")
    return name


@dataclass
class SshEndpoint:
    host: str
    port: int
    user: str
    key: Path


def parse_ssh_config(text: str) -> SshEndpoint:
    """The endpoint in ``vagrant ssh-config`` output."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            values.setdefault(parts[0].lower(), parts[1].strip().strip('"'))
    try:
        return SshEndpoint(values["hostname"], int(values.get("port", "22")), values.get("user", "root"),
                           Path(values["identityfile"]))
    except (KeyError, ValueError) as exc:
        raise VmError(f"unexpected vagrant ssh-config output: {text.strip()[:300]}") from exc


class VagrantMachine:
    """One ``vagrant up``'d machine with its own dotfile directory (its run directory) and libvirt name."""

    def __init__(self, image: BuiltImage, box: str, *, memory_mb: int = 2048, cpus: int = 2,
                 driver: str = "qemu", cmdline: str = CMDLINE) -> None:
        self.image = image
        self.box = box
        #: The guest kernel's command line (the box's own, plus a cgroup layout's arguments, say).
        self.cmdline = cmdline
        self.vm_id = f"vagrant-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.run_dir = paths.run_root() / self.vm_id
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.driver = driver
        self.record: VmRecord | None = None

    @property
    def serial_log(self) -> Path:
        return self.run_dir / "serial.log"

    @property
    def log(self) -> Path:
        return self.run_dir / "vagrant.log"

    def env(self) -> dict[str, str]:
        return vagrant_env(machine_env(self.vm_id, self.run_dir, self.box, self.image.ssh_key.private,
                                       self.memory_mb, self.cpus, self.driver, self.cmdline))

    def up(self, timeout: float) -> SshEndpoint:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        self.record = new_record(self.vm_id, "vagrant", self.run_dir)
        self.record.extra.update({"box": self.box, "image": self.image.key, "key": str(self.image.ssh_key.private),
                                  "memory": self.memory_mb, "cpus": self.cpus, "driver": self.driver,
                                  "cmdline": self.cmdline})
        self.record.save()
        env = self.env()
        try:
            _vagrant(["up", "--provider=libvirt", "--no-provision"], env, timeout, self.log)
            endpoint = parse_ssh_config(_vagrant(["ssh-config"], env, 120, self.log))
        except VmError as exc:
            raise VmBootError(f"vagrant up of {self.vm_id} failed: {exc}", evidence=self.evidence()) from exc
        self.record.extra["ssh"] = f"{endpoint.user}@{endpoint.host}:{endpoint.port}"
        self.record.save()
        return endpoint

    def evidence(self) -> str:
        parts = []
        for title, path in (("serial console tail", self.serial_log), ("vagrant log tail", self.log)):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            parts += [f"--- {title} ({path}) ---", "\n".join(text.splitlines()[-60:])]
        return "\n".join(parts)

    def destroy(self) -> None:
        """``vagrant destroy -f`` and remove the run directory. Idempotent."""
        if self.run_dir.exists():
            try:
                _vagrant(["destroy", "-f"], self.env(), 300, self.log)
            finally:
                shutil.rmtree(self.run_dir, ignore_errors=True)
                domain_log(self.vm_id).unlink(missing_ok=True)


#: Where libvirt's system instance writes each domain's qemu log (it keeps them after the domain is gone).
LIBVIRT_QEMU_LOGS = Path("/var/log/libvirt/qemu")


def domain_log(vm_id: str) -> Path:
    """libvirt's log of the machine ``vm_id`` (its domain is the Vagrantfile's prefix plus ``default``)."""
    return LIBVIRT_QEMU_LOGS / f"{vm_id}-default.log"


def machine_env(
    vm_id: str, run_dir: Path, box: str, key: Path, memory_mb: int, cpus: int, driver: str, cmdline: str = CMDLINE
) -> dict[str, str]:
    return {
        "VAGRANT_DOTFILE_PATH": str(run_dir / ".vagrant"),
        "CONFORMANCE_VAGRANT_BOX": box,
        "CONFORMANCE_VAGRANT_KEY": str(key),
        "CONFORMANCE_VAGRANT_NAME": "default",
        "CONFORMANCE_VAGRANT_PREFIX": f"{vm_id}-",
        "CONFORMANCE_VAGRANT_MEMORY": str(memory_mb),
        "CONFORMANCE_VAGRANT_CPUS": str(cpus),
        "CONFORMANCE_VAGRANT_DRIVER": driver,
        "CONFORMANCE_VAGRANT_SERIAL": str(run_dir / "serial.log"),
        "CONFORMANCE_VAGRANT_POOL": str(vagrant_home() / "pool"),
        "CONFORMANCE_VAGRANT_CMDLINE": cmdline,
    }


def record_env(record: VmRecord) -> dict[str, str]:
    """The environment of the vagrant calls for the machine of ``record`` (a harness that is gone made it)."""
    extra = record.extra
    return vagrant_env(machine_env(record.vm_id, Path(record.run_dir), str(extra.get("box", "")),
                                   Path(str(extra.get("key", ""))), int(extra.get("memory", 2048)),
                                   int(extra.get("cpus", 2)), str(extra.get("driver", "qemu")),
                                   str(extra.get("cmdline", CMDLINE))))


def destroy_leftover(record: VmRecord) -> None:
    """Reaper hook: ``vagrant destroy -f`` a machine whose harness died (needs libvirtd reachable)."""
    run_dir = Path(record.run_dir)
    if not (run_dir / ".vagrant").exists():
        return
    env = record_env(record)
    # When libvirtd is gone (its netns deleted, say) nothing of this machine can still run.
    with contextlib.suppress(VmError):
        _vagrant(["destroy", "-f"], env, 300)
    domain_log(record.vm_id).unlink(missing_ok=True)


def ssh_config_text(record: VmRecord) -> str:
    return _vagrant(["ssh-config"], record_env(record), 120)


def remove_boxes(names: list[str], env: dict[str, str] | None = None) -> list[str]:
    """``vagrant box remove`` each box of ``names`` and unlink its base volumes from the pool; what went."""
    removed: list[str] = []
    env = env or vagrant_env()
    for name in names:
        with contextlib.suppress(VmError):
            _vagrant(["box", "remove", "--force", "--all", name], env, 120)
            removed.append(name)
    pool = vagrant_home() / "pool"
    if pool.is_dir():
        for volume in pool.iterdir():
            if any(volume.name.startswith(base_volume_prefix(name)) for name in names):
                volume.unlink()
                removed.append(volume.name)
    return removed


def remove_stale_boxes(current: set[str]) -> list[str]:
    """Remove the boxes this module made (and their pool volumes) other than ``current``; return their names."""
    if shutil.which("vagrant") is None:
        return []
    env = vagrant_env()
    stale = [name for name in listed_boxes(env) if name not in current]
    pool = vagrant_home() / "pool"
    if pool.is_dir():  # base volumes of boxes removed by hand
        for volume in pool.iterdir():
            match = BOX_NAME.match(volume.name)
            if match and volume.name.startswith(base_volume_prefix(match.group(0))) and \
                    match.group(0) not in current and match.group(0) not in stale:
                stale.append(match.group(0))
    return remove_boxes(stale, env)
