"""``exec``: run another process inside a running container.

The new process joins the container's cgroup and every one of its namespaces (setns; for the PID namespace
only children land in it, hence one more fork), then gets the same reduced privileges as the container's init
before its execve. Its parent is the CLI, which relays the exit code (or, with ``-d``, does not wait).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import termios
from dataclasses import dataclass
from typing import Any

from runtime.cgroups import driver_for_host
from runtime.container import capabilities, init, namespaces, seccomp, terminal, users
from runtime.container.attach import DetachScanner, parse_detach_keys, write_all
from runtime.container.lifecycle import reconcile
from runtime.container.seccomp import kernel as seccomp_kernel
from runtime.container.state import Container
from runtime.errors import ConflictError, RefrtError


class NotRunning(ConflictError):
    """``exec`` into a container that is not running (docker's CLI exits 1 here)."""

    exit_code = 1


@dataclass
class ExecProcess:
    """A started exec: ``pid`` is our child that waits for the command and exits with its code (128+n for a
    signal); ``master`` is the pty master with a TTY, else -1."""

    pid: int
    master: int = -1


def spawn(
    ctx: Any,
    c: Container,
    argv: list[str],
    *,
    env: list[str],
    stdio: tuple[int, int, int],
    workdir: str = "",
    user: str = "",
    tty: bool = False,
    detach: bool = False,
    keep_fds_only: bool = False,
) -> ExecProcess:
    """Start ``argv`` in ``c`` on the given stdin/stdout/stderr (with ``tty``, on a new pty of the container's
    instead). ``keep_fds_only``: the child closes every other descriptor it inherited (a daemon's sockets and
    relay pipes must not stay open in it). Raises the command's start error (126/127) as the CLI reports it."""
    reconcile(ctx, c)
    if not c.state.running:
        raise NotRunning(f"container {c.id} is not running")
    spec = c.spec
    full_env = _merge_env(c.env, env, tty)
    caps = capabilities.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
    console: socket.socket | None = None
    console_child: socket.socket | None = None
    if tty and not detach:
        console, console_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the intermediate process
        os.close(err_r)
        if console is not None:
            console.close()
        if keep_fds_only:
            keep = {*stdio, err_w, console_child.fileno() if console_child is not None else -1}
            for fd in map(int, os.listdir("/proc/self/fd")):
                if fd > 2 and fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        _enter_and_run(c, argv, full_env, workdir or spec.workdir or c.image_config.get("WorkingDir") or "/",
                       user or spec.user or c.image_config.get("User") or "", caps, stdio, console_child,
                       detach, err_w)
    os.close(err_w)
    master = -1
    if console is not None and console_child is not None:
        console_child.close()
        received = terminal.receive_fd(console)
        console.close()
        master = received if received is not None else -1
    failure = _read_all(err_r)
    if failure:
        os.waitpid(pid, 0)
        if master >= 0:
            os.close(master)
        report = json.loads(failure)
        error = RefrtError(report["message"])
        # docker 20.10 answers an exec of a missing command with 126 (runc's "exec failed"), not run's 127
        error.exit_code = 126 if int(report["code"]) == 127 else int(report["code"])
        raise error
    return ExecProcess(pid, master)


def exec_in(
    ctx: Any,
    c: Container,
    argv: list[str],
    *,
    env: list[str],
    workdir: str = "",
    user: str = "",
    tty: bool = False,
    interactive: bool = False,
    detach: bool = False,
    detach_keys: str = "",
) -> int:
    """``refrt exec``: the command on the CLI's own stdio; waits and returns its exit code (0 with ``detach``;
    1 when the user typed the detach keys, as docker's CLI)."""
    keys = parse_detach_keys(detach_keys) if (tty and interactive) else b""
    stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY)
    stdio = (stdin, 1, 2)
    if detach:
        null = os.open(os.devnull, os.O_RDWR)
        stdio = (null, null, null)
    if detach and tty:
        # docker: ``exec -d -t`` still gets a terminal, which nobody types on, so a shell there waits instead of
        # reading EOF. Its master goes to a holder; the waiter is left to the zygote (it reaps orphans).
        proc = spawn(ctx, c, argv, env=env, stdio=stdio, workdir=workdir, user=user, tty=True)
        _hold_detached(proc.master)
        return 0
    proc = spawn(ctx, c, argv, env=env, stdio=stdio, workdir=workdir, user=user, tty=tty, detach=detach)
    if detach:
        os.waitpid(proc.pid, 0)
        return 0
    if proc.master >= 0:
        code = _pump_tty(proc.pid, proc.master, interactive, keys)
        if code < 0:
            print("read escape sequence", file=sys.stderr)
            return 1
        return code
    return _wait_forwarding_signals(proc.pid)


