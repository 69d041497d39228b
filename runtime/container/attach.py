"""Attaching to a running container, as ``docker attach`` does: the monitor's attach socket, detach keys, resize.

Why a socket: the monitor is the only process that holds the container's pty master (with ``-t``) or the write
end of its stdin (``-d -i``), and it outlives every CLI. A late ``attach`` (or a ``run -it`` that wants to pass
a window size on) connects to ``attach.sock`` in the container's directory. The first message is one JSON line
with the client's stdin/stdout/stderr attached (SCM_RIGHTS): the monitor then writes the container's output
straight to the client's descriptors and reads the client's input itself, so no byte is relayed twice. Later
lines carry window sizes. The monitor answers ``{"event": "detached"}`` when it reads the detach keys, and
``{"event": "exited", "code": N}`` when the container ends. A client that hangs up (socket EOF, EIO on its
terminal) is dropped; the container goes on, as docker's does.

Socket paths are limited to 107 bytes and a container directory can be longer: both ends reach the socket
through ``/proc/self/fd/<dirfd>/attach.sock``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import socket
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.client import connected
from runtime.errors import UsageError

SOCKET_NAME = "attach.sock"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_CTRL = {**{chr(c): c - 96 for c in range(ord("a"), ord("z") + 1)},
         "@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}  # fmt: skip


def parse_detach_keys(spec: str) -> bytes:
    """docker's ``--detach-keys``: comma-separated keys, each one character or ``ctrl-<a-z @ [ \\ ] ^ _>``."""
    keys = bytearray()
    for item in (spec or DEFAULT_DETACH_KEYS).split(","):
        if len(item) == 1:
            keys.append(ord(item))
        elif item.lower().startswith("ctrl-") and len(item) == 6 and item[5].lower() in _CTRL:
            keys.append(_CTRL[item[5].lower()])
        else:
            raise UsageError(f"Invalid detach keys ({spec}) provided")
    return bytes(keys)


class DetachScanner:
    """Finds the detach sequence in a stream of input. Bytes that may start the sequence are held back until the
    next byte tells (then they go on, as docker's escape proxy does)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, whether the sequence was read)."""
        out = bytearray()
        for byte in data:
            if not self.keys:
                out.append(byte)
                continue
            if byte == self.keys[len(self.held)]:
                self.held += bytes((byte,))
                if len(self.held) == len(self.keys):
                    self.held = b""
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
            if byte == self.keys[0]:
                self.held = bytes((byte,))
            else:
                out.append(byte)
        return bytes(out), False


