"""Terminals and attaching: ``attach``, and the foreground half of ``run``/``start -a`` (docker's behaviour).

What users notice, each as docker 20.10 does it:
- ``-it`` needs a terminal on stdin: otherwise "the input device is not a TTY" (exit 1), before anything runs.
- With ``-t`` the window size follows the client: the CLI (or the thin client, which forwards SIGWINCH to its
  worker) passes each new size to the container's monitor, which sets it on the pty master (TIOCSWINSZ).
- Detach keys (``--detach-keys``, default ctrl-P ctrl-Q): ``run`` exits 0 quietly, ``attach`` and ``exec`` say
  "read escape sequence" and exit 1. The container goes on; so it does when the client's terminal hangs up.
- Signals are proxied to the container (``--sig-proxy``, default true) only without ``-t``: with a terminal,
  ^C is a byte for the container's own line discipline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from runtime.errors import RefrtError

if TYPE_CHECKING:
    from runtime.cli import Context
    from runtime.container.state import Container

PROXIED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class NotATerminal(RefrtError):
    """``-it`` with stdin that is not a terminal (docker's CLI refuses it with exit 1)."""

    exit_code = 1


def require_terminal(tty: bool, interactive: bool) -> None:
    if tty and interactive and not os.isatty(0):
        raise NotATerminal("the input device is not a TTY")


def window() -> tuple[int, int]:
    from runtime.container import terminal

    return terminal.window_size(0) if os.isatty(0) else terminal.window_size(1)


def run_attached(ctx: Context, container: Container, *, stdin: bool, tty: bool, detach_keys: str = "",
                 sig_proxy: bool = True) -> int:
    """Foreground: the monitor writes the container's output straight to our stdout/stderr (and reads our stdin);
    we wait for the exit code, pass window sizes on, and proxy signals without a terminal."""
    from runtime.container import attach, lifecycle, monitor, terminal

    keys = attach.parse_detach_keys(detach_keys) if (tty and stdin) else b""
    link = monitor.Attach(stdin=0 if stdin else None, stdout=1, stderr=2, detach_keys=keys)
    sys.stdout.flush()
    raw = terminal.raw_mode(0) if (tty and stdin) else contextlib.nullcontext()
    proxied = set(PROXIED) if (sig_proxy and not tty) else set()
    with raw:
        # held back until the handlers know the pid, then delivered to the container (docker's sig-proxy)
        signal.pthread_sigmask(signal.SIG_BLOCK, proxied | {signal.SIGWINCH})
        try:
            handle = lifecycle.start(ctx, container, link)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, proxied | {signal.SIGWINCH})
            raise
        pid = container.state.pid

        def forward(signum: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

        for signum in proxied:
            signal.signal(signum, forward)
        if tty:
            signal.signal(signal.SIGWINCH, lambda _s, _f: attach.send_resize(container.directory, *window()))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, proxied | {signal.SIGWINCH})
        try:
            event = handle.next_event()
            if event.get("event") == "detached":
                return 0
            if event.get("remove_error"):
                print(f"refrt: {event['remove_error']}", file=sys.stderr)
            return int(event.get("code", 0))
        except monitor.MonitorLost:
            if container.directory.exists():
                lifecycle.reconcile(ctx, container)
                return container.state.exit_code
            return 125
        finally:
            handle.close()


def cmd_attach(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import attach, lifecycle, terminal
    from runtime.container.state import find

    container = find(ctx.paths, args.container)
    lifecycle.reconcile(ctx, container)
    if not container.state.running:
        raise NotATerminal("You cannot attach to a stopped container, start it first")
    if container.state.paused:
        raise NotATerminal("You cannot attach to a paused container, unpause it first")
    tty = container.spec.tty
    use_stdin = not args.no_stdin and container.spec.interactive
    require_terminal(tty, use_stdin)
    keys = attach.parse_detach_keys(args.detach_keys)
    sock = attach.connect(container.directory)
    if sock is None:
        lifecycle.reconcile(ctx, container)
        return container.state.exit_code
    fds = ([0] if use_stdin else []) + [1, 2]
    request: dict[str, Any] = {"stdin": use_stdin, "stdout": True, "stderr": True, "detach_keys": keys.hex()}
    if tty:
        request["resize"] = list(window())
    sys.stdout.flush()
    with sock, (terminal.raw_mode(0) if (tty and use_stdin) else contextlib.nullcontext()):
        attach.send_request(sock, request, fds)
        code = _serve(sock, container.state.pid, tty, args.sig_proxy)
    if code is None:
        print("read escape sequence", file=sys.stderr)
        return 1
    if code < 0:  # the monitor went away without a word
        lifecycle.reconcile(ctx, container)
        return container.state.exit_code if not container.state.running else 0
    return code


def _serve(sock: Any, pid: int, tty: bool, sig_proxy: bool) -> int | None:
    """Until the monitor tells: the exit code, None on detach, -1 when it closed the connection."""

    def resize(_s: int, _f: object) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"resize": list(window())}).encode() + b"\n")

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    if tty:
        signal.signal(signal.SIGWINCH, resize)
    elif sig_proxy:
        for signum in PROXIED:
            signal.signal(signum, forward)
    buffer = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            return -1
        buffer += chunk
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            event = json.loads(line)
            if event.get("event") == "detached":
                return None
            if event.get("event") == "exited":
                return int(event.get("code", 0))


def register(sub: Any) -> None:
    p = sub.add_parser("attach", help="attach local standard input, output, and error streams to a running "
                       "container", allow_abbrev=False)
    p.set_defaults(func=cmd_attach)
    p.add_argument("--detach-keys", default="",
                   help="override the key sequence for detaching a container (default ctrl-p,ctrl-q)")
    p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
    p.add_argument("--sig-proxy", action="store_true", default=True,
                   help="proxy all received signals to the process (without -t; default true, --sig-proxy=false)")
    p.add_argument("container")
