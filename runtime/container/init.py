"""The container's init: what the forked process does between fork() and execve() of the user's command.

It runs as PID 1 of the new PID namespace, in the parent's cgroup already, and follows runc's order: new
namespaces, the filesystem (rootfs.py) while the parent sets up network and cgroup from outside, hostname,
loopback, the parent's go-ahead (network and cgroup done), a new session keyring, then privileges are reduced -
bounding set, no_new_privs, user and group, effective capabilities - and finally the working directory, the
seccomp filter and execve. A failure before execve is reported to the parent as one JSON line on a close-on-exec
pipe; EOF on that pipe means execve succeeded.

Where the seccomp filter goes in follows runc (libcontainer/standard_init_linux.go): installing a filter
needs either no_new_privs or CAP_SYS_ADMIN. With ``--security-opt no-new-privileges`` it is the very last step
before execve, so the fewest calls run under it; without (docker's default) it goes in while the process still
holds CAP_SYS_ADMIN, right before the capabilities and the user are dropped - then setgroups, setuid, capset
and prctl run under the filter, which allows them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import stat
import sys
import termios
from dataclasses import dataclass, field

from runtime import syscalls
from runtime.container import capabilities, namespaces, terminal, userns, users
from runtime.container.rootfs import RootfsPlan, setup_rootfs
from runtime.container.seccomp import kernel as seccomp_kernel
from runtime.errors import CannotInvokeError, CommandNotFoundError, RefrtError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class LaunchPlan:
    """What the init needs, resolved by the parent. ``env`` is final except HOME (known after -u resolves)."""

    rootfs: RootfsPlan
    argv: list[str]
    env: list[str]
    workdir: str = "/"
    user: str = ""
    hostname: str = ""
    network_mode: str = "none"
    join_netns: str = ""  # --network container:NAME: that container's /proc/<pid>/ns/net
    capabilities: list[str] = field(default_factory=lambda: list(capabilities.DEFAULT))
    no_new_privs: bool = False  # docker's default; --security-opt no-new-privileges sets it
    seccomp: bytes | None = None  # the packed BPF filter (runtime.container.seccomp.filter_for); None: unconfined
    tty: bool = False
    console_fd: int = -1  # with -t: unix socket on which the pty master is sent to the parent
    window: tuple[int, int] = (0, 0)
    userns_fd: int = -1  # --userns=private: joined right before privileges are dropped
    cgroup_namespace: bool = False  # docker's default on cgroup v2 (private), not on v1 (host)
    cgroup_tasks: list[str] = field(default_factory=list)  # v1: the init moves itself in (see join_cgroup)
    group_add: list[str] = field(default_factory=list)  # --group-add: supplementary groups beyond the user's
    host_namespaces: list[str] = field(default_factory=list)  # --uts host / --ipc host: "uts", "ipc" kept


def child_main(plan: LaunchPlan, stdio: tuple[int, int, int], sync_w: int, go_r: int, err_w: int) -> None:
    """Never returns: execs the command or exits with docker's code after reporting why on ``err_w``."""
    parent_busy = False  # "ns" sent, the parent's go-ahead (and cgroup move) not yet read: see the end
    try:
        become_session_leader(stdio)
        join_cgroup(plan.cgroup_tasks)
        flags = namespaces.unshare_flags(plan.network_mode)
        if plan.join_netns:
            namespaces.join_network(plan.join_netns)
            flags &= ~syscalls.CLONE_NEWNET
        flags &= ~namespaces.flags_of(plan.host_namespaces)
        syscalls.unshare(flags)
        os.write(sync_w, b"ns\n")
        os.close(sync_w)
        parent_busy = True
        if plan.cgroup_namespace:  # once we sit in our group, it becomes the namespace's root
            wait_for_go(go_r)
            wait_for_cgroup(go_r)
            parent_busy = False
            syscalls.unshare(syscalls.CLONE_NEWCGROUP)
        setup_rootfs(plan.rootfs)
        if plan.tty:
            attach_console(plan)
        if plan.hostname and "uts" not in plan.host_namespaces:
            syscalls.sethostname(plan.hostname)
        if plan.network_mode != "host" and not plan.join_netns:
            namespaces.bring_up_loopback()
        user = users.resolve(plan.user)
        user.groups = users.with_added(user, plan.group_add)
        env = _with_home(plan.env, user.home)
        executable = find_executable(plan.argv[0], env)
        ensure_workdir(plan.workdir)
        if not plan.cgroup_namespace:  # the file system was set up meanwhile; nothing runs outside the group
            wait_for_go(go_r)
            wait_for_cgroup(go_r)
            parent_busy = False
        if plan.userns_fd >= 0:
            userns.enter(plan.userns_fd)
        seccomp_kernel.join_new_session_keyring()  # the caller's keys out of reach (keyctl is refused later)
        drop_privileges(plan.capabilities, user, plan.no_new_privs, plan.seccomp)
        os.chdir(plan.workdir or "/")
        syscalls.set_parent_death_signal(signal.SIGKILL)  # the monitor's death ends the container
        _reset_signals()
        _close_other_fds(err_w)
        install_late_filter(plan.no_new_privs, plan.seccomp)
        try:
            os.execve(executable, plan.argv, _env_dict(env))
        except OSError as exc:
            _report(err_w, exec_error(plan.argv[0], exc))
    except OSError as exc:
        _report(err_w, RefrtError(str(exc)))
    except RefrtError as exc:
        _report(err_w, exc)
    except BaseException as exc:
        _report(err_w, RefrtError(f"container init: {type(exc).__name__}: {exc}"))
    if parent_busy:  # failed while the parent networks us: let it finish (its writes and moves must not fail on
        with contextlib.suppress(OSError):  # a gone init) and then read our report
            while os.read(go_r, 16):
                pass
    os._exit(125)