def set_window(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _at(directory: Path) -> tuple[int, str]:
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return dirfd, f"/proc/self/fd/{dirfd}/{SOCKET_NAME}"


def listen(directory: Path) -> socket.socket:
    """The monitor's listening socket in ``directory`` (a stale one from a dead monitor is replaced)."""
    dirfd, path = _at(directory)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME, dir_fd=dirfd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.bind(path)
        sock.listen(16)
        sock.setblocking(False)
        return sock
    finally:
        os.close(dirfd)


def connect(directory: Path) -> socket.socket | None:
    """A connection to the container's monitor; None when nothing listens (the container is not running)."""
    try:
        dirfd, path = _at(directory)
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        return sock if connected(sock, path) else None
    finally:
        os.close(dirfd)


def send_request(sock: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    line = json.dumps(request).encode() + b"\n"
    if fds:
        socket.send_fds(sock, [line], fds)
    else:
        sock.sendall(line)


def send_resize(directory: Path, rows: int, cols: int) -> None:
    """Pass a window size to the container's pty (one short connection; nothing happens if none listens)."""
    sock = connect(directory)
    if sock is None:
        return
    with sock, contextlib.suppress(OSError):
        send_request(sock, {"resize": [rows, cols]}, [])


@dataclass
class _Client:
    sock: socket.socket
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    scanner: DetachScanner = field(default_factory=lambda: DetachScanner(b""))
    buffer: bytes = b""


class AttachHub:
    """The monitor's side: accepts attach clients and serves them from the monitor's pump loop.

    ``input_fd`` is where client input goes (the pty master, or the write end of the stdin pipe of a ``-d -i``
    container); -1 when the container takes no input. ``tty``: the container's output is one stream.
    """

    def __init__(self, directory: Path, input_fd: int, pty_master: int | None) -> None:
        self.listener = listen(directory)
        self.path = directory / SOCKET_NAME
        self.input_fd = input_fd
        self.pty_master = pty_master
        self.clients: dict[int, _Client] = {}  # by socket fd
        self.by_stdin: dict[int, _Client] = {}

    def owns(self, fd: int) -> bool:
        return fd == self.listener.fileno() or fd in self.clients or fd in self.by_stdin

    def register(self, sel: selectors.BaseSelector) -> None:
        sel.register(self.listener, selectors.EVENT_READ)

    def handle(self, fd: int, sel: selectors.BaseSelector) -> None:
        if fd == self.listener.fileno():
            self._accept(sel)
        elif fd in self.clients:
            self._read_control(self.clients[fd], sel)
        elif fd in self.by_stdin:
            self._read_input(self.by_stdin[fd], sel)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.setblocking(True)
        conn.settimeout(5)
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
        except OSError:
            conn.close()
            return
        conn.settimeout(None)
        line, _, rest = data.partition(b"\n")
        try:
            request = json.loads(line)
        except ValueError:
            request = {}
        fds = list(fds)
        client = _Client(conn, buffer=rest)
        for name in ("stdin", "stdout", "stderr"):
            if request.get(name) and fds:
                setattr(client, name, fds.pop(0))
        for fd in fds:
            os.close(fd)
        if request.get("resize"):
            self._resize(request["resize"])
        if client.stdin is None and client.stdout is None and client.stderr is None:
            conn.close()  # a resize-only request
            return
        client.scanner = DetachScanner(bytes.fromhex(request.get("detach_keys", "")))
        self.clients[conn.fileno()] = client
        sel.register(conn, selectors.EVENT_READ)
        if client.stdin is not None and self.input_fd >= 0:
            self.by_stdin[client.stdin] = client
            sel.register(client.stdin, selectors.EVENT_READ)

    def _resize(self, size: Any) -> None:
        if self.pty_master is not None and isinstance(size, list) and len(size) == 2:
            set_window(self.pty_master, int(size[0]), int(size[1]))

    def _read_control(self, client: _Client, sel: selectors.BaseSelector) -> None:
        try:
            data = client.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop(client, sel)
            return
        client.buffer += data
        while b"\n" in client.buffer:
            line, _, client.buffer = client.buffer.partition(b"\n")
            with contextlib.suppress(ValueError):
                self._resize(json.loads(line).get("resize"))

    def _read_input(self, client: _Client, sel: selectors.BaseSelector) -> None:
        assert client.stdin is not None
        try:
            data = os.read(client.stdin, 65536)
        except OSError:
            data = b""
        if not data:  # the client's input ended or hung up: it stops typing, the container goes on
            sel.unregister(client.stdin)
            del self.by_stdin[client.stdin]
            return
        data, detached = client.scanner.feed(data)
        if data:
            with contextlib.suppress(OSError):
                write_all(self.input_fd, data)
        if detached:
            self._tell(client, {"event": "detached"})
            self._drop(client, sel)

    def broadcast(self, stream: str, data: bytes, sel: selectors.BaseSelector) -> None:
        for client in list(self.clients.values()):
            target = client.stderr if stream == "stderr" else client.stdout
            if target is None:
                continue
            try:
                write_all(target, data)
            except OSError:  # its terminal hung up
                self._drop(client, sel)

    def _tell(self, client: _Client, event: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            client.sock.sendall(json.dumps(event).encode() + b"\n")

    def _drop(self, client: _Client, sel: selectors.BaseSelector | None) -> None:
        self.clients.pop(client.sock.fileno(), None)
        if client.stdin is not None and self.by_stdin.pop(client.stdin, None) is not None and sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(client.stdin)
        if sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(client.sock)
        for fd in (client.stdin, client.stdout, client.stderr):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        client.sock.close()

    def close(self, code: int) -> None:
        """The container ended: every client learns its exit code; the socket goes."""
        for client in list(self.clients.values()):
            self._tell(client, {"event": "exited", "code": code})
            self._drop(client, None)
        self.listener.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1)
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        view = view[written:]
