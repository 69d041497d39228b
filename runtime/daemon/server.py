"""The daemon's life: one per root, its socket, live restore, the CLI's zygote, idling out, stopping cleanly.

``refrt daemon [--host unix://PATH]`` serves in the foreground until SIGTERM/SIGINT. The default socket is
``<state>/refrt.sock`` (``/run/refrt/refrt.sock`` for the default root), so each root has its own daemon:

- ``<state>/refrt-daemon.lock`` is flock'ed for the daemon's whole life; a second daemon on the same root is
  refused, except that an explicit ``refrt daemon`` takes over from a daemon the thin client started on demand
  (it asks it to stop and waits for the lock).
- ``<state>/refrt-daemon.pid`` holds the pid, the socket and the mode (``explicit`` or ``on-demand``), so a
  client whose default socket is silent finds a daemon that listens elsewhere.
- Live restore: containers keep their monitors, which never depended on the daemon. On start every container is
  reconciled from disk; running ones stay untouched, those whose monitor died meanwhile are finished off.
- The zygote (:mod:`runtime.daemon.zygote`) is forked before any thread starts; ``POST /refrt/cli`` hands it
  the thin client's connections.
- A daemon started on demand stops after ``idle_timeout`` seconds without a connection; any daemon stops when its
  socket file is removed or replaced (its root was deleted, as tests do with temporary roots).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runtime.daemon import Daemon
from runtime.daemon.http import ApiError, Request, Router, UnixHTTPServer
from runtime.daemon.routes import build_router
from runtime.errors import RefrtError, UsageError
from runtime.paths import Paths

SOCKET_NAME = "refrt.sock"
LOCK_NAME = "refrt-daemon.lock"
PIDFILE_NAME = "refrt-daemon.pid"
CLI_PATH = "/refrt/cli"
TAKEOVER_WAIT = 15.0


class DaemonRunning(RefrtError):
    """Another daemon serves this root."""

    exit_code = 1


def default_socket(paths: Paths) -> Path:
    return paths.state / SOCKET_NAME


def socket_path(host: str | None, paths: Paths) -> Path:
    """``unix:///path`` (or a bare path) → the path; None → the root's default socket."""
    if not host:
        return default_socket(paths)
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://"))
    if "://" in host:
        raise UsageError(f"unsupported daemon host {host!r}: only unix:// sockets are served")
    return Path(host)


def read_pidfile(paths: Paths) -> tuple[int, str, str] | None:
    """(pid, socket path, mode) of the daemon that serves ``paths``, or None."""
    try:
        pid, sock, mode = (paths.state / PIDFILE_NAME).read_text().split("\n")[:3]
        return int(pid), sock, mode
    except (OSError, ValueError):
        return None


