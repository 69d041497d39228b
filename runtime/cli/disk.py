"""``system df`` and ``system prune``, as docker's: what the images, containers, volumes and build cache take,
and one command that prunes them all.

Sizes count each inode once (busybox's applets are hard links of one file; :func:`runtime.sizes.tree_size`), as
the daemon's ``ps --size`` does; an image's layers shared with another image count once in the total.
``prune`` runs the prune of each kind refrt has (containers, networks, dangling or all images, and with
``--volumes`` anonymous volumes).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from runtime.humanize import human_size
from runtime.sizes import tree_size

if TYPE_CHECKING:
    from runtime.cli import Context

DF_DEFAULT = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
              "Reclaimable": "RECLAIMABLE"}


def _row(kind: str, total: int, active: int, size: int, reclaimable: int, percent: bool) -> dict[str, str]:
    text = human_size(reclaimable)
    if percent and size > 0:
        text += f" ({reclaimable * 100 // size}%)"
    return {"Type": kind, "TotalCount": str(total), "Active": str(active), "Size": human_size(size),
            "Reclaimable": text}


def usage(ctx: Context) -> list[dict[str, str]]:
    from runtime.container import lifecycle
    from runtime.container.state import all_containers
    from runtime.store.store import Store

    containers = all_containers(ctx.paths)
    for c in containers:
        lifecycle.reconcile(ctx, c)
    used_images = {c.image_id for c in containers}
    images = Store(ctx.paths).images()
    layer_sizes: dict[str, int] = {}
    active_layers: set[str] = set()
    for image in images:
        for layer in image.layers:
            layer_sizes[layer.diff_id] = layer.size
            if image.id in used_images:
                active_layers.add(layer.diff_id)
    image_total = sum(layer_sizes.values())
    image_free = sum(size for diff_id, size in layer_sizes.items() if diff_id not in active_layers)
    sizes = {c.id: tree_size(str(c.upper)) for c in containers}
    running = [c for c in containers if c.state.running]
    container_free = sum(size for cid, size in sizes.items() if cid not in {c.id for c in running})
    volumes = _volumes(ctx)
    rows = [
        _row("Images", len(images), sum(1 for i in images if i.id in used_images), image_total, image_free, True),
        _row("Containers", len(containers), len(running), sum(sizes.values()), container_free, True),
        _row("Local Volumes", len(volumes), sum(1 for _, used, _ in volumes if used),
             sum(size for _, _, size in volumes), sum(size for _, used, size in volumes if not used), True),
        _row("Build Cache", 0, 0, 0, 0, False),
    ]
    return rows


def _volumes(ctx: Context) -> list[tuple[str, bool, int]]:
    try:
        from runtime.volumes import VolumeStore
    except ImportError:
        return []
    store = VolumeStore(ctx.paths)
    return [(v.name, bool(store.users(v.name)), tree_size(v.mountpoint)) for v in store.all()]


def cmd_df(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.cli.format import format_rows

    print(format_rows(args.format or DF_DEFAULT, usage(ctx), DF_HEADERS))
    return 0


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    if not args.force:
        which = "all images without at least one container associated to them" if args.all else \
            "all dangling images"
        lines = ["all stopped containers", "all networks not used by at least one container",
                 *(["all anonymous volumes not used by at least one container"] if args.volumes else []),
                 which, "all dangling build cache" if not args.all else "all build cache"]
        print("WARNING! This will remove:\n" + "".join(f"  - {line}\n" for line in lines))
        print("Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from runtime.cli import containers, images

    quiet = argparse.Namespace(force=True, filter=list(args.filter), all=args.all)
    containers.cmd_prune(quiet, ctx)
    try:
        from runtime.cli import network

        network.cmd_prune(argparse.Namespace(force=True, filter=list(args.filter)), ctx)
    except ImportError:
        pass
    if args.volumes:
        from runtime.cli import volumes

        volumes.cmd_prune(argparse.Namespace(force=True, filter=list(args.filter), all=False), ctx)
    images.cmd_prune(argparse.Namespace(force=True, all=args.all, filter=list(args.filter)), ctx)
    return 0


def register(system_sub: Any) -> None:
    p = system_sub.add_parser("df", help="show docker disk usage")
    p.set_defaults(func=cmd_df)
    p.add_argument("--format", default="", help="pretty-print with a Go template")
    p.add_argument("-v", "--verbose", action="store_true", help="show detailed information on space usage")

    p = system_sub.add_parser("prune", help="remove unused data")
    p.set_defaults(func=cmd_prune)
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--volumes", action="store_true", help="prune volumes")
    p.add_argument("--filter", action="append", default=[], help="provide filter values (e.g. 'label=<key>=<value>')")
