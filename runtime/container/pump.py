"""The monitor's copy loop: the container's output to its log, to the CLI that started it (``run`` in the
foreground, with its stdin and detach keys) and to late ``attach`` clients (:mod:`runtime.container.attach`),
until the init exits and its output is drained.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
from dataclasses import dataclass
from typing import Any

from runtime.container.attach import AttachHub, DetachScanner, write_all
from runtime.container.logs import LogWriter

_READ_SIZE = 65536


@dataclass
class Attach:
    """The CLI's descriptors a foreground container is connected to (None: not attached)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    detach_keys: bytes = b""  # read on a -t stdin: the CLI detaches, the container goes on


class OutputPump:
    """Copies container output to the log and the attached CLI until the init exits and output is drained."""

    def __init__(
        self,
        log: LogWriter,
        attach: Attach,
        sources: dict[int, str],
        feed: int | None,
        pty_master: int | None,
        close_after_start: list[int],
    ) -> None:
        self.log = log
        self.attach = attach
        self.sources = sources
        self.feed = feed
        self.pty_master = pty_master
        self.close_after_start = close_after_start
        self.hub: AttachHub | None = None
        self.on_detach: Any = None
        self._scanner = DetachScanner(attach.detach_keys)
        self._feed_is_tty = feed is not None and os.isatty(feed)  # asked now: a hung-up terminal says no
        self._sel: selectors.BaseSelector | None = None

    def use_pty(self, master: int) -> None:
        self.sources = {master: "stdout"}
        self.pty_master = master

    def pump_until_exit(self, pid: int) -> int:
        for fd in self.close_after_start:
            os.close(fd)
        sel = selectors.PollSelector()  # poll, unlike epoll, takes regular files and /dev/null
        self._sel = sel
        if self.hub is not None:
            self.hub.register(sel)
        for fd in self.sources:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if self.feed is not None:
            sel.register(self.feed, selectors.EVENT_READ)
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ)
        status: int | None = None
        open_sources = set(self.sources)
        while open_sources:
            timeout = None if status is None else 0.2
            events = sel.select(timeout)
            if not events and status is not None:
                break  # init is gone and nothing more arrives (a pty may never report EOF)
            for key, _ in events:
                fd = int(key.fd)
                if fd == pidfd:
                    status = os.waitpid(pid, 0)[1]
                    sel.unregister(pidfd)
                    os.close(pidfd)
                elif fd == self.feed:
                    self._feed_stdin(sel)
                elif self.hub is not None and self.hub.owns(fd):
                    with contextlib.suppress(OSError, ValueError, KeyError):  # never let a client end the container
                        self.hub.handle(fd, sel)
                    break  # it may have closed or reused descriptors this batch names: poll again (no event lost)
                elif fd not in open_sources:
                    continue  # closed earlier in this batch (an attach client that was dropped)
                elif not self._copy(fd):
                    sel.unregister(fd)
                    open_sources.discard(fd)
                    os.close(fd)
        if status is None:
            status = os.waitpid(pid, 0)[1]
            sel.unregister(pidfd)
            os.close(pidfd)
        sel.close()
        self.log.close()
        return status

    def _copy(self, fd: int) -> bool:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno == errno.EIO:  # pty master: the last slave was closed
                return False
            raise
        if not data:
            return False
        stream = self.sources[fd]
        self.log.write(stream, data)
        target = self.attach.stderr if stream == "stderr" else self.attach.stdout
        if target is not None:
            try:
                write_all(target, data)
            except OSError:  # the CLI went away: keep logging, stop forwarding
                self.attach.stdout = self.attach.stderr = None
        if self.hub is not None and self._sel is not None:
            self.hub.broadcast(stream, data, self._sel)
        return True

    def _feed_stdin(self, sel: selectors.BaseSelector) -> None:
        assert self.feed is not None and self.pty_master is not None
        try:
            data = os.read(self.feed, _READ_SIZE)
        except OSError:
            data = b""
        if data:
            data, detached = self._scanner.feed(data)
            if data:
                write_all(self.pty_master, data)
            if detached:
                sel.unregister(self.feed)
                self.feed = None
                if self.on_detach is not None:
                    self.on_detach()
            return
        sel.unregister(self.feed)
        self.feed = None
        if not self._feed_is_tty:  # a pipe's end (an API client): end-of-file for the terminal's reader
            write_all(self.pty_master, b"\x04")
        # a terminal that hung up: the container goes on, as docker's does