# -- one daemon per root ----------------------------------------------------------------------------------------
def _take_lock(paths: Paths, on_demand: bool) -> int:
    fd = os.open(paths.state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        pass
    other = read_pidfile(paths)
    if other is not None and other[2] == "on-demand" and not on_demand:
        with contextlib.suppress(ProcessLookupError):
            os.kill(other[0], signal.SIGTERM)  # a disposable daemon: an explicit one takes over
        deadline = time.monotonic() + TAKEOVER_WAIT
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                time.sleep(0.02)
    os.close(fd)
    where = f" (pid {other[0]}, unix://{other[1]})" if other else ""
    raise DaemonRunning(f"a daemon already serves the root {paths.root}{where}")


def live_restore(ctx: Any) -> tuple[int, int]:
    """Reconcile every container with the process table: (containers, still running)."""
    from runtime.container import lifecycle
    from runtime.container.state import all_containers

    containers = all_containers(ctx.paths)
    running = 0
    for c in containers:
        with contextlib.suppress(RefrtError, OSError):
            lifecycle.reconcile(ctx, c)
            running += c.state.running
    return len(containers), running


def _watch_monitors(ctx: Any, stopping: threading.Event) -> None:
    """After the restore, keep reconciling: a monitor that dies is noticed at once (lifecycle.watch_monitors)."""
    from runtime.container import lifecycle

    threading.Thread(target=lifecycle.watch_monitors, args=(ctx, stopping), name="monitor-watch",
                     daemon=True).start()


# -- the zygote and CLI sessions --------------------------------------------------------------------------------
class Zygote:
    """The daemon's end of the zygote: hands it connections, learns when their commands end, replaces it when it
    dies or when the runtime's sources change (a checkout being edited must not be served stale code)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._pending: dict[bytes, tuple[threading.Event, socket.socket]] = {}  # sid -> (done, its zygote)
        self._ids = itertools.count(1)
        self._closing = False
        self._handoffs = 0  # CLI connections between their request and their hand-off to the zygote
        self._stamp = source_stamp()
        self._sources = SourceWatch(_package_dir())
        self.control, self.pid = self._fork()
        self._started = time.monotonic()

    def _fork(self) -> tuple[socket.socket, int]:
        """Fork it from this process (only before any thread exists: see the module's doc)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if threading.active_count() > 1:
            return ours, self._exec(ours, theirs)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote
            code = 0
            try:
                ours.close()
                keep = theirs.fileno()
                os.closerange(3, keep)  # the root's lock, the ready pipe: not the zygote's to hold
                os.closerange(keep + 1, 65536)
                from runtime.daemon.zygote import serve

                serve(theirs, self.paths)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        return ours, pid

    def _exec(self, ours: socket.socket, theirs: socket.socket) -> int:
        """A fresh zygote process (its imports are its own): when this process already runs threads."""
        package_parent = str(Path(__file__).resolve().parents[2])
        code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
                "from runtime.daemon.zygote import main; main(sys.argv[1:])")
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, str(theirs.fileno()),
                                 str(self.paths.root), str(self.paths.state)], pass_fds=[theirs.fileno()])
        theirs.close()
        return proc.pid

    def start_reader(self) -> None:
        self._watch(self.control, self.pid)

    def _watch(self, control: socket.socket, pid: int) -> None:
        threading.Thread(target=self._read, args=(control, pid), name=f"zygote-{pid}", daemon=True).start()

    def _read(self, control: socket.socket, pid: int) -> None:
        """One zygote's reports (``D<sid>``: that command ended), until it exits."""
        while True:
            try:
                message = control.recv(64)
            except InterruptedError:
                continue
            except OSError:
                message = b""
            if not message:
                break
            if message.startswith(b"D"):
                with self._lock:
                    found = self._pending.pop(message[1:], None)
                if found is not None:
                    found[0].set()
        _reap(pid, timeout=1.0)
        with self._lock:  # its workers go on by themselves; the threads waiting for them need not
            ended = [sid for sid, (_, owner) in self._pending.items() if owner is control]
            events = [self._pending.pop(sid)[0] for sid in ended]
            current = control is self.control and not self._closing
        for event in events:
            event.set()
        if current:  # it died; a zygote that cannot start must not make the daemon spin: once a second at most
            time.sleep(max(0.0, self._started + 1.0 - time.monotonic()))
            self._replace("the zygote died; started another")
        control.close()

    def _replace(self, why: str, only_if_stale: bool = False) -> socket.socket | None:
        """Start a new zygote and make it the current one; returns the previous one's control socket."""
        with self._lock:
            if self._closing or (only_if_stale and source_stamp() == self._stamp):
                return None
            previous = self.control
            self._stamp = source_stamp()
            self.control, self.pid = self._fork()
            self._started = time.monotonic()
            control, pid = self.control, self.pid
        self._watch(control, pid)
        print(f"refrt daemon: {why}", file=sys.stderr, flush=True)
        return previous

    def refresh_if_stale(self) -> None:
        """New code for new commands once the runtime's sources changed; the old zygote finishes its commands.

        The sources are stat'ed only after inotify reported a change in the package's directories (a walk of
        the tree costs 8-25 ms in a slow guest, on every command's path); without inotify, every time."""
        if not self._sources.changed() or source_stamp() == self._stamp:
            return
        previous = self._replace("the runtime's sources changed; started a fresh zygote", only_if_stale=True)
        if previous is not None:
            with contextlib.suppress(OSError):
                previous.shutdown(socket.SHUT_WR)  # no more commands for it: it exits after its last one

    def begin_handoff(self) -> None:
        with self._lock:
            self._handoffs += 1

    def run_session(self, conn: socket.socket) -> None:
        """Pass the hijacked connection to the zygote and wait until its command has ended. If the zygote just
        died, the next one gets it: the client's header waits unread in the connection meanwhile."""
        event = threading.Event()
        deadline = time.monotonic() + 5.0
        try:
            while True:
                with self._lock:
                    sid = str(next(self._ids)).encode()
                    self._pending[sid] = (event, self.control)
                    try:
                        socket.send_fds(self.control, [b"S" + sid], [conn.fileno()])
                        break
                    except OSError:
                        del self._pending[sid]
                        if self._closing or time.monotonic() > deadline:
                            raise
                time.sleep(0.05)  # the reader starts the next zygote
        finally:
            with self._lock:
                self._handoffs -= 1
        event.wait()

    def end_handoff_unsent(self) -> None:
        with self._lock:
            self._handoffs -= 1

    def wait_for_handoffs(self, timeout: float = 5.0) -> None:
        """At shutdown: connections already answered with 101 still reach the zygote, or their commands would
        be lost (the client cannot tell whether they ran)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._handoffs <= 0:
                    return
            time.sleep(0.01)

    def close(self) -> None:
        """Stop: the zygote takes no more commands; it exits once its running commands are done."""
        with self._lock:
            self._closing = True
            with contextlib.suppress(OSError):
                self.control.shutdown(socket.SHUT_RDWR)  # wakes our reader, and the zygote sees EOF
        _reap(self.pid, timeout=0.5)


def _package_dir() -> str:
    return str(Path(__file__).resolve().parents[1])


class SourceWatch:
    """inotify on every directory of the runtime package: :meth:`changed` says whether anything happened there
    since the last call (always True where inotify cannot be had). A new directory is watched from the next
    change on."""

    _MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # MODIFY ATTRIB CLOSE_WRITE MOVED_FROM/TO CREATE DELETE

    def __init__(self, root: str) -> None:
        self.root = root
        self.fd = -1
        try:
            from runtime.syscalls import _libc

            fd = int(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            return
        if fd >= 0:
            self.fd = fd
            self._add_watches()

    def _add_watches(self) -> None:
        from runtime.syscalls import _libc

        for directory, subdirs, _files in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            if int(_libc.inotify_add_watch(self.fd, os.fsencode(directory), self._MASK)) < 0:
                os.close(self.fd)  # e.g. out of watches: fall back to stat'ing every time
                self.fd = -1
                return

    def changed(self) -> bool:
        if self.fd < 0:
            return True
        seen = False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                seen = True
        if seen:
            self._add_watches()
        return seen


def source_stamp() -> tuple[int, int]:
    """(number, summed mtimes) of the runtime package's .py files: changes when the checkout is edited."""
    count = total = 0
    stack = [_package_dir()]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    with contextlib.suppress(OSError):
                        total += entry.stat().st_mtime_ns
                        count += 1
    return count, total


