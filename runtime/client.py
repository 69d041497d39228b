"""The thin ``refrt`` client: hand the command to the root's daemon, relay signals, exit with the command's code.

Why: a command used to pay for an interpreter with ``site`` and the runtime's imports (about 55 ms) before any
work. This module imports nothing beyond what the interpreter has loaded already and two built-in modules
(``_socket``, ``_signal``; their wrappers ``socket`` and ``signal`` import ``enum`` and ``selectors``), so under
``python3 -I -S`` a command costs little more than the interpreter's start. The daemon's zygote runs the real
command line in a forked, pre-imported worker (protocol: :mod:`runtime.daemon.zygote`).

Which daemon: ``-H``/``--host`` or ``REFRT_HOST`` (``unix://PATH``), else the default socket of the root chosen by
``--root``/``--state``/``REFRT_ROOT``/``REFRT_STATE`` (``<state>/refrt.sock``), else the socket named in the root's
daemon pidfile (a ``refrt daemon --host`` elsewhere). When none listens, the client starts one on demand: detached
(setsid), under ``<state>/refrt-daemon-start.lock`` so concurrent clients start one daemon, and it waits on a pipe
until the daemon says it is ready. That daemon stops by itself after ``REFRT_DAEMON_IDLE`` seconds (default 60)
without connections. An explicit host that does not answer is an error, not a reason to start one.

``refrt daemon``, ``--no-daemon`` and ``REFRT_NO_DAEMON=1`` run the command line in this process, as before.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stub; the built-in under the signal module
import _socket
import os
import sys

PROTOCOL = b"refrt-cli-1"
DEFAULT_ROOT = "/var/lib/refrt"
DEFAULT_STATE = "/run/refrt"
SOCKET_NAME = "refrt.sock"
PIDFILE_NAME = "refrt-daemon.pid"
START_LOCK_NAME = "refrt-daemon-start.lock"
DAEMON_LOCK_NAME = "refrt-daemon.lock"
LOG_NAME = "refrt-daemon.log"
DEFAULT_IDLE = "60"
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH,
             _signal.SIGUSR1, _signal.SIGUSR2)
_UPGRADE = (b"POST /refrt/cli HTTP/1.1\r\nHost: refrt\r\nConnection: Upgrade\r\nUpgrade: refrt-cli\r\n"
            b"Content-Length: 0\r\n\r\n")
_WITH_VALUE = ("--root", "--state", "--config", "-H", "--host")


class ClientError(Exception):
    """A one-line failure of the client itself (exit 125, as for every refrt failure)."""


def _globals(argv: list[str]) -> tuple[dict[str, str], str | None]:
    """The global options before the command word, and the command word."""
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            return found, word
        name, eq, value = word.partition("=")
        if name in _WITH_VALUE:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            found[name.replace("-H", "--host") if name == "-H" else name] = value
        elif word == "--no-daemon":
            found[word] = "1"
        i += 1
    return found, None


def directory_problem(path: str, *, writable: bool = True) -> str | None:
    """Why ``path`` cannot serve as one of refrt's directories, or None: it must be non-empty and, where it
    exists, a (writable) directory; where it does not, its nearest existing ancestor must be one, so it can be
    made. The one check of every directory option, used here (before a daemon is looked for) and by
    :meth:`runtime.paths.Paths.resolve` (lean on purpose: the client imports nothing heavy)."""
    if not path:
        return "must not be empty (leave the option out for the default)"
    probe = os.path.abspath(path)
    while True:
        try:
            is_dir = os.path.isdir(probe) if os.path.lexists(probe) else None
        except OSError as exc:
            return f"{probe}: {exc.strerror}"
        if is_dir is None:  # missing: it will be made under the first ancestor that exists
            parent = os.path.dirname(probe)
            if parent == probe:
                return f"{probe}: does not exist"
            probe = parent
            continue
        if not is_dir:
            return "is not a directory" if probe == os.path.abspath(path) else f"{probe} is not a directory"
        if writable and not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not writable"
        return None


def directory_option(option: str, variable: str, value: str | None, *, writable: bool = True) -> str | None:
    """The directory named by ``option`` (None: not given), else by ``variable`` (unset or empty: not given);
    ValueError with the one-line reason when it cannot serve (:func:`directory_problem`)."""
    source = option
    if value is None:
        value, source = os.environ.get(variable) or None, variable
    if value is None:
        return None
    problem = directory_problem(value, writable=writable)
    if problem:
        raise ValueError(f"invalid {source} {value!r}: {problem}")
    return value


def _check_options(options: dict[str, str]) -> None:
    """Refuse an unusable ``--root``/``--state``/``--config`` before anything else: ``--root ''`` must not reach
    the default root's daemon."""
    for name, variable in (("--root", "REFRT_ROOT"), ("--state", "REFRT_STATE"), ("--config", "REFRT_CONFIG")):
        try:
            directory_option(name, variable, options.get(name), writable=name != "--config")
        except ValueError as exc:
            raise ClientError(str(exc)) from None


