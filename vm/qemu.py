"""qemu machinery: boot and destroy disposable VMs, detect KVM, and the golden snapshot that makes boots cheap.

One VM = one qemu process with a qcow2 overlay on a cached, read-only backing disk (so it is disposable),
user-mode networking forwarding a free 127.0.0.1 port to the guest's sshd, the serial console captured to a file
(the evidence when a guest does not come up), a QMP socket, and the guest's own kernel booted directly with the
tiny initrd. Everything it owns lives in its run directory, described by a state file (:mod:`vm.state`).

KVM: ``/dev/kvm`` existing is not enough (nested or paravirtualised KVM may refuse or crawl through a stock
guest kernel), so the first use boots the guest kernel under KVM with ``conformance.probe`` and a short deadline;
only a guest that prints the probe marker in time means KVM works. The verdict is cached (keyed by host kernel,
qemu version and guest kernel); TCG is the fallback. ``$CONFORMANCE_VM_ACCEL=kvm|tcg`` skips the probe.

Golden snapshot: booting a guest costs ~20 s under TCG, restoring one ~1.5 s. The first VM of an image is booted
once more as the *golden* VM; once SSH answers its RAM and device state is saved through QMP (``migrate`` to a
file) and its disk overlay frozen. Every disposable VM then starts from that state (``-incoming``) on a new
overlay of the golden disk. Golden files live in the image's cache directory, so a new image gets new ones; they
are created under a lock, so concurrent ``up()``s (pytest-xdist workers) make them once.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vm import paths
from vm.errors import SnapshotError, ToolMissing, VmBootError
from vm.image import BuiltImage
from vm.initrd import PROBE_MARKER
from vm.locking import locked
from vm.qmp import QmpClient, QmpError
from vm.state import VmRecord, kill_process, load_records, new_record, process_start_time

if TYPE_CHECKING:
    from conformance.targets.ssh import SshSession

#: Bump when the golden snapshot procedure changes.
GOLDEN_VERSION = 2
QEMU = "qemu-system-x86_64"
KVM_PROBE_DEADLINE = 20.0


@dataclass(frozen=True)
class MachineConfig:
    """What a VM looks like. Golden snapshots are per config: a restored VM must match the saved one."""

    memory_mb: int = 2048
    cpus: int = 2
    cmdline: str = "root=/dev/vda rw console=ttyS0 quiet panic=1"

    def key(self) -> str:
        return hashlib.sha256(f"{self.memory_mb}|{self.cpus}|{self.cmdline}".encode()).hexdigest()[:10]


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise ToolMissing(QEMU, "qemu-system-x86")
    return path


def qemu_version() -> str:
    out = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def accel_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (qemu may still lose a race for it: :meth:`Machine.start` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec: SIGTERM the child when the harness dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# --- KVM detection --------------------------------------------------------------------------------------------


def _accel_cache() -> Path:
    return paths.cache_root() / "accel.json"


def detect_accel(image: BuiltImage) -> str:
    """``kvm`` when a KVM guest really boots here, else ``tcg``; probed once and cached."""
    forced = os.environ.get("CONFORMANCE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = f"{os.uname().release}|{qemu_version()}|{image.kernel_release}"
    cache = _accel_cache()
    # One verdict per guest kernel (each release's image has its own), so switching releases probes no more.
    verdicts: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):
        cached = json.loads(cache.read_text())
        verdicts = {k: v for k, v in cached.get("verdicts", {}).items() if v in ("kvm", "tcg")}
        if cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
            return str(cached["accel"])
    if key in verdicts:
        return verdicts[key]
    accel = "kvm" if probe_kvm(image) else "tcg"
    verdicts[key] = accel
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "accel": accel, "probed": time.time(), "verdicts": verdicts}) + "\n")
    return accel


def probe_kvm(image: BuiltImage, deadline: float = KVM_PROBE_DEADLINE) -> bool:
    """Boot the guest kernel under KVM up to the initrd's probe marker; False on any failure or slowness."""
    return probe_accel(image, "kvm", deadline)


def probe_accel(image: BuiltImage, accel: str, deadline: float) -> bool:
    """True when the guest kernel reaches the initrd's probe marker under ``accel`` within ``deadline``."""
    probe_dir = paths.run_root() / f"kvm-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    probe_dir.mkdir(parents=True, exist_ok=True)
    serial = probe_dir / "serial.log"
    argv = [
        qemu_binary(),
        *accel_args(accel),
        "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", "console=ttyS0 conformance.probe panic=1",
        "-serial", f"file:{serial}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if _in_main_thread() else None,
    )
    try:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if serial.exists() and PROBE_MARKER in serial.read_text(errors="replace"):
                return True
            if proc.poll() is not None:
                return serial.exists() and PROBE_MARKER in serial.read_text(errors="replace")
            time.sleep(0.2)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(probe_dir, ignore_errors=True)