def _reap(pid: int, timeout: float) -> None:
    """Collect a child that is exiting (no zombie left in a long-lived daemon), waiting at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid or time.monotonic() > deadline:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


def cli_route(zygote: Zygote) -> tuple[str, str, Any]:
    """``POST /refrt/cli``: the thin client's private endpoint (upgraded to the protocol of the zygote)."""

    def handle(request: Request) -> None:
        if (request.headers.get("Upgrade") or "").lower() != "refrt-cli":
            raise ApiError(400, "this endpoint needs Upgrade: refrt-cli")
        uid = _peer_uid(request.handler.connection)
        if uid not in (0, os.getuid()):
            raise ApiError(403, f"uid {uid} may not run refrt commands through this daemon")
        zygote.refresh_if_stale()
        zygote.begin_handoff()
        try:
            conn = request.hijack("application/vnd.refrt.cli")
        except BaseException:
            zygote.end_handoff_unsent()
            raise
        zygote.run_session(conn)

    return ("POST", CLI_PATH, handle)


# -- the server ---------------------------------------------------------------------------------------------------
class DaemonServer(UnixHTTPServer):
    """Counts live connections, so the idle watch knows when nobody uses the daemon."""

    def __init__(self, path: str, router: Router, *, verbose: bool = False) -> None:
        self.active = 0
        self.socket_inode = 0
        self.last_activity = time.monotonic()
        self._count_lock = threading.Lock()
        super().__init__(path, router, verbose=verbose)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            self.active += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self.active -= 1
                self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        with self._count_lock:
            return 0.0 if self.active else time.monotonic() - self.last_activity