def _root_and_state(options: dict[str, str]) -> tuple[str, str]:
    """The root and state directories exactly as :class:`runtime.paths.Paths` resolves them."""
    root = os.path.abspath(options.get("--root") or os.environ.get("REFRT_ROOT") or DEFAULT_ROOT)
    state = options.get("--state") or os.environ.get("REFRT_STATE")
    if state:
        return root, os.path.abspath(state)
    return root, DEFAULT_STATE if root == DEFAULT_ROOT else os.path.join(root, "run")


def _host_path(host: str) -> str:
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if "://" in host:
        raise ClientError(f"unsupported daemon host {host!r}: only unix:// sockets are served")
    return host


def connected(sock: _socket.socket, path: str) -> bool:
    """Connect ``sock`` to the unix socket ``path``; False, with ``sock`` closed, when nothing listens there. The
    client finds its daemon with it, a CLI worker its container's monitor (:mod:`runtime.container.attach`)."""
    try:
        sock.connect(path)
        return True
    except OSError:
        sock.close()
        return False


def _connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return sock if connected(sock, path) else None


def _connect_root(state: str) -> _socket.socket | None:
    """The root's default socket, else the one its daemon's pidfile names."""
    sock = _connect(os.path.join(state, SOCKET_NAME))
    if sock is not None:
        return sock
    try:
        with open(os.path.join(state, PIDFILE_NAME)) as f:
            other = f.read().split("\n")[1]
    except (OSError, IndexError):
        return None
    return _connect(other) if other else None


