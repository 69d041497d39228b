"""The per-container monitor (what conmon is to podman): the container's parent for its whole life.

``spawn`` forks it off the CLI (double fork + setsid, so it outlives the CLI and no terminal signal reaches it).
The monitor creates the cgroup, forks the container's init as PID 1 of a new PID namespace, lets the network
package configure the netns while the init waits, and then stays: it copies the container's output to the log
(and to the CLI's stdout/stderr when a foreground ``run`` is attached), reaps the init, records the exit code and
the OOM flag, and tears down cgroup and network. Mounts need no teardown: they live in the container's mount
namespace and die with it.

The CLI learns what happened through a status pipe carrying JSON lines: ``started`` (with the pid) or ``error``
(with docker's exit code), then ``exited`` (with the code).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from runtime import syscalls
from runtime.cgroups import Cgroup, driver_for_host
from runtime.container import (
    events,
    health,
    hooks,
    init,
    namespaces,
    restart,
    seccomp,
    sysctls,
    terminal,
    ulimits,
    userns,
)
from runtime.container.attach import AttachHub
from runtime.container.capabilities import resolve as resolve_caps
from runtime.container.hostfiles import write_host_files
from runtime.container.logs import LogWriter
from runtime.container.pump import Attach, OutputPump
from runtime.container.rootfs import RootfsPlan
from runtime.container.state import Container, now_iso
from runtime.errors import RefrtError

__all__ = ["Attach", "MonitorLost", "OutputPump", "StartHandle", "build_plan", "spawn"]


class MonitorLost(RefrtError):
    """The monitor ended without reporting (it crashed or was killed)."""


class StartHandle:
    """The CLI's end of the status pipe."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "rb", buffering=0)
        self._buffer = b""

    def next_event(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = self._file.read(4096)
            if not chunk:
                raise MonitorLost("container monitor exited without reporting")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def close(self) -> None:
        self._file.close()


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat: tells a live process from a recycled pid. 0 when there is no such pid."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(data[data.rindex(b")") + 2 :].split()[19])


def is_alive(pid: int, start_time: int) -> bool:
    if pid <= 0:
        return False
    start = process_start_time(pid)
    if start == 0 or start != start_time:
        return False
    try:  # a zombie has a stat file but is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1] != b"Z"
    except (OSError, IndexError):
        return False


# A caller that exits as soon as its command is done (the daemon's CLI workers set this) forks the monitor once:
# the monitor is re-parented when the caller exits, and the second fork (1-2 ms on the start's critical path)
# only matters to a long-lived caller, which would otherwise collect a zombie per container.
SINGLE_FORK = False


def spawn(ctx: Any, container: Container, attach: Attach | None) -> StartHandle:
    """Fork the monitor for ``container`` and return the status pipe (first event: started or error)."""
    status_r, status_w = os.pipe()
    attach = attach or Attach()
    single = SINGLE_FORK
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        code = 0
        try:
            os.close(status_r)
            os.setsid()
            if not single and os.fork() != 0:
                os._exit(0)
            _close_inherited_fds({status_w, attach.stdin, attach.stdout, attach.stderr})
            code = Monitor(ctx, container, attach, status_w).run()
        except BaseException:
            code = 125
            with contextlib.suppress(OSError):
                (container.directory / "monitor-error.txt").write_text(traceback.format_exc())
        finally:
            os._exit(code)
    os.close(status_w)
    if not single:
        os.waitpid(pid, 0)
    return StartHandle(status_r)


def _close_inherited_fds(keep: set[int | None]) -> None:
    """The monitor outlives its caller, so it must not hold the caller's other descriptors: a daemon's sockets
    and lock, a CLI worker's client connection (whose client would never see it close) or a lock file."""
    low = 3
    for fd in sorted(k for k in keep if k is not None and k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def prime_cgroup_attach() -> threading.Thread | None:
    """Start paying, on a thread, for the move of the container's init into its cgroup.

    Why: a move between cgroups takes the kernel's cgroup_threadgroup_rwsem for writing, which first waits for
    an RCU grace period (5-15 ms here, the largest single cost of a start). Writers that come while a wait is
    under way, or shortly after it, share it. So the monitor moves itself into the cgroup it already is in (a
    no-op move) on a thread as soon as the cgroup exists, while it resolves the launch plan and forks; its real
    move of the init then finds the lock ready (or nearly). The thread holds no Python lock (raw os calls), so the fork
    meanwhile is safe."""
    target = _own_cgroup_procs()
    if target is None:
        return None

    def move() -> None:
        with contextlib.suppress(OSError):
            fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"%d" % os.getpid())
            finally:
                os.close(fd)

    thread = threading.Thread(target=move, name="cgroup-primer", daemon=True)
    thread.start()
    return thread


