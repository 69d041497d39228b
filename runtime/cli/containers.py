"""Container commands with docker's syntax: run, create, start, exec, ps, logs, stop, kill, rm, wait, inspect,
top, stats.

Flags are parsed here into :class:`runtime.container.ContainerSpec` (with ``runtime.spec.MountSpec`` and
``NetworkRequest`` for the volume and network packages); the work is done by ``runtime.container``. Exit codes
follow docker: 125 when refrt fails, 126/127 when the command cannot be invoked / found, otherwise the
container's own code.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli import runflags
from runtime.errors import NotFoundError, RefrtError, UsageError
from runtime.spec import NetworkRequest

if TYPE_CHECKING:  # the container machinery is imported by the handlers, so ``--help`` stays fast
    from runtime.cli import Context
    from runtime.container.state import Container

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgtp]?)b?$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# --------------------------------------------------------------------------------------------- flag parsing
def parse_size(value: str) -> int:
    """docker's RAMInBytes: ``32m``, ``1g``, ``512k``, ``1048576``; ``-1`` means unlimited."""
    if value.strip() == "-1":
        return -1
    match = _SIZE.match(value.strip())
    if not match:
        raise UsageError(f"invalid size: '{value}'")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size >= 1 << 63:  # what the kernel's 64-bit limits take; beyond, the cgroup would get a wrapped value
        raise UsageError(f"invalid size: '{value}': value out of range")
    return size


def parse_cpus(value: str) -> int:
    try:
        nano = round(float(value) * 1e9)
    except ValueError:
        raise UsageError(f'invalid argument "{value}" for "--cpus" flag') from None
    if nano < 0:
        raise UsageError("range of CPUs must be positive")
    return nano


def parse_signal(value: str) -> int:
    name = value.upper()
    if name.isdigit():
        return int(name)
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"Invalid signal: {value}") from None


def read_env_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"open {path}: {exc.strerror}") from None
    return [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, _, value = item.partition("=")
        labels[key] = value
    return labels


def _add_create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("-u", "--user", default="")
    p.add_argument("-h", "--hostname", default="")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("--entrypoint", default=None)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--rm", action="store_true")
    p.add_argument("--init", action="store_true")
    p.add_argument("--uts", default="")
    p.add_argument("--cpu-period", type=int, default=0)
    p.add_argument("--cpu-quota", type=int, default=0)
    p.add_argument("--device", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--oom-kill-disable", action="store_true")
    p.add_argument("--pid", default="")
    p.add_argument("--ipc", default="")
    p.add_argument("--group-add", action="append", default=[])
    p.add_argument("--shm-size", default="")
    p.add_argument("--sysctl", action="append", default=[])
    p.add_argument("--ulimit", action="append", default=[], help="ulimit options (NAME=SOFT[:HARD], e.g. nofile=1024)")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="timeout (in seconds) to stop a container")
    p.add_argument("--restart", default="no",
                   help="restart policy when the container exits: no, always, unless-stopped, on-failure[:N]")
    p.add_argument("--userns", default="host")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--cap-add", action="append", default=[])
    p.add_argument("--cap-drop", action="append", default=[])
    p.add_argument("--security-opt", action="append", default=[])
    p.add_argument("-m", "--memory", default="")
    p.add_argument("--memory-swap", default="")
    p.add_argument("--cpus", default="")
    p.add_argument("-c", "--cpu-shares", type=int, default=0)
    p.add_argument("--cpuset-cpus", default="")
    p.add_argument("--pids-limit", type=int, default=0)
    p.add_argument("--blkio-weight", type=int, default=0)
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--mount", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--volumes-from", action="append", default=[])
    p.add_argument("--network", "--net", default="")
    p.add_argument("--network-alias", "--net-alias", action="append", default=[])
    p.add_argument("-p", "--publish", action="append", default=[])
    p.add_argument("-P", "--publish-all", action="store_true")
    p.add_argument("--expose", action="append", default=[])
    p.add_argument("--dns", action="append", default=[])
    p.add_argument("--add-host", action="append", default=[])
    runflags.add_accepted(p)
    runflags.add_refused(p)
    runflags.describe(p)
    p.add_argument("image", help="the image to run")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")


