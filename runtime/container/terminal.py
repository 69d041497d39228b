"""Pseudo-terminals for ``-t``: the container gets a real pty slave as its controlling terminal.

The monitor keeps the master; our side of the user's terminal is put in raw mode so keys (^C, ^D, arrows) reach
the container's line discipline untouched, and restored however the CLI ends.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import tty
from collections.abc import Iterator
from contextlib import contextmanager


def open_pty(size_from: int | None = None) -> tuple[int, int]:
    """A new (master, slave) pair, with the window size of ``size_from`` when that is a terminal."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    if size_from is not None and os.isatty(size_from):
        copy_window_size(size_from, slave)
    return master, slave


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
