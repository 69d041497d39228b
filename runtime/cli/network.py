"""``refrt network create|ls|inspect|rm|connect|disconnect|prune`` and ``refrt port``: docker's syntax.

"No such network/container" answers exit 1 like docker's; bad flags 125; a network in use 125 (conflict).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from runtime import network
from runtime.cli import Context
from runtime.cli.format import format_rows, print_inspected
from runtime.errors import NotFoundError, RefrtError, UsageError
from runtime.network.errors import ContainerNotAttached
from runtime.network.filters import ls_filter
from runtime.network.ports import port_lines


def _labels(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label {item!r}")
        out[key] = value
    return out


def _filters(values: list[str] | None) -> dict[str, str]:
    """``--filter label=k=v`` -> {k: v}; other filters are refused rather than ignored."""
    out: dict[str, str] = {}
    for item in values or []:
        key, _, value = item.partition("=")
        if key != "label":
            raise UsageError(f"invalid filter {key!r} (refrt supports label=)")
        k, _, v = value.partition("=")
        out[k] = v
    return out


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    if args.driver not in ("bridge",):
        raise UsageError(f"network driver {args.driver!r} is not supported (bridge only)")
    rec = network.create_network(ctx, args.name, subnet=args.subnet or "", gateway=args.gateway or "",
                                 internal=args.internal, labels=_labels(args.label))
    print(rec.id)
    return 0


def cmd_ls(args: argparse.Namespace, ctx: Context) -> int:
    keep = ls_filter(args.filter)
    rows = [r for r in network.list_networks(ctx) if keep(r)]
    if args.quiet:
        for r in rows:
            print(r["ID"] if args.no_trunc else r["ID"][:12])
        return 0
    items: list[Mapping[str, Any]] = [{**r, "ID": r["ID"] if args.no_trunc else r["ID"][:12]} for r in rows]
    template = args.format or "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
    headers = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE"}
    out = format_rows(template, items, headers)
    if out:
        print(out)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    found: list[dict[str, Any]] = []
    status = 0
    for ref in args.networks:
        try:
            found.append(network.inspect_network(ctx, ref))
        except NotFoundError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    print_inspected(found, args.format)
    return status


def cmd_rm(args: argparse.Namespace, ctx: Context) -> int:
    status = 0
    for ref in args.networks:
        try:
            network.remove_network(ctx, ref)
            print(ref)
        except RefrtError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_connect(args: argparse.Namespace, ctx: Context) -> int:
    network.connect(ctx, args.network, args.container, aliases=args.alias or [])
    return 0


def cmd_disconnect(args: argparse.Namespace, ctx: Context) -> int:
    network.disconnect(ctx, args.network, args.container)
    return 0


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    if not args.force and sys.stdin.isatty():
        answer = input("WARNING! This will remove all custom networks not used by at least one container.\n"
                       "Are you sure you want to continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    removed = network.prune_networks(ctx, _filters(args.filter))
    if removed:
        print("Deleted Networks:")
        for name in removed:
            print(name)
    return 0


def _container_known(ctx: Context, ref: str) -> bool:
    """Whether the container exists at all (a container without network record simply has no ports)."""
    if not ctx.paths.containers.is_dir():
        return False
    name = ref.lstrip("/")
    for d in ctx.paths.containers.iterdir():
        if d.name.startswith(ref):
            return True
        try:
            if json.loads((d / "config.json").read_text()).get("name", "").lstrip("/") == name:
                return True
        except (OSError, ValueError):
            continue
    return False


def cmd_port(args: argparse.Namespace, ctx: Context) -> int:
    try:
        bindings = network.container_ports(ctx, args.container)
    except ContainerNotAttached:
        if not _container_known(ctx, args.container):
            raise
        bindings = []
    private = args.private_port or ""
    if private and "/" not in private:
        private += "/tcp"
    lines = port_lines(bindings, private)
    if private and not lines:
        raise UsageError(f"No public port '{private}' published for {args.container}")
    for line in lines:
        print(line)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("network", help="manage networks")
    nsub = p.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=type(p))

    c = nsub.add_parser("create", help="create a network")
    c.add_argument("-d", "--driver", default="bridge")
    c.add_argument("--subnet")
    c.add_argument("--gateway")
    c.add_argument("--internal", action="store_true", help="no outbound connectivity")
    c.add_argument("--label", action="append", help="key=value")
    c.add_argument("name", metavar="NETWORK")
    c.set_defaults(func=cmd_create)

    c = nsub.add_parser("ls", aliases=["list"], help="list networks")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("--no-trunc", action="store_true")
    c.add_argument("-f", "--filter", action="append")
    c.add_argument("--format")
    c.set_defaults(func=cmd_ls)

    c = nsub.add_parser("inspect", help="show networks in detail")
    c.add_argument("-f", "--format")
    c.add_argument("networks", nargs="+", metavar="NETWORK")
    c.set_defaults(func=cmd_inspect)

    c = nsub.add_parser("rm", aliases=["remove"], help="remove networks")
    c.add_argument("networks", nargs="+", metavar="NETWORK")
    c.set_defaults(func=cmd_rm)

    c = nsub.add_parser("connect", help="connect a running container to a network")
    c.add_argument("--alias", action="append")
    c.add_argument("network", metavar="NETWORK")
    c.add_argument("container", metavar="CONTAINER")
    c.set_defaults(func=cmd_connect)

    c = nsub.add_parser("disconnect", help="disconnect a container from a network")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("network", metavar="NETWORK")
    c.add_argument("container", metavar="CONTAINER")
    c.set_defaults(func=cmd_disconnect)

    c = nsub.add_parser("prune", help="remove unused networks")
    c.add_argument("-f", "--force", action="store_true")
    c.add_argument("--filter", action="append")
    c.set_defaults(func=cmd_prune)

    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=cmd_port)
