"""Pseudo-terminals for ``-t``: the container gets a real pty slave as its controlling terminal.

The monitor keeps the master; our side of the user's terminal is put in raw mode so keys (^C, ^D, arrows) reach
the container's line discipline untouched, and restored however the CLI ends.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager

# asm-generic ioctl numbers (x86_64, arm64, riscv64); Python's termios does not export them.
_TIOCGPTN = 0x80045430
_TIOCSPTLCK = 0x40045431


def copy_window_size(source: int, target: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` for the block, when it is a terminal (otherwise nothing happens)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def window_size(fd: int | None) -> tuple[int, int]:
    """(rows, columns) of the terminal ``fd``; (0, 0) when it is not one."""
    if fd is None or not os.isatty(fd):
        return 0, 0
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0)))
        return rows, cols
    except OSError:
        return 0, 0


def open_pty_in_container(size: tuple[int, int]) -> tuple[int, int]:
    """(master, slave) from the container's own devpts instance (/dev/ptmx inside), so ``tty`` there names it.

    Called by the container's init (or exec'd process) after pivot_root; the master then travels to the monitor
    (or CLI) over a unix socket, as runc's console socket does.
    """
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
    number = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, struct.pack("I", 0)))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    if size != (0, 0):
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    return master, slave


def send_fd(sock: socket.socket, fd: int) -> None:
    socket.send_fds(sock, [b"pty"], [fd])


def receive_fd(sock: socket.socket) -> int | None:
    """The descriptor sent by :func:`send_fd`, or None when the sender went away first."""
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else None
