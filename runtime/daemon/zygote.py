"""The zygote: a single-threaded, pre-imported process that forks one worker per CLI command.

Why: a ``refrt`` call used to pay for an interpreter start and the runtime's imports before doing any work. The
daemon forks the zygote at start, before it starts any thread (forking a threaded server is unsafe: a lock held by
another thread stays held forever in the child). The zygote imports the whole command line once; each command is
then a ``fork()`` of it, which costs about a millisecond.

The protocol, end to end (see :mod:`runtime.client` for the client's half):

- The daemon answers ``POST /refrt/cli`` (``Upgrade: refrt-cli``) with 101 and passes the connection's descriptor
  to the zygote over a ``SOCK_SEQPACKET`` pair: a message ``S<session id>`` with the descriptor attached.
- The zygote forks a worker. The worker reads the client's header from the connection: a 4-byte length, then
  NUL-separated fields (version, cwd, umask, argument count, arguments, ``KEY=VALUE`` environment entries; none of
  them can contain NUL, as for execve) with the client's stdin, stdout and stderr attached (SCM_RIGHTS).
- The worker puts those descriptors on 0/1/2, takes the client's cwd, umask and environment, and runs
  :func:`runtime.cli.main`. Then it sends ``E`` + the exit code (a :data:`FRAME`) and exits.
- Meanwhile every byte the client sends is a signal number (SIGINT, SIGTERM, SIGWINCH ...): the worker sends it
  to itself, so the CLI's own handlers (sig-proxy to the container, raw mode) work unchanged. The connection is in
  O_ASYNC mode, so SIGIO interrupts whatever the worker does. EOF means the client is gone (SIGKILLed): the worker
  kills itself, as the old in-process CLI would have died with it.
- When the zygote reaps a worker that died of a signal, it sends ``S`` + the signal number, so the client exits
  as a killed command would (128 + n). Then it tells the daemon ``D<session id>``: the daemon holds the session's
  HTTP thread until then, which is how it knows that a command still runs (no idle exit meanwhile).

A spare worker waits ahead of each command (``refrt-spare``): forked by the zygote once it has been quiet for
:data:`SPARE_QUIET` seconds (:data:`SPARE_BUSY` while commands run), it has already left the zygote's session,
closed the zygote's descriptors and reset its signals, and sleeps on a private ``SOCK_SEQPACKET`` pair. A
command's connection goes to it over that pair (one message, the descriptor attached; the spare acknowledges
it), and a fresh spare is forked when the zygote is quiet again. Why: on a loaded machine a new child waits for a
CPU far longer than a sleeper woken by a message (the scheduler queues a child behind the tasks already waiting
and credits a sleeper): 3.6-7 ms median and 6-38 ms at p90 from fork to the child's first step, against 0.2-1.2
and 1-7 ms to wake a spare, at load 5-8 here (``bench/bench_daemon.py --spare``, which also compares whole
commands with and without spares). A spare is exactly a worker forked earlier: the zygote's state does not change
after its preload (it never runs a command), so nothing a spare holds can be stale. Without a spare (the first
command, a burst, a spare that died, ``REFRT_DAEMON_SPARE=0`` in the daemon's environment) the zygote forks the
worker as before; a spare that died after its command was sent, before acknowledging it, has the command given
to a worker forked then. A zygote that drains or dies takes its spare with it: the spare sees its end of the pair
close and exits.

Workers run in their own session (setsid), so a signal meant for the daemon never reaches them; they survive the
daemon and the zygote, and still report their exit code to their client.

The zygote is a child subreaper (``PR_SET_CHILD_SUBREAPER``): what a worker leaves behind when its parent goes
first (a detached ``exec -d`` command once its waiter returned, the exec waiter of a client that went away and
took its worker with it, a container's monitor when it exits) becomes the zygote's child, and the zygote reaps it
as soon as it exits. Without that they would go to PID 1, and not every PID 1 reaps (a container's shell, or the
init of a small VM): each would stay a zombie.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from runtime.paths import Paths
from runtime.syscalls import set_child_subreaper

FRAME = struct.Struct("!ci")  # kind (E: exit code, S: killed by signal), value
EXIT, SIGNALED = b"E", b"S"
ACK = b"A"  # a spare's answer to the zygote: it took the command it was given
HEADER_VERSION = b"refrt-cli-1"
MAX_HEADER = 4 * 1024 * 1024
# Signals a client may forward; anything else in the stream is ignored.
FORWARDED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH,
                       signal.SIGUSR1, signal.SIGUSR2})
# What the daemon preloads: every command group and what their handlers import lazily.
PRELOAD = (
    "runtime.cli.format", "runtime.container.lifecycle", "runtime.container.monitor", "runtime.container.exec",
    "runtime.container.inspect", "runtime.container.logs", "runtime.container.stats", "runtime.container.oneshot",
    "runtime.store.store", "runtime.registry", "runtime.network", "runtime.network.commands", "runtime.volumes",
    "runtime.build", "runtime.cgroups", "runtime.humanize", "argparse", "json", "subprocess", "tarfile", "hashlib",
    "concurrent.futures.thread",  # concurrent.futures imports it on first use: 4 ms of every pull otherwise
)
SPARE_ENV = "REFRT_DAEMON_SPARE"
"""``0`` in the daemon's environment: no spare worker, every command forks its own (bench_daemon.py's comparison)."""
SPARE_QUIET = 0.01
"""Seconds without any event, no command running, before the zygote forks a spare worker: the fork and the spare's
set-up stay out of the way of the commands (on two loaded cores, a ``run`` shared its CPU with them)."""
SPARE_BUSY = 0.25
"""The same while commands run: a long one (``run -it``, ``logs -f``) must not leave the next without a spare."""


def preload() -> None:
    """Import the command line and what its commands import lazily (a failing optional import is skipped)."""
    import runtime.cli

    runtime.cli.preload()
    for name in PRELOAD:
        # a module that cannot load (even mid-edit in a checkout) fails only the commands that need it
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        _warm_caches()


def _warm_caches() -> None:
    """Results every command computes the same way: computed once here, shared by every worker. Each is a
    pure function of code the zygote has loaded (no file, no clock), so no command can see a stale one."""
    from runtime.container import seccomp
    from runtime.container.capabilities import resolve
    from runtime.imageview import parse_time

    seccomp.filter_for(seccomp.parse([]), False, resolve([], [], False))
    parse_time("2000-01-01T00:00:00.0Z")  # its pattern, compiled into re's cache (images, ps, inspect)
    _warm_argparse()


def _warm_argparse() -> None:
    """argparse matches the command line against regular expressions it builds from each action's nargs and
    compiles on use (re's cache): every worker compiled the same few again, 1-2 ms of a ``refrt ps``. Compile
    what the prebuilt parsers can ask for: each action's pattern, and the runs of positionals argparse joins."""
    import argparse
    import re

    import runtime.cli

    seen: set[int] = set()
    parsers: list[argparse.ArgumentParser] = list(getattr(runtime.cli, "_PREBUILT", {}).values())
    while parsers:
        parser = parsers.pop()
        if id(parser) in seen:
            continue
        seen.add(id(parser))
        for action in parser._actions:
            re.compile(parser._get_nargs_pattern(action))
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
        positionals = [parser._get_nargs_pattern(action) for action in parser._get_positional_actions()]
        for start in range(len(positionals)):
            for end in range(start + 1, len(positionals) + 1):
                re.compile("".join(positionals[start:end]))


def serve(control: socket.socket, paths: Paths) -> None:
    """The zygote's loop: fork a worker per session the daemon passes; report each worker's end. Returns when
    the daemon closed ``control`` (it stopped, was killed, or replaced us) and our last worker ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of a foreground daemon: the daemon decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _name("refrt-zygote")
    set_child_subreaper()  # before the first fork: every worker's descendants inherit the search for it
    preload()
    gc.collect()
    gc.freeze()  # the preloaded objects stay shared with every worker instead of being copied by the collector
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _s, _f: None)
    sessions: dict[int, tuple[bytes, int]] = {}
    handed: dict[int, socket.socket] = {}  # spares given a command -> their pair, until they are reaped
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    draining = False
    spares = os.environ.get(SPARE_ENV, "1") != "0"
    spare = _Spare.fork(control, paths) if spares else None
    try:
        while not (draining and not sessions):
            want_spare = spares and spare is None and not draining
            events = poller.poll(int((SPARE_BUSY if sessions else SPARE_QUIET) * 1000) if want_spare else -1)
            if not events and want_spare:
                spare = _Spare.fork(control, paths)
            for fd, _ in events:
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                    _reap(control, sessions, handed, paths)
                    continue
                try:
                    message, fds, _, _ = socket.recv_fds(control, 64, 1, socket.MSG_CMSG_CLOEXEC)
                except InterruptedError:
                    continue
                if not message:  # the daemon is done with us: finish the running commands, then leave
                    draining = True
                    poller.unregister(control)
                    if spare is not None:
                        spare.dismiss()
                        spare = None
                    continue
                if not fds:
                    continue
                pid = spare.hand_over(fds[0]) if spare is not None else None
                if pid is not None and spare is not None:
                    handed[pid] = spare.pair
                spare = None
                if pid is None:
                    pid = _fork_worker(control, fds[0], paths)
                sessions[pid] = (message[1:], fds[0])
            _reap(control, sessions, handed, paths)
    finally:
        if spare is not None:
            spare.dismiss()
        for pair in handed.values():
            pair.close()
        for _, conn in sessions.values():
            with contextlib.suppress(OSError):
                os.close(conn)


class _Spare:
    """The zygote's end of a spare worker: its pid and the pair its command's connection goes through."""

    def __init__(self, pid: int, pair: socket.socket) -> None:
        self.pid = pid
        self.pair = pair

    @classmethod
    def fork(cls, control: socket.socket, paths: Paths) -> _Spare | None:
        """A new spare, or None if it cannot be made now (the commands then fork their workers)."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # pragma: no cover - the spare
            keep = theirs.detach()
            ours.detach()
            control.detach()
            _spare(keep, paths)
        theirs.close()
        return cls(pid, ours)

    def hand_over(self, conn_fd: int) -> int | None:
        """Give the spare its command: its pid, now the session's worker; None if it is gone (it died). The
        pair stays open until the worker is reaped: the spare's acknowledgement on it tells whether it took the
        command (a spare killed just as the command came may have died with it unread)."""
        try:
            socket.send_fds(self.pair, [b"C"], [conn_fd])
        except OSError:
            self.pair.close()
            return None  # the dead spare is reaped like any other unknown child
        return self.pid

    def dismiss(self) -> None:
        """The spare sees its pair close and exits; reaped here, so no zombie outlives the zygote. Bounded: a
        spare that died earlier was reaped already, and its pid may be another child's by now."""
        self.pair.close()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.001)


