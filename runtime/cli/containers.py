"""Container commands with docker's syntax: run, create, start, exec, stop, kill, rm, wait, pause, unpause,
restart, rename, container prune; the command table of ``ps``, ``logs``, ``inspect``, ``top``, ``stats``
(:mod:`runtime.cli.listing`) and the run flags (:mod:`runtime.container.createflags`, shared with the daemon)
registered with them.

The work is done by ``runtime.container``. Exit codes follow docker: 125 when refrt fails, 126/127 when the
command cannot be invoked / found, otherwise the container's own code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING, Any

from runtime.cli import runflags
from runtime.cli.listing import cmd_inspect, cmd_logs, cmd_ps, cmd_stats, cmd_top
from runtime.container.createflags import add_create_flags
from runtime.container.createspec import apply_volumes_from, read_env_file, spec_from_args
from runtime.container.links import apply_links
from runtime.container.query import matches
from runtime.container.signals import parse_signal
from runtime.errors import NotFoundError, RefrtError, UsageError

if TYPE_CHECKING:  # the container machinery is imported by the handlers, so ``--help`` stays fast
    from runtime.cli import Context
    from runtime.container.state import Container


def _create(ctx: Context, args: argparse.Namespace) -> Container:
    from runtime.container import lifecycle

    runflags.check_platform(args.platform)
    runflags.claim_cidfile(args.cidfile)
    runflags.check_image_depth(ctx, args.image)
    spec = spec_from_args(args)
    apply_links(ctx, spec, args.link)
    apply_volumes_from(ctx, spec)
    container = lifecycle.create(ctx, spec)
    runflags.write_cidfile(args.cidfile, container.id)
    _event(ctx, container, "create")
    return container


def _event(ctx: Context, c: Container, action: str, **attributes: str) -> None:
    """One line of ``refrt events`` (runtime.container.events)."""
    from runtime.container.events import container_event

    container_event(ctx.paths.root, c, action, **attributes)


# ---------------------------------------------------------------------------------------------- commands
def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    container = _create(ctx, args)
    print(container.id)
    return 0


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.interactive import require_terminal, run_attached
    from runtime.container import lifecycle
    from runtime.container.attach import parse_detach_keys

    if not args.detach:
        require_terminal(args.tty, args.interactive)
        parse_detach_keys(args.detach_keys)
    container = _create(ctx, args)
    if args.detach:
        handle = lifecycle.start(ctx, container, None)
        handle.close()
        print(container.id)
        return 0
    return run_attached(ctx, container, stdin=args.interactive, tty=args.tty, detach_keys=args.detach_keys,
                        sig_proxy=args.sig_proxy)


def cmd_start(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle
    from runtime.container.state import find

    failed = 0
    for ref in args.containers:
        try:
            container = find(ctx.paths, ref)
            if args.attach:
                from runtime.cli.interactive import require_terminal, run_attached

                require_terminal(container.spec.tty, args.interactive)
                return run_attached(ctx, container, stdin=args.interactive, tty=container.spec.tty,
                                    detach_keys=args.detach_keys)
            lifecycle.start(ctx, container, None).close()
            print(ref)
        except RefrtError as exc:
            if len(args.containers) == 1:
                raise
            print(f"refrt: {exc}", file=sys.stderr)
            failed = 1
    return failed


def _for_each(args: argparse.Namespace, ctx: Context, action: Any, echo: bool = True) -> int:
    """Apply ``action`` to every named container; report errors per name, exit 1 if any failed (docker)."""
    from runtime.container.state import find

    failed = 0
    for ref in args.containers:
        try:
            action(find(ctx.paths, ref))
            if echo:
                print(ref)
        except RefrtError as exc:
            print(f"Error response from daemon: {exc}" if isinstance(exc, NotFoundError) else f"refrt: {exc}",
                  file=sys.stderr)
            failed = 1 if isinstance(exc, NotFoundError) else max(failed, exc.exit_code)
    return failed


def cmd_stop(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    def stop(c: Container) -> None:
        timeout, sig = stop_settings(c, args)
        was_running = c.state.running
        lifecycle.stop(ctx, _user_stop(c), timeout, sig)
        if was_running:
            _event(ctx, c, "kill", signal=str(int(sig)))
        _event(ctx, c, "stop")

    return _for_each(args, ctx, stop)


def stop_settings(c: Container, args: argparse.Namespace) -> tuple[float, int]:
    """(timeout, signal) of a stop: the command's -t/-s, else the container's --stop-timeout/--stop-signal (or
    its image's STOPSIGNAL), else docker's 10 s and SIGTERM."""
    timeout = args.time if args.time is not None else (c.spec.stop_timeout if c.spec.stop_timeout is not None
                                                         else 10)
    name = getattr(args, "signal", "") or c.spec.stop_signal or c.image_config.get("StopSignal") or ""
    return float(timeout), parse_signal(name) if name else signal.SIGTERM


def cmd_kill(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    sig = parse_signal(args.signal)
    def kill(c: Container) -> None:
        lifecycle.kill(ctx, _user_stop(c), sig)
        _event(ctx, c, "kill", signal=str(int(sig)))

    return _for_each(args, ctx, kill)


def _user_stop(c: Container) -> Container:
    """stop, kill, rm -f and restart: the restart policy must not bring the container back (docker's rule)."""
    from runtime.container import restart

    restart.mark_stopped(c.directory)
    return c


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    """docker's rm: a missing container fails the command (exit 1) except with -f, a running one without -f
    is refused (exit 1); each failure is one line and the other names are still removed."""
    from runtime.container import lifecycle
    from runtime.container.state import find

    failed = 0
    for ref in args.containers:
        try:
            target = find(ctx.paths, ref)
            lifecycle.remove(ctx, _user_stop(target) if args.force else target, force=args.force,
                             volumes=args.volumes)
            _event(ctx, target, "destroy")
            print(ref)
        except NotFoundError:
            print(f"Error: No such container: {ref}", file=sys.stderr)
            failed = failed or (0 if args.force else 1)
        except RefrtError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = 1
    return failed


def cmd_wait(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    return _for_each(args, ctx, lambda c: print(lifecycle.wait(ctx, c)), echo=False)


def cmd_exec(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container.exec import exec_in
    from runtime.container.state import find

    if not args.command:
        raise UsageError('"exec" requires at least 2 arguments')
    env: list[str] = []
    for path in args.env_file:
        env.extend(read_env_file(path))
    env.extend(args.env)
    container = find(ctx.paths, args.container)
    if not args.detach:
        from runtime.cli.interactive import require_terminal

        require_terminal(args.tty, args.interactive)
    words = " ".join(args.command)
    _event(ctx, container, f"exec_create: {words}")
    _event(ctx, container, f"exec_start: {words}")
    code = exec_in(
        ctx, container, list(args.command), env=env, workdir=args.workdir, user=args.user, tty=args.tty,
        interactive=args.interactive, detach=args.detach, detach_keys=args.detach_keys,
    )
    if not args.detach:
        _event(ctx, container, "exec_die", exitCode=str(code))
    return code


def cmd_pause(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    def pause(c: Container) -> None:
        lifecycle.pause(ctx, c, True)
        _event(ctx, c, "pause")

    return _for_each(args, ctx, pause)


def cmd_unpause(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    def unpause(c: Container) -> None:
        lifecycle.pause(ctx, c, False)
        _event(ctx, c, "unpause")

    return _for_each(args, ctx, unpause)


def cmd_restart(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle

    def restart(c: Container) -> None:
        lifecycle.stop(ctx, _user_stop(c), *stop_settings(c, args))
        lifecycle.start(ctx, c, None).close()
        _event(ctx, c, "restart")

    return _for_each(args, ctx, restart)


def cmd_rename(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.container import lifecycle
    from runtime.container.state import find

    c = find(ctx.paths, args.container)
    old = c.name
    lifecycle.rename(ctx, c, args.new_name)
    _event(ctx, c, "rename", oldName="/" + old)
    return 0


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    """``container prune``: remove every stopped container (with ``--filter label=...``)."""
    from runtime.container import lifecycle
    from runtime.container.state import all_containers

    removed = []
    for c in all_containers(ctx.paths):
        lifecycle.reconcile(ctx, c)
        if c.state.running or (args.filter and not matches(c, args.filter)):
            continue
        lifecycle.remove(ctx, c)
        removed.append(c.id)
    if removed:
        print("Deleted Containers:", *removed, sep="\n")
    print("Total reclaimed space: 0B")
    return 0


def register(sub: Any) -> None:
    def top_level(name: str, func: Any, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, **kwargs)
        parser.set_defaults(func=func)
        return parser

    _define_commands(top_level)
    # docker's management form: ``container ls|run|rm|inspect|prune ...`` for the same handlers
    group = sub.add_parser("container", help="manage containers")
    group_sub = group.add_subparsers(dest="container_command", metavar="COMMAND")

    def grouped(name: str, func: Any, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        aliases = ["list", "ps"] if name == "ls" else []
        parser: argparse.ArgumentParser = group_sub.add_parser(name, help=help_text, aliases=aliases, **kwargs)
        parser.set_defaults(func=func)
        return parser

    _define_commands(grouped, container_group=True)


def _define_commands(add: Any, container_group: bool = False) -> None:
    p = add("run", cmd_run, "create and start a container, run its command", add_help=False)
    p.add_argument("--help", action="help")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    p.add_argument("--sig-proxy", action="store_true", default=True,
                   help="proxy received signals to the process (without -t; default true)")
    add_create_flags(p)

    p = add("create", cmd_create, "create a container", add_help=False)
    p.add_argument("--help", action="help")
    add_create_flags(p)

    p = add("start", cmd_start, "start created or stopped containers")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    p.add_argument("containers", nargs="+")

    p = add("exec", cmd_exec, "run a command in a running container", add_help=False)
    p.add_argument("--help", action="help")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--detach-keys", default="", help="override the key sequence for detaching a container")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = add("ls" if container_group else "ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-n", "--last", type=int, default=0)
    p.add_argument("-l", "--latest", action="store_true", help="show the latest created container (all states)")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("-f", "--filter", action="append", default=[])

    p = add("logs", cmd_logs, "show a container's output")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("--since", default="", help="show logs since a timestamp (2013-01-02T13:23:37Z) or relative (42m)")
    p.add_argument("--until", default="", help="show logs before a timestamp or relative (42m)")
    p.add_argument("container")

    p = add("stop", cmd_stop, "stop running containers (SIGTERM, then SIGKILL)")
    p.add_argument("-t", "--time", type=float, default=None, help="seconds to wait before killing (default 10)")
    p.add_argument("-s", "--signal", default="")
    p.add_argument("containers", nargs="+")

    p = add("kill", cmd_kill, "send a signal to running containers")
    p.add_argument("-s", "--signal", default="KILL")
    p.add_argument("containers", nargs="+")

    p = add("rm", cmd_rm, "remove containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("containers", nargs="+")

    p = add("wait", cmd_wait, "wait for containers to stop, print their exit codes")
    p.add_argument("containers", nargs="+")

    p = add("inspect", cmd_inspect, "show low-level information on containers or images")
    p.add_argument("-f", "--format", default="")
    p.add_argument("--type", default="", choices=["", "container", "image"])
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("names", nargs="+")

    p = add("top", cmd_top, "show the processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)

    p = add("stats", cmd_stats, "show containers' resource usage")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("containers", nargs="*")

    p = add("pause", cmd_pause, "freeze all processes of containers")
    p.add_argument("containers", nargs="+")

    p = add("unpause", cmd_unpause, "thaw paused containers")
    p.add_argument("containers", nargs="+")

    p = add("restart", cmd_restart, "stop and start containers again")
    p.add_argument("-t", "--time", type=float, default=None, help="seconds to wait before killing (default 10)")
    p.add_argument("containers", nargs="+")

    p = add("rename", cmd_rename, "rename a container")
    p.add_argument("container")
    p.add_argument("new_name")

    if container_group:
        p = add("prune", cmd_prune, "remove all stopped containers")
        p.add_argument("-f", "--force", action="store_true")
        p.add_argument("--filter", action="append", default=[])