# --- one VM ---------------------------------------------------------------------------------------------------


class Machine:
    """One qemu process and the files it owns (``run_dir``)."""

    def __init__(
        self,
        image: BuiltImage,
        config: MachineConfig,
        accel: str,
        *,
        vm_id: str | None = None,
        die_with_owner: bool = True,
        extra_cmdline: str = "",
    ) -> None:
        self.image = image
        self.config = config
        self.accel = accel
        self.vm_id = vm_id or f"qemu-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.run_dir = paths.run_root() / self.vm_id
        self.die_with_owner = die_with_owner
        self.extra_cmdline = extra_cmdline
        self.disk = self.run_dir / "disk.qcow2"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.qmp: QmpClient | None = None
        self.record: VmRecord | None = None

    @property
    def serial_log(self) -> Path:
        return self.run_dir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.run_dir / "qemu.log"

    @property
    def qmp_path(self) -> Path:
        return self.run_dir / "qmp.sock"

    def argv(self, port: int, incoming: Path | None) -> list[str]:
        cmdline = self.config.cmdline + (f" {self.extra_cmdline}" if self.extra_cmdline else "")
        argv = [
            qemu_binary(),
            *accel_args(self.accel),
            "-m", str(self.config.memory_mb), "-smp", str(self.config.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", cmdline,
            "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{self.serial_log}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-name", self.vm_id,
        ]  # fmt: skip
        if incoming is not None:
            argv += ["-incoming", f"exec:cat {shlex.quote(str(incoming))}"]
        return argv

    def start(self, backing: Path, *, incoming: Path | None = None, disk: Path | None = None) -> None:
        """Create the overlay on ``backing`` and launch qemu (restoring ``incoming`` state when given)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.record = new_record(self.vm_id, "qemu", self.run_dir)
        if not self.die_with_owner:
            self.record.owner_pid = self.record.owner_start = None
        self.record.extra["key"] = str(self.image.ssh_key.private)
        self.record.extra["image"] = self.image.key
        self.record.extra["backing"] = str(backing)
        self.record.save()
        if disk is not None:
            self.disk = disk
        create_overlay(backing, self.disk)
        for attempt in range(5):
            self.port = free_port()
            self._launch(self.port, incoming)
            if self._wait_qmp():
                break
            text = self.qemu_log.read_text(errors="replace") if self.qemu_log.exists() else ""
            port_taken = "hostfwd" in text.lower() or "host forwarding" in text.lower()
            if port_taken and attempt < 4:
                continue  # another process took the port between our check and qemu's bind
            raise VmBootError(
                f"qemu exited at start with status {self.proc.returncode if self.proc else '?'}: {text.strip()[-500:]}",
                evidence=self.evidence(),
            )
        assert self.proc is not None and self.record is not None
        self.record.pid = self.proc.pid
        self.record.pid_start = process_start_time(self.proc.pid)
        self.record.port = self.port
        self.record.save()
        if incoming is not None:
            try:
                assert self.qmp is not None
                self.qmp.wait_migration(120)
                self.qmp.execute("cont")
            except QmpError as exc:
                raise VmBootError(f"restoring the golden snapshot failed: {exc}", evidence=self.evidence()) from exc

    def _launch(self, port: int, incoming: Path | None) -> None:
        with self.qemu_log.open("wb") as log_file:
            self.proc = subprocess.Popen(
                self.argv(port, incoming),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's ^C goes to the harness, which then destroys the VM
                # The parent-death signal fires when the *thread* that forked exits: only the main thread
                # lives as long as the process. VMs started from other threads rely on the reaper alone.
                preexec_fn=_die_with_parent if self.die_with_owner and _in_main_thread() else None,
            )

    def _wait_qmp(self, timeout: float = 30.0) -> bool:
        """True once QMP answers; False when qemu exited first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self.qmp_path.exists():
                client = QmpClient(self.qmp_path)
                try:
                    client.connect(deadline)
                except QmpError:
                    if self.proc.poll() is not None:
                        return False
                    raise
                self.qmp = client
                return True
            time.sleep(0.05)
        raise VmBootError(f"qemu did not open its QMP socket within {timeout:.0f} s", evidence=self.evidence())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`VmBootError` with the serial tail when qemu has exited (a guest that powered off)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise VmBootError(
                f"VM {self.vm_id} exited (qemu status {self.proc.returncode}) before SSH came up",
                evidence=self.evidence(),
            )

    def serial_tail(self, lines: int = 60) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def evidence(self) -> str:
        qemu_text = ""
        with contextlib.suppress(OSError):
            qemu_text = self.qemu_log.read_text(errors="replace").strip()[-1500:]
        parts = [f"--- serial console tail ({self.serial_log}) ---", self.serial_tail()]
        if qemu_text:
            parts += ["--- qemu output ---", qemu_text]
        return "\n".join(parts)

    def save_state(self, destination: Path, timeout: float = 300) -> None:
        """Pause the VM and write its RAM and device state to ``destination`` (QMP ``migrate`` to a file)."""
        if self.qmp is None:
            raise SnapshotError("VM has no QMP connection")
        try:
            self.qmp.execute("stop")
            self.qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(destination))}"})
            self.qmp.wait_migration(timeout)
        except QmpError as exc:
            raise SnapshotError(f"saving VM state failed: {exc}") from exc

    def destroy(self) -> None:
        """Stop qemu (QMP ``quit``, then signals) and remove every file of this VM. Idempotent."""
        if self.qmp is not None:
            with contextlib.suppress(QmpError, OSError):
                self.qmp.execute("quit")
            self.qmp.close()
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_process(self.proc.pid, self.record.pid_start if self.record else None)
                self.proc.wait()
            self.proc = None
        elif self.record is not None:
            kill_process(self.record.pid, self.record.pid_start)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def create_overlay(backing: Path, overlay: Path) -> None:
    """A qcow2 overlay whose reads fall through to ``backing`` and whose writes stay in ``overlay``."""
    overlay.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VmBootError(f"qemu-img create {overlay} failed: {proc.stderr.strip()}")