def join_cgroup(tasks_files: list[str]) -> None:
    """Move this process into the container's v1 cgroups by writing 0 to each ``tasks`` file.

    Why not the parent writing our pid to ``cgroup.procs``: that moves a whole thread group, for which the kernel
    takes its global cgroup_threadgroup_rwsem and first waits for an RCU grace period (10-15 ms here, the largest
    single cost of a start). A thread that moves itself alone skips that lock; we are single-threaded (just
    forked), so moving this thread moves the process (0.4 ms)."""
    for path in tasks_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def wait_for_go(go_r: int) -> None:
    """The parent networks our new namespace (veth, addresses, rules; sysctls) while we set up the file system -
    the slowest steps of a start, overlapped - and says "go" when done; the command never runs before."""
    if os.read(go_r, 2) != b"go":
        os._exit(125)  # the parent gave up (network failed) and reports it


def wait_for_cgroup(go_r: int) -> None:
    """The parent moves us into the container's cgroup while we set up the file system (the move waits for the
    kernel, see monitor.prime_cgroup_attach); "cg" says it is done."""
    if os.read(go_r, 2) != b"cg":
        os._exit(125)  # the parent gave up (cgroup failed) and reports it
    os.close(go_r)


def become_session_leader(stdio: tuple[int, int, int]) -> None:
    """Own session (with -t the pty becomes its controlling terminal later), and the given stdio."""
    os.setsid()
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target, inheritable=True)


def attach_console(plan: LaunchPlan) -> None:
    """-t: a pty of the container's own devpts becomes stdin/out/err and the controlling terminal."""
    master, slave = terminal.open_pty_in_container(plan.window)
    with socket.socket(fileno=plan.console_fd) as sock:
        terminal.send_fd(sock, master)
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd, inheritable=True)
    os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def find_executable(name: str, env: list[str]) -> str:
    """``$PATH`` lookup with docker's errors: 127 when nothing is found, 126 when found but not runnable."""
    if "/" in name:
        candidates = [name]
    else:
        path = _env_dict(env).get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if "/" in name:
                raise CannotInvokeError(f'exec: "{name}": is a directory: permission denied')
            continue
        return candidate
    if "/" in name:
        raise CommandNotFoundError(f'exec: "{name}": stat {name}: no such file or directory')
    raise CommandNotFoundError(f'exec: "{name}": executable file not found in $PATH')


def exec_error(name: str, exc: OSError) -> RefrtError:
    if exc.errno == errno.ENOENT:
        return CommandNotFoundError(f'exec: "{name}": no such file or directory')
    return CannotInvokeError(f'exec: "{name}": {exc.strerror.lower() if exc.strerror else exc}')


def drop_privileges(caps: list[str], user: users.User, no_new_privs: bool, seccomp: bytes | None) -> None:
    """Bounding set, then no_new_privs or (without it) the seccomp filter while CAP_SYS_ADMIN is still held,
    then groups, user and the capability sets."""
    capabilities.drop_bounding_set(caps)
    if no_new_privs:
        syscalls.set_no_new_privs()
    elif seccomp is not None:
        seccomp_kernel.install_filter(seccomp)
    os.setgroups(user.groups)
    os.setgid(user.gid)
    os.setuid(user.uid)  # for a non-zero uid the kernel clears permitted and effective capabilities here
    capabilities.apply_process_sets(caps, user.uid)


def install_late_filter(no_new_privs: bool, seccomp: bytes | None) -> None:
    """With no_new_privs the filter needs no privilege, so it goes in last, right before execve."""
    if no_new_privs and seccomp is not None:
        seccomp_kernel.install_filter(seccomp)


def ensure_workdir(workdir: str) -> None:
    """``-w``: docker creates a missing working directory (as root, before the user switch) rather than failing."""
    if workdir and not os.path.isdir(workdir):
        os.makedirs(workdir, mode=0o755, exist_ok=True)


def _with_home(env: list[str], home: str) -> list[str]:
    if any(e.startswith("HOME=") for e in env):
        return env
    return [*env, f"HOME={home}"]


def _env_dict(env: list[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; a container's command must start with default dispositions."""
    for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _close_other_fds(keep: int) -> None:
    """Nothing of the monitor's (log file, status pipe, the CLI's descriptors) may leak into the container."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _report(err_w: int, exc: RefrtError) -> None:
    payload = json.dumps({"code": exc.exit_code, "message": str(exc)}).encode() + b"\n"
    try:
        os.write(err_w, payload)
    except OSError:
        print(f"refrt: {exc}", file=sys.stderr)