def _watch(server: DaemonServer, path: Path, idle_timeout: float, stop: threading.Event) -> None:
    """Stop when idle too long (on-demand daemons), or when our socket file was removed or replaced."""
    inode = server.socket_inode
    while not stop.wait(0.5):
        try:
            gone = path.stat().st_ino != inode
        except OSError:
            gone = True
        idle = idle_timeout > 0 and server.idle_for() >= idle_timeout
        if gone or idle:
            why = "its socket was removed" if gone else f"idle for {idle_timeout:g}s"
            print(f"refrt daemon: stopping: {why}", file=sys.stderr, flush=True)
            server.shutdown()
            return


def serve(ctx: Any, host: str | None = None, *, verbose: bool = False, ready: threading.Event | None = None,
          idle_timeout: float = 0, on_demand: bool = False, ready_fd: int | None = None) -> int:
    """Serve the Engine API for ``ctx.paths`` on ``host`` until SIGTERM or SIGINT (or idle, see the module)."""
    paths: Paths = ctx.paths
    path = socket_path(host, paths)
    paths.state.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(paths, on_demand)
    with contextlib.suppress(OSError):
        from runtime import syscalls

        syscalls.set_process_name("refrt-daemon")  # what ps and the tests' leak checks look for
    pidfile = paths.state / PIDFILE_NAME
    stopping = threading.Event()
    zygote: Zygote | None = None
    server: DaemonServer | None = None
    try:
        pidfile.write_text(f"{os.getpid()}\n{path}\n{'on-demand' if on_demand else 'explicit'}\n")
        zygote = Zygote(paths)  # first: it imports the command line while we restore and load the API
        total, running = live_restore(ctx)
        _watch_monitors(ctx, stopping)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        router = _api_router(Daemon(paths=paths, ctx=ctx))
        router.add(*cli_route(zygote))
        server = DaemonServer(str(path), router, verbose=verbose)
        server.socket_inode = path.stat().st_ino
        zygote.start_reader()
        srv = server

        def stop(_signum: int, _frame: object) -> None:
            threading.Thread(target=srv.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        threading.Thread(target=_watch, args=(server, path, idle_timeout, stopping), daemon=True).start()
        print(f"refrt daemon: pid {os.getpid()} serving {paths.root} on unix://{path} "
              f"({total} containers restored, {running} running)", file=sys.stderr, flush=True)
        if ready is not None:
            ready.set()
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        server.serve_forever(poll_interval=0.5)
    finally:
        stopping.set()
        if server is not None:
            server.server_close()
            _unlink_if_ours(path, server)
        if zygote is not None:
            zygote.wait_for_handoffs()
            zygote.close()
        if (read_pidfile(paths) or (0,))[0] == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()
        os.close(lock)
    return 0


def _api_router(daemon: Daemon) -> Router:
    """The Engine API's routes; if a part of it cannot load, the daemon still serves the CLI (which every refrt
    command goes through) and says why in its log."""
    try:
        return build_router(daemon)
    except Exception:
        import traceback

        print("refrt daemon: the Engine API is not served, it failed to load:", file=sys.stderr)
        traceback.print_exc()
        return Router()


def _unlink_if_ours(path: Path, server: DaemonServer) -> None:
    """Remove the socket file unless another daemon already replaced it."""
    with contextlib.suppress(OSError):
        if path.stat().st_ino == server.socket_inode:
            path.unlink()