def _own_cgroup_procs() -> Path | None:
    """The ``cgroup.procs`` of this process's own cgroup in one mounted hierarchy (v1 or v2)."""
    driver = driver_for_host()
    mounts: dict[str, Path] = getattr(driver, "hierarchies", {})
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if driver.version == 2 and not controllers:
            return Path("/sys/fs/cgroup") / path.lstrip("/") / "cgroup.procs"
        for controller in controllers.split(","):
            if controller in mounts:
                return mounts[controller] / path.lstrip("/") / "cgroup.procs"
    return None


class Monitor:
    def __init__(self, ctx: Any, container: Container, attach: Attach, status_w: int) -> None:
        self.ctx = ctx
        self.c = container
        self.status_w: int | None = status_w
        self.cgroup: Cgroup | None = None
        self.pid = 0
        self._keep_stdin_open: int | None = None  # -d -i: the write end nobody uses yet
        self.console: socket.socket | None = None  # -t: where the init sends its pty master
        self.console_child: socket.socket | None = None
        self.pty_master: int | None = None
        self.attach = self._take_attach_fds(attach)
        self.hub: AttachHub | None = None  # late ``attach`` clients and window sizes
        self._primer: threading.Thread | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _take_attach_fds(self, attach: Attach) -> Attach:
        """Private copies of the CLI's descriptors; our own 0/1/2 go to /dev/null (no terminal, no CLI pipes)."""

        def dup(fd: int | None) -> int | None:
            return None if fd is None else os.dup(fd)

        mine = Attach(dup(attach.stdin), dup(attach.stdout), dup(attach.stderr), attach.detach_keys)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        return mine

    def _send(self, event: dict[str, Any]) -> None:
        if self.status_w is None:
            return
        with contextlib.suppress(OSError):  # the CLI may be gone: the state file says it all
            os.write(self.status_w, json.dumps(event).encode() + b"\n")

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the CLI may have blocked some while forking us
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            syscalls.set_process_name("refrt-monitor")
        c = self.c
        c.state.monitor_pid = os.getpid()
        c.state.monitor_start = process_start_time(os.getpid())
        c.save_state()
        restart.clear_stop_mark(c.directory)
        delay = 0.1
        while True:  # once, or again as the restart policy says (runtime.container.restart)
            began = time.monotonic()
            try:
                stdio, reader = self._open_stdio()
                self._start_container(stdio)
            except RefrtError as exc:
                self._failed_start(exc.exit_code, str(exc))
                return 0
            except OSError as exc:
                self._failed_start(125, str(exc))
                return 0
            if c.state.restart_count and restart.stopped_by_user(c.directory):
                # stopped while we restarted it: the stop saw it exited; it wrote its mark before it looked,
                # we saved "running" before we look, so one of us sees the other
                os.kill(self.pid, signal.SIGKILL)
            self._open_hub(reader)
            warnings = self.cgroup.warnings if self.cgroup is not None else []
            self._send({"event": "started", "pid": self.pid, "warnings": warnings})
            self._event("start")
            if self.pty_master is not None:
                reader.use_pty(self.pty_master)
            checker = health.start(self.ctx, c)  # --health-* / HEALTHCHECK probes, while it runs
            status = reader.pump_until_exit(self.pid)
            if checker is not None:
                checker.stop()
            code = self._finish(status)
            self._event("die", exitCode=str(code))
            if c.spec.auto_remove and not c.directory.exists():
                self._event("destroy")
            if not restart.should_restart(c.spec.restart, code, c.state.restart_count, c.directory):
                return 0
            delay = restart.next_delay(delay, time.monotonic() - began)
            time.sleep(delay)
            if not restart.should_restart(c.spec.restart, code, c.state.restart_count, c.directory):
                return 0
            c.state.restart_count += 1
            c.save_state()

    def _event(self, action: str, **attributes: str) -> None:
        root = getattr(getattr(self.ctx, "paths", None), "root", None)
        if root is not None:
            events.container_event(root, self.c, action, **attributes)

    def _open_hub(self, reader: OutputPump) -> None:
        """The attach socket (see runtime.container.attach); a container runs on without it if it fails."""
        spec = self.c.spec
        input_fd = -1
        if spec.interactive:
            input_fd = self.pty_master if self.pty_master is not None else (self._keep_stdin_open or -1)
        try:
            self.hub = AttachHub(self.c.directory, input_fd, self.pty_master)
        except OSError:
            self.hub = None
        reader.hub = self.hub
        reader.on_detach = self._detached

    def _detached(self) -> None:
        """The foreground CLI read its detach keys: it goes, the container stays."""
        self._close_attach()
        self._send({"event": "detached"})

    def _open_stdio(self) -> tuple[tuple[int, int, int], OutputPump]:
        """The init's stdin/stdout/stderr and the pump that serves them. With -t the init makes its own pty
        (in the container's devpts) and sends us the master over ``self.console``."""
        c = self.c
        log = LogWriter(c.log_path)
        spec = c.spec
        if spec.tty:
            self.console, self.console_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            feed = self.attach.stdin if spec.interactive else None
            return (null, null, null), OutputPump(log, self.attach, {}, feed, None, [null])
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        closers = [out_w, err_w]
        if spec.interactive and self.attach.stdin is not None:
            stdin = self.attach.stdin
        elif spec.interactive:  # -d -i: stdin stays open (nobody writes yet), as docker keeps it for attach
            stdin, keep_w = os.pipe()
            closers.append(stdin)
            self._keep_stdin_open = keep_w
        else:
            stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            closers.append(stdin)
        pump = OutputPump(log, self.attach, {out_r: "stdout", err_r: "stderr"}, None, None, closers)
        return (stdin, out_w, err_w), pump

    def _start_container(self, stdio: tuple[int, int, int]) -> None:
        """Cgroup, fork into the new PID namespace, network, release the init, wait for its execve."""
        c = self.c
        driver = driver_for_host()
        self.cgroup = driver.create(c.id, c.spec.resources)
        if c.spec.oom_kill_disable:
            _disable_oom_killer(self.cgroup)
        if c.spec.devices:
            from runtime.container.devices import allow

            allow(self.cgroup.dirs(), c.spec.devices)
        plan = build_plan(c, self.ctx)
        if not plan.cgroup_tasks:  # v2: we move the init (v1: it moves itself, see init.join_cgroup)
            self._primer = prime_cgroup_attach()  # after create: the kernel holds cgroup_mutex while it waits
        userns_fd = -1
        if c.spec.userns == "private":
            userns_fd = userns.create_user_namespace(*userns.ranges())
            plan.userns_fd = plan.rootfs.userns_fd = userns_fd
        if self.console_child is not None:
            plan.console_fd = self.console_child.fileno()
            plan.window = terminal.window_size(self.attach.stdout)
        sync_r, sync_w = os.pipe()
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe()
        # --pid host: a plain fork, the init stays in the host's PID namespace
        pid = os.fork() if c.spec.pid == "host" else namespaces.fork_into_new_pid_namespace()
        if pid == 0:  # pragma: no cover - the container's init
            for fd in (sync_r, go_w, err_r):
                os.close(fd)
            init.child_main(plan, stdio, sync_w, go_r, err_w)
        self.pid = pid
        for fd in (sync_w, go_r, err_w):
            os.close(fd)
        if c.spec.ulimits:  # before the init may go on: everything it starts inherits them
            try:
                ulimits.apply(pid, c.spec.ulimits)
            except RefrtError:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise
        if userns_fd >= 0:
            os.close(userns_fd)
        if self.console_child is not None:
            self.console_child.close()
        try:
            if os.read(sync_r, 16) == b"ns\n":
                if hooks.needs_network_hook(c.spec.network.mode):
                    c.state.network_settings = hooks.network_attach(
                        self.ctx, c.id, c.name, pid, c.spec.network
                    )
                if c.spec.sysctls:  # in its namespaces, while it waits (runtime.container.sysctls)
                    sysctls.apply(pid, c.spec.sysctls)
                if plan.cgroup_tasks:  # it moved itself already
                    os.write(go_w, b"gocg")
                else:  # it sets up its file system while we move it into its cgroup
                    os.write(go_w, b"go")
                    self.cgroup.add(pid)
                    with contextlib.suppress(BrokenPipeError):  # the init failed meanwhile: err_r says why
                        os.write(go_w, b"cg")
            if self._primer is not None:
                self._primer.join()
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        finally:
            os.close(sync_r)
            os.close(go_w)
        if self.console is not None:
            self.pty_master = terminal.receive_fd(self.console)  # None: the init failed before its pty
            self.console.close()
        failure = _read_all(err_r)
        os.close(err_r)
        if failure:
            os.waitpid(pid, 0)
            report = json.loads(failure)
            error = RefrtError(report["message"])
            error.exit_code = report["code"]
            raise error
        c.state.status = "running"
        c.state.pid = pid
        c.state.pid_start = process_start_time(pid)
        c.state.started_at = now_iso()
        c.state.error = ""
        c.save_state()

    # -- tear-down ---------------------------------------------------------------------------------------------
    def _failed_start(self, code: int, message: str) -> None:
        c = self.c
        self._teardown()
        c.state.status = "exited"
        c.state.exit_code = code
        c.state.error = message
        c.state.pid = 0
        c.state.finished_at = now_iso()
        c.save_state()
        self._close_attach()
        if c.spec.auto_remove:
            self._auto_remove()
        self._send({"event": "error", "code": code, "message": message})

    def _finish(self, status: int) -> int:
        c = self.c
        code = os.waitstatus_to_exitcode(status)
        exit_code = 128 - code if code < 0 else code
        oom = self.cgroup.oom_killed() if self.cgroup is not None else False
        self._close_attach()
        if self.hub is not None:
            self.hub.close(exit_code)
        self._teardown()
        c.state.status = "exited"
        c.state.exit_code = exit_code
        c.state.oom_killed = oom
        c.state.pid = 0
        c.state.finished_at = now_iso()
        c.save_state()
        problem = self._auto_remove() if c.spec.auto_remove else ""
        self._send({"event": "exited", "code": exit_code, "oom_killed": oom, "remove_error": problem})
        return exit_code

    def _teardown(self) -> None:
        if hooks.needs_network_hook(self.c.spec.network.mode):
            try:
                hooks.network_detach(self.ctx, self.c.id)
            except Exception as exc:
                self.c.state.error = f"network detach: {exc}"
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup.remove()

    def _auto_remove(self) -> str:
        """--rm: remove the container; a failure is reported to the CLI, never allowed to swallow the exit code."""
        from runtime.container.lifecycle import remove_files

        try:
            remove_files(self.ctx, self.c, remove_volumes=True)
        except Exception as exc:
            return f"cannot remove container {self.c.short_id}: {exc}"
        return ""

    def _close_attach(self) -> None:
        """Close the CLI's descriptors; the pump shares this Attach, so it sees them gone."""
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(self.attach, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            setattr(self.attach, name, None)


def build_plan(c: Container, ctx: Any) -> init.LaunchPlan:
    """Resolve a stored container into what its init executes."""
    from runtime.spec import MountSpec

    spec = c.spec
    host_files = write_host_files(c.directory, spec.hostname or c.short_id, spec.network.mode)
    rootfs = RootfsPlan(
        lower_dirs=[Path(p) for p in c.lower_dirs],
        upper=c.upper,
        work=c.work,
        merged=c.merged,
        read_only=spec.read_only,
        host_files=host_files,
        mounts=[MountSpec(**m) for m in c.mounts],
    )
    cgroup_tasks: list[str] = []
    if c.cgroup_driver == 2:
        rootfs.cgroup_view = {"": Path("cgroup2")}
    else:
        group = driver_for_host().open(c.id)
        rootfs.cgroup_view = {d.parent.parent.name: d for d in group.dirs()}
        cgroup_tasks = [str(d / "tasks") for d in group.dirs()]
    if spec.privileged:  # docker: nothing masked, /proc/sys and /sys writable, every capability
        rootfs.masked_paths = ()
        rootfs.readonly_paths = ()
        rootfs.sysfs_writable = True
    caps = resolve_caps(spec.cap_add, spec.cap_drop, spec.privileged)
    security = seccomp.parse(spec.security_opt)
    return init.LaunchPlan(
        rootfs=rootfs,
        argv=c.argv,
        env=c.env,
        workdir=spec.workdir or c.image_config.get("WorkingDir") or "/",
        user=spec.user or c.image_config.get("User") or "",
        group_add=list(spec.group_add),
        host_namespaces=[ns for ns, mode in (("uts", spec.uts), ("ipc", spec.ipc)) if mode == "host"],
        hostname=spec.hostname or c.short_id,
        network_mode=spec.network.mode,
        join_netns=hooks.netns_to_join(ctx, spec.network),
        cgroup_namespace=c.cgroup_driver == 2,
        cgroup_tasks=cgroup_tasks,
        capabilities=caps,
        no_new_privs=security.no_new_privileges,
        seccomp=seccomp.filter_for(security, spec.privileged, caps),
        tty=spec.tty,
    )


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _disable_oom_killer(group: Cgroup) -> None:
    """--oom-kill-disable: cgroup v1's memory.oom_control; v2 has no such switch (docker discards it there)."""
    for directory in group.dirs():
        control = directory / "memory.oom_control"
        if control.exists():
            control.write_text("1")
            return
    group.warnings.append("Your kernel does not support OomKillDisable. OomKillDisable discarded.")