def _sysctls(values: list[str], network_mode: str) -> list[str]:
    from runtime.container import sysctls

    for value in values:
        sysctls.parse(value, network_mode)
    return list(values)


def _namespace_mode(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.startswith("container:"):
        raise UsageError(f"{flag} {value}: sharing another container's namespace is not supported by refrt")
    if value not in allowed:
        raise UsageError(f"{flag} {value}: invalid mode (refrt takes {', '.join(m for m in allowed if m)})")
    return "host" if value == "host" else ""


def _nano_cpus(args: argparse.Namespace) -> int:
    """--cpus, or docker's older --cpu-quota/--cpu-period pair as the same CFS quota (period 100 ms default)."""
    if args.cpus and (args.cpu_period or args.cpu_quota):
        raise UsageError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if args.cpus:
        return parse_cpus(args.cpus)
    if args.cpu_period and not 1000 <= args.cpu_period <= 1_000_000:
        raise UsageError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if args.cpu_quota and 0 < args.cpu_quota < 1000:
        raise UsageError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if args.cpu_quota > 0:
        return args.cpu_quota * 1_000_000_000 // (args.cpu_period or 100_000)
    return 0


def _ulimits(values: list[str]) -> list[str]:
    from runtime.container import ulimits

    for value in values:
        ulimits.parse(value)
    return list(values)


def _stop_signal(value: str) -> str:
    if value:
        parse_signal(value)  # docker refuses an unknown one at create
    return value


def _restart_policy(args: argparse.Namespace) -> str:
    from runtime.container import restart

    name, _ = restart.parse(args.restart)
    if name != "no" and args.rm:
        raise UsageError("Conflicting options: --restart and --rm")
    return str(args.restart or "no")


def spec_from_args(args: argparse.Namespace) -> Any:
    """The parsed flags as a ContainerSpec (nothing is created yet)."""
    from runtime.cgroups import Resources
    from runtime.container import ContainerSpec, seccomp
    from runtime.container.hooks import default_network_mode
    from runtime.volumes.parse import parse_mount_flag, parse_tmpfs_flag, parse_volume_flag, parse_volumes_from_flag

    env: list[str] = []
    for path in args.env_file:
        env.extend(read_env_file(path))
    env.extend(args.env)
    if args.userns not in ("host", "", "private"):
        raise UsageError(f"--userns={args.userns}: refrt supports host and private")
    memory = parse_size(args.memory) if args.memory else 0
    swap = parse_size(args.memory_swap) if args.memory_swap else 0
    if swap and swap > 0 and memory and swap < memory:
        raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if swap and not memory:
        raise UsageError("You should always set the Memory limit when using Memoryswap limit, see usage")
    if memory and memory < 6 * 1024 * 1024:
        raise UsageError("Minimum memory limit allowed is 6MB")
    if args.blkio_weight and not 10 <= args.blkio_weight <= 1000:
        raise UsageError("Range of blkio weight is from 10 to 1000")
    # one strict parser (runtime.volumes.parse) for every mount flag: a misspelled option is an error, never ignored
    mounts = [parse_volume_flag(v) for v in args.volume]
    mounts += [parse_mount_flag(v) for v in args.mount]
    mounts += [parse_tmpfs_flag(v) for v in args.tmpfs]
    if args.init:
        mounts.append(runflags.init_mount())
    if args.device:
        from runtime.container.devices import mount as device_mount

        mounts += [device_mount(value) for value in args.device]
    shm = parse_size(args.shm_size) if args.shm_size else 0
    if shm < 0:
        raise UsageError(f"invalid size: '{args.shm_size}'")
    if shm:  # a tmpfs of that size over the default 64m /dev/shm, with docker's options (0: the default)
        mounts.append(parse_tmpfs_flag(f"/dev/shm:size={shm},nosuid,nodev,noexec,mode=1777"))
    for item in args.volumes_from:
        parse_volumes_from_flag(item)
    mode = args.network or default_network_mode()
    expose = []
    for item in args.expose:
        port, _, proto = item.partition("/")
        expose.append(f"{port}/{proto or 'tcp'}")
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    return ContainerSpec(
        image=args.image,
        command=list(args.command),
        entrypoint=entrypoint,
        env=env,
        workdir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        tty=args.tty,
        interactive=args.interactive,
        name=args.name,
        labels=parse_labels(runflags.read_label_files(args.label_file) + list(args.label)),
        network=NetworkRequest(
            mode=mode,
            aliases=list(args.network_alias),
            publish=list(args.publish),
            publish_all=args.publish_all,
            exposed=expose,
            hostname=args.hostname,
            extra_hosts=list(args.add_host),
            dns=list(args.dns),
        ),
        mounts=mounts,
        volumes_from=list(args.volumes_from),
        resources=Resources(
            memory=memory,
            memory_swap=swap,
            nano_cpus=_nano_cpus(args),
            cpu_shares=args.cpu_shares,
            cpuset_cpus=args.cpuset_cpus,
            pids_limit=args.pids_limit,
            blkio_weight=args.blkio_weight,
        ),
        read_only=args.read_only,
        auto_remove=args.rm,
        restart=_restart_policy(args),
        stop_signal=_stop_signal(args.stop_signal),
        stop_timeout=args.stop_timeout,
        ulimits=_ulimits(args.ulimit),
        init=args.init,
        group_add=list(args.group_add),
        uts=_namespace_mode("--uts", args.uts, ("", "host")),
        pid=_namespace_mode("--pid", args.pid, ("", "host")),
        oom_kill_disable=args.oom_kill_disable,
        devices=list(args.device),
        ipc=_namespace_mode("--ipc", args.ipc, ("", "host", "private", "shareable")),
        sysctls=_sysctls(args.sysctl, mode),
        userns=args.userns or "host",
        privileged=args.privileged,
        cap_add=list(args.cap_add),
        cap_drop=list(args.cap_drop),
        security_opt=seccomp.normalize(args.security_opt),
    )


def _apply_volumes_from(ctx: Context, spec: Any) -> None:
    """``--volumes-from NAME[:ro|rw]``: the other container's bind and volume mounts (runtime.volumes)."""
    from runtime.volumes import volumes_from

    for item in spec.volumes_from:
        spec.mounts.extend(volumes_from(ctx, item))


def _check_image_depth(ctx: Context, ref: str) -> None:
    """docker's "max depth exceeded" before anything is created (an image pulled or built too deep)."""
    from runtime.store.overlay import check_depth
    from runtime.store.store import Store

    try:
        image = Store(ctx.paths).resolve(ref)
    except RefrtError:
        return  # a missing image is reported by create, in its words
    check_depth(len(image.layers))


def _apply_links(ctx: Context, spec: Any, links: list[str]) -> None:
    """docker's legacy ``--link NAME[:ALIAS]``: the linked container's address under its name and alias in
    /etc/hosts, and ``ALIAS_NAME=/new/alias`` in the environment; it must be running, on the default bridge."""
    from runtime.container import lifecycle
    from runtime.container.inspect import inspect
    from runtime.container.state import ContainerNotFound, find

    for link in links:
        name, _, alias = link.partition(":")
        alias = alias or name
        try:
            other = find(ctx.paths, name)
        except ContainerNotFound:
            raise UsageError(f"could not get container for {name}") from None
        lifecycle.reconcile(ctx, other)
        if not other.state.running:
            raise UsageError(f"Cannot link to a non running container: /{other.name} AS /{spec.name}/{alias}")
        live = _live_network_settings(ctx, other) or inspect(other)["NetworkSettings"]
        ips = [n.get("IPAddress") for n in (live.get("Networks") or {}).values() if n.get("IPAddress")]
        if not ips:
            raise UsageError(f"Cannot link to /{other.name}: it has no address (links need the default bridge)")
        for host in dict.fromkeys((alias, other.name, other.short_id)):
            spec.network.extra_hosts.append(f"{host}:{ips[0]}")
        spec.env.append(f"{alias.upper().replace('-', '_')}_NAME=/{spec.name}/{alias}")


def _create(ctx: Context, args: argparse.Namespace) -> Container:
    from runtime.container import lifecycle

    runflags.check_platform(args.platform)
    runflags.claim_cidfile(args.cidfile)
    _check_image_depth(ctx, args.image)
    spec = spec_from_args(args)
    _apply_links(ctx, spec, args.link)
    _apply_volumes_from(ctx, spec)
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


def _matches(c: Container, filters: list[str]) -> bool:
    groups: dict[str, list[str]] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        groups.setdefault(key.lower(), []).append(value)
    labels = {**(c.image_config.get("Labels") or {}), **c.spec.labels}
    for key, values in groups.items():
        if key == "id":
            ok = any(c.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(re.search(v, c.name) for v in values)
        elif key == "status":
            ok = c.state.status in values
        elif key == "label":
            ok = all(
                (k in labels and (not sep or labels[k] == v))
                for k, sep, v in (item.partition("=") for item in values)
            )
        elif key == "exited":
            ok = c.state.status == "exited" and str(c.state.exit_code) in values
        elif key == "ancestor":
            ok = any(v in (c.spec.image, c.image_id) or c.image_id.split(":")[-1].startswith(v) for v in values)
        elif key == "network":
            ok = c.spec.network.mode in values
        else:
            raise UsageError(f"invalid filter '{key}'")
        if not ok:
            return False
    return True


PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}  # fmt: skip
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def cmd_ps(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import format_rows
    from runtime.container import lifecycle
    from runtime.container.inspect import ps_row
    from runtime.container.state import all_containers

    selected = []
    for c in all_containers(ctx.paths):
        if not lifecycle.reconcile(ctx, c):
            continue  # an --rm container whose monitor died: removed just now
        if not (args.all or args.last or args.latest or c.state.running) and not args.filter:
            continue
        if args.filter and not _matches(c, args.filter):
            continue
        if args.filter and not args.all and not c.state.running and not any(
            f.startswith(("status=", "exited=")) for f in args.filter
        ):
            continue
        selected.append(c)
    if args.last or args.latest:
        selected = selected[: args.last or 1]
    if args.quiet:
        for c in selected:
            print(c.id if args.no_trunc else c.short_id)
        return 0
    rows = [ps_row(c, args.no_trunc) for c in selected]
    if args.size:
        _add_sizes(ctx, selected, rows)
    template = args.format or (PS_DEFAULT + "\t{{.Size}}" if args.size else PS_DEFAULT)
    text = format_rows(template, rows, PS_HEADERS)
    if text:
        print(text)
    return 0


def _add_sizes(ctx: Context, containers: list[Container], rows: list[dict[str, Any]]) -> None:
    """docker's ``ps -s`` column: the writable layer's size, and the image's beside it (``virtual``)."""
    from runtime.cli.disk import tree_size
    from runtime.humanize import human_size
    from runtime.store.store import Store

    store = Store(ctx.paths)
    for c, row in zip(containers, rows, strict=True):
        try:
            image_size = sum(layer.size for layer in store.resolve(c.image_id).layers)
        except RefrtError:
            image_size = 0
        own = tree_size(str(c.upper))
        row["Size"] = f"{human_size(own)} (virtual {human_size(own + image_size)})"


def cmd_logs(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.timefilter import parse_time, timestamp
    from runtime.container import lifecycle, logs
    from runtime.container.state import find

    container = find(ctx.paths, args.container)
    tail = None if args.tail in ("all", "") else int(args.tail)
    since = timestamp(args.since, "--since") if args.since else None
    until = timestamp(args.until, "--until") if args.until else None

    def wanted(record: Any) -> bool:
        if since is None and until is None:
            return True
        when = parse_time(record.time)
        return (since is None or when >= since) and (until is None or when <= until)

    records, offset = logs.read_records(container.log_path, None if (since or until) else tail)
    records = [r for r in records if wanted(r)]
    if tail is not None and (since or until):
        records = records[-tail:] if tail > 0 else []
    for record in records:
        logs.emit(record, args.timestamps)
    if args.follow and container.log_path.exists():

        def running() -> bool:
            if not container.directory.exists():
                return False
            lifecycle.reconcile(ctx, container)
            return container.state.running or (container.state.status == "created" and bool(
                container.state.monitor_pid
            ))

        for record in logs.follow(container.log_path, offset, running):
            if until is not None and parse_time(record.time) > until:
                break
            logs.emit(record, args.timestamps)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import print_inspected
    from runtime.container import lifecycle
    from runtime.container.inspect import inspect
    from runtime.container.state import ContainerNotFound, find

    results: list[Any] = []
    failed = 0
    for ref in args.names:
        data: Any = None
        if args.type in ("", "container"):
            try:
                container = find(ctx.paths, ref)
                lifecycle.reconcile(ctx, container)
                data = inspect(container)
                live = _live_network_settings(ctx, container)
                if live is not None:
                    data["NetworkSettings"] = live
            except ContainerNotFound:
                data = None
        if data is None and args.type in ("", "image"):
            data = _inspect_image(ctx, ref)
        if data is None:
            print(f"Error: No such object: {ref}", file=sys.stderr)
            failed = 1
            continue
        results.append(data)
    print_inspected(results, args.format)
    return failed


def _live_network_settings(ctx: Context, container: Container) -> dict[str, Any] | None:
    """The network package's current view (after connect/disconnect) of a running container."""
    from runtime.container.hooks import network_module

    module = network_module()
    if module is None or not container.state.running or not hasattr(module, "settings"):
        return None
    live: dict[str, Any] | None = module.settings(ctx, container.id)
    return live


def _inspect_image(ctx: Context, ref: str) -> dict[str, Any] | None:
    try:
        from runtime.cli.images import inspect_image
        from runtime.store.store import Store
    except ImportError:
        return None
    try:
        return inspect_image(Store(ctx.paths), ref)
    except NotFoundError:
        return None
    except UsageError:
        return None


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


def cmd_top(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cgroups import driver_for_host
    from runtime.container import lifecycle
    from runtime.container.state import find

    container = find(ctx.paths, args.container)
    lifecycle.reconcile(ctx, container)
    if not container.state.running:
        raise RefrtError(f"Container {container.id} is not running")
    pids = driver_for_host().open(container.id).procs()
    ps_args = args.ps_args or ["-f"]
    result = subprocess.run(["ps", *ps_args, "-p", ",".join(str(p) for p in pids)], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise RefrtError(f"ps: {result.stderr.strip()}")
    sys.stdout.write(result.stdout)
    return 0


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import format_rows
    from runtime.container import lifecycle
    from runtime.container import stats as st
    from runtime.container.state import all_containers, find

    def selected() -> list[Container]:
        items = [find(ctx.paths, ref) for ref in args.containers] if args.containers else all_containers(ctx.paths)
        out = []
        for c in items:
            lifecycle.reconcile(ctx, c)
            if c.state.running or args.all or args.containers:
                out.append(c)
        return out

    template = args.format or st.DEFAULT_FORMAT
    containers = selected()
    before = {c.id: st.sample(c) for c in containers}
    while True:
        time.sleep(0.5)
        rows = []
        for c in containers:
            after = st.sample(c)
            rows.append(st.row(c, before[c.id], after, args.no_trunc))
            before[c.id] = after
        text = format_rows(template, rows, st.HEADERS)
        if not args.no_stream:
            sys.stdout.write("\033[2J\033[H")
        print(text)
        sys.stdout.flush()
        if args.no_stream:
            return 0
        time.sleep(0.5)


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
        if c.state.running or (args.filter and not _matches(c, args.filter)):
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
    _add_create_flags(p)

    p = add("create", cmd_create, "create a container", add_help=False)
    p.add_argument("--help", action="help")
    _add_create_flags(p)

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