def _enter_and_run(
    c: Container,
    argv: list[str],
    env: list[str],
    workdir: str,
    user_spec: str,
    caps: list[str],
    stdio: tuple[int, int, int],
    console: socket.socket | None,
    detach: bool,
    err_w: int,
) -> None:
    try:
        group = driver_for_host().open(c.id)
        if c.cgroup_driver == 1:  # single-threaded (just forked): move ourselves, without the kernel's RCU wait
            init.join_cgroup([str(d / "tasks") for d in group.dirs()])
        else:
            group.add(os.getpid())
        namespaces.join(c.state.pid)
        child = os.fork()
        if child != 0:
            os.close(err_w)  # only the command reports; our caller reads err_r to EOF before it relays anything
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # we only wait: the caller's terminal must not stay open in us (-d, detach)
                os.dup2(null, fd)
            os.close(null)
            if detach:
                os._exit(0)
            status = os.waitpid(child, 0)[1]
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
        init.become_session_leader(stdio)  # its own session: -d survives us, -t gets a controlling terminal
        if console is not None:
            master, slave = terminal.open_pty_in_container(terminal.window_size(1))
            terminal.send_fd(console, master)
            console.close()
            os.close(master)
            for fd in (0, 1, 2):
                os.dup2(slave, fd, inheritable=True)
            os.close(slave)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        user = users.resolve(user_spec)
        user.groups = users.with_added(user, c.spec.group_add)  # as docker's exec
        full_env = init._with_home(env, user.home)
        executable = init.find_executable(argv[0], full_env)
        security = seccomp.parse(c.spec.security_opt)
        program = seccomp.filter_for(security, c.spec.privileged, caps)
        seccomp_kernel.join_new_session_keyring()  # as runc's exec: never the caller's keys
        init.drop_privileges(caps, user, security.no_new_privileges, program)
        os.chdir(workdir)
        init._reset_signals()
        init._close_other_fds(err_w)
        init.install_late_filter(security.no_new_privileges, program)
        try:
            os.execve(executable, argv, init._env_dict(full_env))
        except OSError as exc:
            init._report(err_w, init.exec_error(argv[0], exc))
    except RefrtError as exc:
        init._report(err_w, exc)
    except OSError as exc:
        init._report(err_w, RefrtError(f"exec: {exc}"))
    except BaseException as exc:
        init._report(err_w, RefrtError(f"exec: {type(exc).__name__}: {exc}"))
    os._exit(126)


def _merge_env(base: list[str], extra: list[str], tty: bool) -> list[str]:
    merged: dict[str, str] = {}
    for item in base + (["TERM=xterm"] if tty else []):
        key, _, value = item.partition("=")
        merged[key] = value
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            if key in os.environ:
                merged[key] = os.environ[key]
            continue
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _wait_forwarding_signals(pid: int) -> int:
    status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _pump_tty(pid: int, master: int, interactive: bool, keys: bytes) -> int:
    """Copy our terminal to the pty master and back until the process ends (or the detach keys come)."""
    import selectors
    import signal

    sel = selectors.PollSelector()  # poll, unlike epoll, takes regular files and /dev/null
    sel.register(master, selectors.EVENT_READ)
    if interactive:
        sel.register(0, selectors.EVENT_READ)
    out = sys.stdout.buffer
    scanner = DetachScanner(keys)
    input_is_tty = os.isatty(0)  # asked now: a terminal that hung up says no
    # the window follows ours: SIGWINCH (the thin client forwards its own) -> TIOCSWINSZ on the master
    signal.signal(signal.SIGWINCH, lambda _s, _f: terminal.copy_window_size(0 if os.isatty(0) else 1, master))
    with terminal.raw_mode(0) if interactive else contextlib.nullcontext():
        while True:
            for key, _ in sel.select(0.2):
                if key.fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(master)
                        os.close(master)
                        return _wait_forwarding_signals(pid)
                    out.write(data)
                    out.flush()
                else:
                    try:
                        data = os.read(0, 65536)
                    except OSError:  # our terminal hung up
                        data = b""
                    if not data:
                        sel.unregister(0)
                        if not input_is_tty:
                            write_all(master, b"\x04")
                        continue
                    data, detached = scanner.feed(data)
                    if data:
                        write_all(master, data)
                    if detached:
                        _hold_detached(master)
                        return -1


def _hold_detached(master: int) -> None:
    """After the detach keys the command goes on, as under docker: a process of its own keeps the pty master
    open (its closing would hang the terminal up) and drains the output nobody reads any more."""
    if os.fork() == 0:  # pragma: no cover - the holder
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, master)
            os.closerange(master + 1, 65536)
            while True:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:  # EIO: the last process on the pty has gone
                    break
        finally:
            os._exit(0)
    os.close(master)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            os.close(fd)
            return b"".join(chunks)
        chunks.append(chunk)

