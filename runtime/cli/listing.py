"""Container commands that look rather than act: ``ps`` (filters, ``-s``, ``-l``), ``logs`` (``--since``,
``--until``, follow), ``inspect`` (containers, then images), ``top`` and ``stats``; ``ps --filter`` is shared
with the daemon.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from runtime.container.query import live_network_settings, matches
from runtime.errors import NotFoundError, RefrtError, UsageError

if TYPE_CHECKING:  # the container machinery is imported by the handlers, so ``--help`` stays fast
    from runtime.cli import Context
    from runtime.container.state import Container


PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}  # fmt: skip
PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def cmd_ps(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import format_rows
    from runtime.container import lifecycle
    from runtime.container.health import check_filter_values
    from runtime.container.inspect import ps_row
    from runtime.container.state import all_containers

    check_filter_values(args.filter)
    selected = []
    for c in all_containers(ctx.paths):
        if not lifecycle.reconcile(ctx, c):
            continue  # an --rm container whose monitor died: removed just now
        if not (args.all or args.last or args.latest or c.state.running) and not args.filter:
            continue
        if args.filter and not matches(c, args.filter):
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
    from runtime.humanize import human_size
    from runtime.sizes import tree_size
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
                live = live_network_settings(ctx, container)
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


def _inspect_image(ctx: Context, ref: str) -> dict[str, Any] | None:
    try:
        from runtime.imageview import inspect_image
        from runtime.store.store import Store
    except ImportError:
        return None
    try:
        return inspect_image(Store(ctx.paths), ref)
    except NotFoundError:
        return None
    except UsageError:
        return None


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