def _start_daemon(options: dict[str, str], state: str) -> _socket.socket:
    """Start the root's daemon unless another client just did (the start lock serializes them)."""
    import fcntl

    os.makedirs(state, exist_ok=True)
    lock = os.open(os.path.join(state, START_LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failure = "it did not start"
        for _ in range(3):
            sock = _connect_root(state)
            if sock is not None:
                return sock
            if not _daemon_alive(state):
                try:
                    _spawn_daemon(options, state)
                except ClientError as exc:  # it lost the root's lock to another daemon, or failed
                    failure = str(exc)
            sock = _wait_for_daemon(state)  # ours, or one that holds the root but does not listen yet
            if sock is not None:
                return sock
        raise ClientError(failure)
    finally:
        os.close(lock)


def _daemon_alive(state: str) -> bool:
    """Whether a daemon holds the root's lock (it may still be starting: live restore runs before it listens).
    Read from /proc/locks: trying the lock ourselves could make a daemon that starts at that moment fail."""
    try:
        st = os.stat(os.path.join(state, DAEMON_LOCK_NAME))
        with open("/proc/locks") as f:
            held = f.read()
    except OSError:
        return False
    key = f" {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    return any(key in line and "FLOCK" in line and "->" not in line for line in held.splitlines())


def _wait_for_daemon(state: str, timeout: float = 60) -> _socket.socket | None:
    """The root's daemon's connection once it listens; None when no daemon holds the root any more."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        sock = _connect_root(state)
        if sock is not None:
            return sock
        if not _daemon_alive(state):
            time.sleep(0.02)  # one daemon may be handing the root over to another
            if not _daemon_alive(state):
                return _connect_root(state)
        if time.monotonic() > deadline:
            raise ClientError(f"a daemon holds {state} but does not listen after {timeout:g}s")
        time.sleep(0.005)


def _spawn_daemon(options: dict[str, str], state: str) -> None:
    ready_r, ready_w = os.pipe()
    log_path = os.path.join(state, LOG_NAME)
    argv = [sys.executable, "-I", "-S", os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")]
    for name in ("--root", "--state", "--config"):
        if name in options:
            argv += [name, options[name]]
    argv += ["daemon", "--on-demand", "--idle-timeout", os.environ.get("REFRT_DAEMON_IDLE") or DEFAULT_IDLE,
             "--ready-fd", str(ready_w)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - becomes the daemon
        try:
            os.setsid()
            if os.fork() == 0:
                os.close(ready_r)
                os.set_inheritable(ready_w, True)
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.chdir("/")
                os.execv(argv[0], argv)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.waitpid(pid, 0)
    said = b""
    while True:
        chunk = os.read(ready_r, 64)
        if not chunk:
            break
        said += chunk
    os.close(ready_r)
    if b"ready" not in said:
        raise ClientError(f"the daemon did not start: {_last_line(log_path)} (see {log_path})")


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def _upgrade(sock: _socket.socket) -> bytes | None:
    """Ask for the CLI protocol; None when the connection closed first (a daemon that was just stopping)."""
    try:
        sock.sendall(_UPGRADE)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                return None
            answer += chunk
    except (BrokenPipeError, ConnectionResetError):
        return None
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        message = rest.decode(errors="replace").strip()
        if '"message"' in message:
            message = message.split('"message"', 1)[1].strip(' :}"\n').rstrip('"')
        raise ClientError(f"the daemon refused the command ({head.splitlines()[0].decode(errors='replace')}): "
                          f"{message}")
    return rest


def _stdio() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _send_header(sock: _socket.socket, argv: list[str]) -> None:
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    mask = os.umask(0o22)
    os.umask(mask)
    fields = [PROTOCOL, os.fsencode(cwd), b"%o" % mask, b"%d" % len(argv), *(os.fsencode(a) for a in argv),
              *(k + b"=" + v for k, v in os.environb.items())]
    payload = b"\0".join(fields)
    message = len(payload).to_bytes(4, "big") + payload
    rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in _stdio())
    sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    if sent < len(message):
        sock.sendall(message[sent:])


def _wait(sock: _socket.socket, pending: bytes) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 - contextlib costs a millisecond of imports
            sock.send(bytes((signum,)))
        except OSError:
            pass

    for signum in FORWARDED:
        _signal.signal(signum, forward)
    answer = pending
    while len(answer) < 5:
        chunk = sock.recv(64)
        if not chunk:
            raise ClientError("the daemon lost the command (its worker ended without an exit code)")
        answer += chunk
    value = int.from_bytes(answer[1:5], "big", signed=True)
    return 128 + value if answer[:1] == b"S" else value


def run_in_process(argv: list[str]) -> int:
    from runtime.cli import main as cli_main

    return cli_main(argv)


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    options, command = _globals(words)
    no_daemon = "--no-daemon" in options or os.environ.get("REFRT_NO_DAEMON", "").lower() in ("1", "true", "yes")
    if no_daemon or command == "daemon":
        return run_in_process(words)
    try:
        _check_options(options)
        host = options.get("--host") or os.environ.get("REFRT_HOST")
        root, state = _root_and_state(options)
        if not host:  # the command is for the root whose daemon we reach: say which, whatever answers
            os.environ["REFRT_ROOT"], os.environ["REFRT_STATE"] = root, state
        for _ in range(5):
            if host:
                sock = _connect(_host_path(host))
                if sock is None:
                    raise ClientError(f"cannot connect to the refrt daemon at {host}: is it running?")
            else:
                sock = _connect_root(state) or _start_daemon(options, state)
            try:
                pending = _upgrade(sock)
                if pending is None:
                    continue  # it was stopping (idle): start or find the next one
                try:
                    _send_header(sock, words)
                except OSError:
                    continue  # it went away before it took the command: nothing ran
                return _wait(sock, pending)
            finally:
                sock.close()
        raise ClientError("the daemon keeps closing the connection")
    except ClientError as exc:
        sys.stderr.write(f"refrt: {exc}\n")
        return 125
    except OSError as exc:  # no state directory of ours (not root?), no pipe, no fork ...
        sys.stderr.write(f"refrt: cannot reach or start the daemon: {exc}\n")
        return 125