def _fork_worker(control: socket.socket, conn_fd: int, paths: Paths) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the worker
        control.detach()
        _worker(conn_fd, paths)
    return pid


def _taken(pair: socket.socket) -> bool:
    """Whether the spare at the other end of ``pair`` (reaped by now) acknowledged its command."""
    try:
        return pair.recv(16, socket.MSG_DONTWAIT) == ACK
    except OSError:
        return False
    finally:
        pair.close()


def _reap(control: socket.socket, sessions: dict[int, tuple[bytes, int]], handed: dict[int, socket.socket],
          paths: Paths) -> None:
    """Collect every ended child: workers (reported to their client and the daemon) and the orphans we adopt as
    the subreaper (nothing to report: reaping them is the point). A spare that died before it took its command
    leaves the connection to a worker forked now: no command is lost to a spare's death."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        found = sessions.pop(pid, None)
        if found is None:
            continue
        sid, conn = found
        pair = handed.pop(pid, None)
        if pair is not None and not _taken(pair):
            sessions[_fork_worker(control, conn, paths)] = found
            continue
        if os.WIFSIGNALED(status):
            with contextlib.suppress(OSError):
                os.write(conn, FRAME.pack(SIGNALED, os.WTERMSIG(status)))
        os.close(conn)
        with contextlib.suppress(OSError):
            control.send(b"D" + sid)


# -- the worker -------------------------------------------------------------------------------------------------
def _detach(keep: int, name: str) -> None:  # pragma: no cover - runs in a forked worker or spare
    """What a worker does before it knows its command: its own session, no descriptor of the zygote's but
    ``keep`` and 0/1/2, the signal dispositions of a fresh interpreter."""
    os.setsid()
    _name(name)
    signal.set_wakeup_fd(-1)
    _close_fds_except(keep)
    _default_signals()


def _spare(pair_fd: int, paths: Paths) -> None:  # pragma: no cover - runs in the forked spare
    """Wait, detached already, for a command's connection on ``pair_fd``, then be its worker; never returns.
    Exits quietly when the zygote closes the pair (it drains, or died) or sends something else."""
    conn_fd = -1
    try:
        _detach(pair_fd, "refrt-spare")
        pair = socket.socket(fileno=pair_fd)
        _, fds, _, _ = socket.recv_fds(pair, 16, 1, socket.MSG_CMSG_CLOEXEC)  # as the zygote got it
        if len(fds) == 1:
            pair.send(ACK)  # the command is ours: the zygote must not give it to another worker
            conn_fd = fds[0]
            _name("refrt-worker")
        pair.close()
    except BaseException:  # SIGINT while waiting, or a broken pair: leave without a word
        conn_fd = -1
    if conn_fd < 0:
        os._exit(0)
    _worker(conn_fd, paths, detached=True)


def _worker(conn_fd: int, paths: Paths, detached: bool = False) -> None:  # pragma: no cover - a forked worker
    """Run one command for the client on ``conn_fd``; never returns."""
    code = 125
    try:
        if not detached:
            _detach(conn_fd, "refrt-worker")
        conn = socket.socket(fileno=conn_fd)
        argv, env, cwd, umask, stdio = _read_header(conn)
        _take_stdio(stdio)
        _take_environment(env, paths)
        os.umask(umask)
        _watch_client(conn)
        try:
            os.chdir(cwd)
        except OSError as exc:
            print(f"refrt: cannot use the working directory {cwd}: {exc.strerror}", file=sys.stderr)
            code = 125
        else:
            code = _run_cli(argv, paths)
        _flush()
        signal.signal(signal.SIGIO, signal.SIG_IGN)  # the client closes once it has the code: not a reason to die
        with contextlib.suppress(OSError):
            conn.sendall(FRAME.pack(EXIT, code))
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
            _flush()
    finally:
        os._exit(code & 0xFF)


def _close_fds_except(keep: int) -> None:
    """Only 0/1/2 and the connection: other sessions' connections and the zygote's pipes stay out of the
    command (and out of the container monitors it forks)."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _default_signals() -> None:
    """The dispositions a fresh ``python3`` has, which the CLI's code expects."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD,
                   signal.SIGWINCH, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _read_header(conn: socket.socket) -> tuple[list[str], list[bytes], str, int, list[int]]:
    conn.settimeout(30)
    data, fds = b"", []
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(8 * 4), socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4)]
        if not chunk:
            raise ConnectionError("the client closed the connection before its header")
        data += chunk
        if len(data) > MAX_HEADER:
            raise ConnectionError("client header too large")
    conn.settimeout(None)
    fields = data[4:].split(b"\0")
    if fields[0] != HEADER_VERSION or len(fields) < 4 or len(fds) != 3:
        raise ConnectionError("not a refrt client header")
    cwd, umask, count = os.fsdecode(fields[1]), int(fields[2], 8), int(fields[3])
    argv = [os.fsdecode(word) for word in fields[4:4 + count]]
    return argv, fields[4 + count:], cwd, umask, fds


def _take_stdio(fds: list[int]) -> None:
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # out of 0/1/2's way before dup2
    for fd in fds:
        os.close(fd)
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)
    # new text streams: a terminal's stdout is line-buffered, a pipe's is not, as in a fresh interpreter
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape",  # noqa: SIM115
                      buffering=1 if os.isatty(1) else -1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115


def _take_environment(env: list[bytes], paths: Paths) -> None:
    """The client's environment; a client that named no root gets the daemon's (it asked this daemon)."""
    os.environ.clear()
    for item in env:
        key, sep, value = item.partition(b"=")
        if key and sep:
            os.environb[key] = value
    if not os.environ.get("REFRT_ROOT"):
        os.environ["REFRT_ROOT"] = str(paths.root)
        os.environ["REFRT_STATE"] = str(paths.state)


def _watch_client(conn: socket.socket) -> None:
    """Signals forwarded by the client, and its disappearance, interrupt the command wherever it is (SIGIO)."""
    me = os.getpid()

    def on_input(_signum: int, _frame: Any) -> None:
        while True:
            try:
                data = conn.recv(256, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                os.kill(me, signal.SIGKILL)  # the client is gone: so is its command, as before the daemon
            for signum in data:
                if signum in FORWARDED:
                    os.kill(me, signum)

    signal.signal(signal.SIGIO, on_input)
    fcntl.fcntl(conn.fileno(), fcntl.F_SETOWN, me)
    fcntl.fcntl(conn.fileno(), fcntl.F_SETFL, fcntl.fcntl(conn.fileno(), fcntl.F_GETFL) | os.O_ASYNC)
    on_input(signal.SIGIO, None)  # what arrived before O_ASYNC was set


def _run_cli(argv: list[str], paths: Paths) -> int:
    from runtime.cli import main
    from runtime.container import monitor

    monitor.SINGLE_FORK = True  # this process exits with its command (see monitor.SINGLE_FORK)

    sys.argv = ["refrt", *argv]
    try:
        return int(main(argv))
    except SystemExit as exc:  # argparse's --help and exit()
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _name(name: str) -> None:
    from runtime import syscalls

    with contextlib.suppress(OSError):
        syscalls.set_process_name(name)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def main(argv: list[str]) -> None:
    """Entry of a zygote started afresh (the daemon's first one died): ``CONTROL_FD ROOT STATE``."""
    control = socket.socket(fileno=int(argv[0]))
    serve(control, Paths(root=Path(argv[1]), state=Path(argv[2])))
