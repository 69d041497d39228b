"""``refrt volume create|ls|inspect|rm|prune``: docker's syntax (local driver only)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from runtime.cli import Context
from runtime.cli.format import format_rows, print_inspected
from runtime.errors import RefrtError, UsageError
from runtime.locking import locked
from runtime.volumes import VolumeStore
from runtime.volumes.errors import VolumeNotFound


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {item!r}")
        out[key] = value
    return out


def _filters(values: list[str] | None) -> tuple[dict[str, str], bool | None]:
    labels: dict[str, str] = {}
    dangling = None
    for item in values or []:
        key, _, value = item.partition("=")
        if key == "label":
            k, _, v = value.partition("=")
            labels[k] = v
        elif key == "dangling":
            dangling = value in ("true", "1")
        else:
            raise UsageError(f"invalid filter {key!r} (refrt supports label= and dangling=)")
    return labels, dangling


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    if args.driver != "local":
        raise UsageError(f"volume driver {args.driver!r} is not supported (local only)")
    name = args.name or args.name_flag or ""
    with locked(ctx.paths.locks, "volumes"):
        vol, _ = VolumeStore(ctx.paths).create(name, labels=_pairs(args.label, "label"),
                                               options=_pairs(args.opt, "option"))
    print(vol.name)
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    store = VolumeStore(ctx.paths)
    labels, dangling = _filters(args.filter)
    vols = store.all()
    if labels:
        vols = [v for v in vols if all(v.labels.get(k) == val for k, val in labels.items())]
    if dangling is not None:
        vols = [v for v in vols if (not store.users(v.name)) == dangling]
    if args.quiet:
        for v in vols:
            print(v.name)
        return 0
    items: list[Mapping[str, Any]] = [
        {"Driver": "local", "Name": v.name, "Mountpoint": v.mountpoint, "Labels": v.labels} for v in vols
    ]
    out = format_rows(args.format or "table {{.Driver}}\t{{.Name}}", items,
                      {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT"})
    if out:
        print(out)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    store = VolumeStore(ctx.paths)
    found: list[dict[str, Any]] = []
    status = 0
    for name in args.volumes:
        try:
            found.append(store.get(name).inspect())
        except VolumeNotFound as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    print_inspected(found, args.format)
    return status


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    store = VolumeStore(ctx.paths)
    status = 0
    for name in args.volumes:
        try:
            with locked(ctx.paths.locks, "volumes"):
                store.remove(name, force=args.force)
            print(name)
        except RefrtError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            status = 1  # docker exits 1 for whatever the daemon refused
    return status


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    if not args.force and sys.stdin.isatty():
        answer = input("WARNING! This will remove anonymous local volumes not used by at least one container.\n"
                       "Are you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    labels, _ = _filters(args.filter)
    with locked(ctx.paths.locks, "volumes"):
        removed = VolumeStore(ctx.paths).prune(all_volumes=args.all, labels=labels)
    if removed:
        print("Deleted Volumes:")
        for name in removed:
            print(name)
    print()
    print("Total reclaimed space: 0B")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("volume", help="manage volumes")
    vsub = p.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=type(p))

    c = vsub.add_parser("create", help="create a volume")
    c.add_argument("-d", "--driver", default="local")
    c.add_argument("--name", dest="name_flag")
    c.add_argument("--label", action="append")
    c.add_argument("-o", "--opt", action="append")
    c.add_argument("name", nargs="?", metavar="VOLUME")
    c.set_defaults(func=cmd_create)

    c = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("-f", "--filter", action="append")
    c.add_argument("--format")
    c.set_defaults(func=cmd_ls)

    c = vsub.add_parser("inspect", help="show volumes in detail")
    c.add_argument("-f", "--format")
    c.add_argument("volumes", nargs="+", metavar="VOLUME")
    c.set_defaults(func=cmd_inspect)

    c = vsub.add_parser("rm", aliases=["remove"], help="remove volumes")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("volumes", nargs="+", metavar="VOLUME")
    c.set_defaults(func=cmd_rm)

    c = vsub.add_parser("prune", help="remove unused volumes")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("-a", "--all", action="store_true", help="all unused volumes, not just anonymous ones")
    c.add_argument("--filter", action="append")
    c.set_defaults(func=cmd_prune)