def connect_ssh(machine: Machine, timeout: float) -> SshSession:
    """Wait until the VM's sshd answers; a VM that exits or stays silent raises with the serial log tail."""
    from conformance.errors import TargetError
    from conformance.targets.ssh import SshSession

    assert machine.port is not None
    session = SshSession("127.0.0.1", machine.port, machine.image.user, key=machine.image.ssh_key.private)
    try:
        session.connect(timeout=timeout, check=machine.check_alive)
    except VmBootError:
        raise
    except TargetError as exc:
        raise VmBootError(
            f"VM {machine.vm_id} did not answer SSH within {timeout:.0f} s ({exc})", evidence=machine.evidence()
        ) from exc
    return session


# --- golden snapshot ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "golden.qcow2"

    @property
    def state(self) -> Path:
        return self.directory / "golden.state"

    @property
    def ready(self) -> bool:
        return (self.directory / "golden.json").exists() and self.disk.exists() and self.state.exists()

    def meta(self) -> dict[str, object]:
        """What was recorded when it was made (boot and warm-up seconds); empty when unreadable."""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.directory / "golden.json").read_text())
            return data if isinstance(data, dict) else {}
        return {}


@dataclass(frozen=True)
class Warmup:
    """Work done once in a VM before its state is saved as a *warm* golden snapshot, so that every clone starts
    with it done (a runtime provisioned, its bytecode compiled, its base image loaded, its daemon listening):
    restore is then the only step before the runtime is usable. ``key`` names the work's inputs (for example a
    hash of the runtime's sources); a new key makes a new warm snapshot."""

    key: str
    apply: Callable[[SshSession], None]
    #: A shell command that succeeds once the warmed-up work is usable in a restored clone (run with the clock
    #: fix, in the same SSH exec); empty for none.
    check: str = ""


#: Run in the golden VM before its state is saved: what every clone's SSH connection costs less with. Measured
#: in a TCG clone on this project's 2-core host: pam_motd runs the update-motd.d scripts at each connection's
#: first session (0.6-0.7 s); sshd's re-exec per connection (reloading its binary, emulated) costs 0.5 s of
#: kex+auth, which ``-r`` skips (OpenSSH < 9.8; a newer sshd that refuses ``-r`` keeps its default). The
#: connection is loopback-only, made by the harness. ``systemctl restart`` leaves the connection in use alive
#: (Debian's ssh.service kills only the listener) and returns once the new listener is ready.
SSHD_TUNING = (
    "sed -i '/pam_motd/d' /etc/pam.d/sshd && "
    "if /usr/sbin/sshd -t -r 2>/dev/null && [ -f /etc/default/ssh ] && "
    "grep -q 'SSHD_OPTS' /lib/systemd/system/ssh.service; then "
    "echo 'SSHD_OPTS=-r' > /etc/default/ssh && systemctl restart ssh && echo 'pam_motd off, no re-exec'; "
    "else echo 'pam_motd off'; fi"
)


