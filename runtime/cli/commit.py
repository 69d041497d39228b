"""``commit``: a new image from a container's changes, as docker's: its writable layer on top of its image's
layers, its configuration (command, environment, labels ...), and ``-c`` changes in Dockerfile syntax.

Files refrt puts in every container (``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``, ``/.dockerenv``,
``/dev``, ``/proc``, ``/sys`` mount points) are left out, as docker's init layer keeps them out of its commits.
The layer is made from a hard-linked copy of the upper directory (xattrs such as overlay's opaque markers
kept), so the container may go on running meanwhile (``--pause``, docker's default, freezes it).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import RefrtError

if TYPE_CHECKING:
    from runtime.cli import Context


_LEFT_OUT = ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev", "proc", "sys")


def cmd_commit(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.build.changes import apply_change, parse_changes
    from runtime.container import lifecycle
    from runtime.container.state import find
    from runtime.store.overlay import check_depth
    from runtime.store.store import Store, now_rfc3339

    changes = parse_changes(args.change)
    c = find(ctx.paths, args.container)
    lifecycle.reconcile(ctx, c)
    store = Store(ctx.paths)
    base = store.resolve(c.image_id)
    paused = False
    if args.pause and c.state.running and c.state.status != "paused":
        with contextlib.suppress(RefrtError):
            lifecycle.pause(ctx, c, True)
            paused = True
    try:
        with tempfile.TemporaryDirectory(dir=c.directory, prefix=".commit-") as scratch:  # links: same fs
            tree = Path(scratch) / "upper"
            _linked_copy(c.upper, tree)
            layer = store.add_layer_from_dir(tree)
    finally:
        if paused:
            with contextlib.suppress(RefrtError):
                lifecycle.pause(ctx, c, False)
    image_config = copy.deepcopy(base.config)
    config = image_config.setdefault("config", {})
    config.update(_container_config(c))
    for instr in changes:
        apply_change(config, instr)
    created = now_rfc3339()
    image_config["created"] = created
    image_config["container"] = c.id
    if args.author:
        image_config["author"] = args.author
    entry: dict[str, Any] = {"created": created, "created_by": " ".join(c.argv)}
    if args.message:
        entry["comment"] = args.message
    if args.author:
        entry["author"] = args.author
    if layer is None:
        entry["empty_layer"] = True
    image_config["history"] = [*image_config.get("history", []), entry]
    layers = [*base.layers, *([layer] if layer is not None else [])]
    check_depth(len(layers))
    tags = [args.repository] if args.repository else []
    image = store.commit_image(image_config, layers, tags)
    print(image.id)
    return 0


def _container_config(c: Any) -> dict[str, Any]:
    """What docker's commit takes from the container: its command, entrypoint, environment and labels."""
    from runtime.container.health import config_for
    from runtime.container.inspect import config_env

    spec = c.spec
    out: dict[str, Any] = {"Env": config_env(c)}
    if spec.command:
        out["Cmd"] = list(spec.command)
    if spec.entrypoint is not None:
        out["Entrypoint"] = list(spec.entrypoint) or None
    if spec.labels:
        out["Labels"] = {**(c.image_config.get("Labels") or {}), **spec.labels}
    if spec.healthcheck is not None:
        out["Healthcheck"] = config_for(c)
    for key, value in (("User", spec.user), ("WorkingDir", spec.workdir), ("Hostname", spec.hostname)):
        if value and key != "Hostname":
            out[key] = value
    return out


def _linked_copy(upper: Path, tree: Path) -> None:
    """The upper directory without refrt's own mount points, as hard links (no data copied)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = os.path.relpath(directory, upper)
        return {n for n in names if os.path.normpath(os.path.join(rel, n)) in _LEFT_OUT}

    shutil.copytree(upper, tree, symlinks=True, copy_function=os.link, ignore=ignore)


def register(sub: Any) -> None:
    p = sub.add_parser("commit", help="create a new image from a container's changes")
    p.set_defaults(func=cmd_commit)
    p.add_argument("-a", "--author", default="", help='author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[], help="apply Dockerfile instruction to the "
                   "created image (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, "
                   "VOLUME, WORKDIR)")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("-p", "--pause", action="store_true", default=True,
                   help="pause container during commit (default true)")
    p.add_argument("container")
    p.add_argument("repository", nargs="?", default="", help="REPOSITORY[:TAG] of the new image")