def golden_for(image: BuiltImage, config: MachineConfig, accel: str, warmup: Warmup | None = None) -> Golden:
    version = re.sub(r"[^0-9.]", "", qemu_version().split("(")[0])
    name = f"golden-v{GOLDEN_VERSION}-{accel}-{config.key()}-q{version}"
    if warmup is not None:
        name += "-warm-" + re.sub(r"[^A-Za-z0-9_.-]", "_", warmup.key)
    return Golden(image.directory / name)


def ensure_golden(
    image: BuiltImage, config: MachineConfig, accel: str, boot_timeout: float, warmup: Warmup | None = None
) -> Golden:
    """The golden snapshot for (image, config, accel[, warmup]), made once under a lock when missing.

    A plain golden VM is booted cold. A warm one is restored from the plain golden snapshot (about a second
    instead of a boot), given ``warmup``, and saved again: its disk is an overlay on the plain golden disk.
    Warm snapshots of older keys are removed when a new one is made (the runtime's sources changed).
    """
    golden = golden_for(image, config, accel, warmup)
    if golden.ready:
        return golden
    base = ensure_golden(image, config, accel, boot_timeout) if warmup is not None else None
    with locked(paths.locks_dir(), f"golden-{image.key}-{golden.directory.name}"):
        if golden.ready:
            return golden
        partial = golden.directory.with_name(golden.directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(golden.directory, ignore_errors=True)
        partial.mkdir(parents=True)
        machine = Machine(image, config, accel, vm_id=f"golden-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        meta: dict[str, object] = {"image": image.key, "accel": accel, "config": config.key()}
        try:
            start = time.monotonic()
            if base is None:
                machine.start(image.disk, disk=partial / "golden.qcow2")
                session = connect_ssh(machine, boot_timeout)
                meta["boot_seconds"] = time.monotonic() - start
                tuned = session.run(SSHD_TUNING, timeout=120)
                if tuned.exit_status != 0:
                    raise SnapshotError(f"tuning the golden VM's sshd failed: {tuned.stderr.strip()[-500:]}")
                meta["sshd"] = tuned.stdout.strip()
            else:
                machine.start(base.disk, incoming=base.state, disk=partial / "golden.qcow2")
                session = connect_ssh(machine, boot_timeout)
                session.run(clock_fix_command(), timeout=60)
                meta["restore_seconds"] = time.monotonic() - start
                assert warmup is not None
                start = time.monotonic()
                warmup.apply(session)
                meta["warmup_seconds"] = time.monotonic() - start
                meta["warmup"] = warmup.key
            # Quiesce: the disk overlay complete. A plain golden VM also drops its page cache (a small RAM image);
            # a warm one keeps it, so the warmed-up files are read from RAM in every clone.
            session.run("sync" if warmup is not None else "sync; echo 3 > /proc/sys/vm/drop_caches", timeout=120)
            session.close()
            time.sleep(0.5)
            machine.save_state(partial / "golden.state")
        finally:
            machine.destroy()
        (partial / "golden.json").write_text(json.dumps(meta) + "\n")
        if warmup is not None:
            prefix = golden_for(image, config, accel).directory.name + "-warm-"
            _remove_unused_warm(image.directory.glob(prefix + "*"), keep=golden.directory)
        partial.rename(golden.directory)
    return golden


def _remove_unused_warm(candidates: Iterable[Path], keep: Path) -> None:
    """Warm snapshots of older keys, unless a live VM's overlay still reads from one (another run's clone)."""
    in_use = {str(record.extra.get("backing", "")) for record in load_records()}
    for stale in candidates:
        if stale == keep or stale.name.endswith(".partial"):
            continue
        if any(backing.startswith(str(stale) + "/") for backing in in_use):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def clock_fix_command() -> str:
    """Shell run first in a restored clone: set its clock to now (it stopped when the snapshot was saved) and
    stir host randomness into its pool (every clone starts from the same RNG state)."""
    return f"date -u -s @{time.time():.3f} >/dev/null && echo {os.urandom(32).hex()} > /dev/urandom"
