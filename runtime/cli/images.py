"""Image commands: ``images``, ``rmi``, ``tag``, ``history``, ``import``, ``load``, ``save`` and the ``image`` group
(``ls``, ``inspect``, ``prune``, ``rm``, ``tag``, ``history``, ``import``, ``load``, ``save``, ``bootstrap``).

Output follows docker's: the same columns, ``--format`` Go-template subset (``{{.Field}}``, ``{{json .X}}``,
``table``), human sizes in decimal units, "N days ago". The views of one image (inspect JSON, history rows) are
in :mod:`runtime.imageview`, shared with the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, cast

from runtime.cli.format import format_rows, print_inspected
from runtime.errors import RefrtError, UsageError
from runtime.humanize import human_size
from runtime.imageview import NONE, history_rows, inspect_image, since
from runtime.store import Store
from runtime.store.archive import import_tarball, load_archive, save_docker_archive
from runtime.store.baseimage import bootstrap_busybox, bootstrap_debian
from runtime.store.reference import parse_reference, reference_matches

if False:  # typing only; importing the CLI package here would be circular at run time
    from runtime.cli import Context

HEADERS = {
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "VirtualSize": "VIRTUAL SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
}


def _image_rows(store: Store, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (image, repository:tag), as ``docker images`` lists them."""
    filters = _parse_filters(getattr(args, "filter", None) or [])
    wanted = getattr(args, "reference", None)
    rows: list[dict[str, Any]] = []
    for image in store.images():
        dangling = not image.repo_tags
        if "dangling" in filters and (filters["dangling"] in ("true", "1")) != dangling:
            continue
        pairs: list[tuple[str, str]] = [tuple(t.rsplit(":", 1)) for t in image.repo_tags]  # type: ignore[misc]
        if not pairs:
            pairs = [(d.split("@")[0], NONE) for d in image.repo_digests] or [(NONE, NONE)]
        for repo, tag in pairs:
            if wanted and not reference_matches(wanted, repo, tag):
                continue
            if "reference" in filters and not reference_matches(filters["reference"], repo, tag):
                continue
            digest = next((d.split("@")[1] for d in image.repo_digests if d.split("@")[0] == repo), NONE)
            rows.append(
                {
                    "Repository": repo,
                    "Tag": tag,
                    "ID": image.id if args.no_trunc else image.short_id,
                    "Digest": digest,
                    "CreatedSince": since(image.created),
                    "CreatedAt": image.created,
                    "Size": human_size(image.size),
                    "Containers": "N/A",
                    "SharedSize": "N/A",
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(image.size),
                }
            )
    return rows


def _parse_filters(values: list[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or key not in ("dangling", "reference"):
            raise UsageError(f"invalid filter {value!r} (supported: dangling=true|false, reference=PATTERN)")
        filters[key] = val
    return filters


# ------------------------------------------------------------------------------------------------------ handlers


def _store(ctx: Context) -> Store:
    return Store(ctx.paths)


def cmd_images(args: argparse.Namespace, ctx: Context) -> int:
    rows = _image_rows(_store(ctx), args)
    if args.quiet:
        seen: list[str] = []
        for row in rows:
            if row["ID"] not in seen:
                seen.append(row["ID"])
        for image_id in seen:
            print(image_id)
        return 0
    columns = ["Repository", "Tag", *(["Digest"] if args.digests else []), "ID", "CreatedSince", "Size"]
    default = "\t".join(f"{{{{.{c}}}}}" for c in columns)
    text = format_rows(args.format or "table", rows, HEADERS, default)
    if text:
        print(text)
    return 0


def cmd_rmi(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    status = 0
    for ref in args.images:
        try:
            for line in store.remove(ref, force=args.force):
                print(line)
        except RefrtError as exc:
            print(f"refrt: {exc}", file=sys.stderr)
            status = max(status, exc.exit_code if exc.exit_code != 125 else 1)
    return status


def cmd_tag(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    store.tag(store.resolve(args.source), args.target)
    return 0


def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    image = _store(ctx).resolve(args.image)
    rows = history_rows(image, no_trunc=args.no_trunc, human=args.human)
    if args.quiet:
        for row in rows:
            print(row["ID"])
        return 0
    keys = ["ID", "CreatedSince" if args.human else "CreatedAt", "CreatedBy", "Size", "Comment"]
    default = "\t".join(f"{{{{.{k}}}}}" for k in keys)
    headers = {**HEADERS, "ID": "IMAGE", "CreatedAt": "CREATED"}
    text = format_rows(args.format or "table", rows, headers, default)
    if text:
        print(text)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    found: list[dict[str, Any]] = []
    status = 0
    for ref in args.images:
        try:
            found.append(inspect_image(store, ref))
        except RefrtError as exc:
            print(f"refrt: {exc}", file=sys.stderr)
            status = 1
    print_inspected(found, args.format)
    return status


def cmd_prune(args: argparse.Namespace, ctx: Context) -> int:
    if not args.force:
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        print(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    report, freed = _store(ctx).prune(all_images=args.all)
    if report:
        print("Deleted Images:")
        print("\n".join(report))
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    tags = [args.reference] if args.reference else []
    store = _store(ctx)
    if args.file == "-":
        image = import_tarball(store, sys.stdin.buffer, tags, message=args.message or "", changes=args.change)
    else:
        try:
            fh = open(args.file, "rb")  # noqa: SIM115 - closed below, after the import
        except OSError as exc:
            raise UsageError(f"import: cannot open {args.file}: {exc.strerror}") from None
        with fh:
            image = import_tarball(store, fh, tags, message=args.message or "", changes=args.change)
    print(image.id)
    return 0


def cmd_load(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    before = {image.id for image in store.images()}
    report = _load(args, store)
    _refuse_too_deep(store, before)
    if not args.quiet:
        print("\n".join(report))
    return 0


def _refuse_too_deep(store: Store, before: set[str]) -> None:
    """An image deeper than docker's limit does not stay: docker's ``load`` fails on it (exit 1)."""
    from runtime.store.errors import TooManyLayers
    from runtime.store.overlay import check_depth

    for image in store.images():
        if image.id in before:
            continue
        try:
            check_depth(len(image.layers))
        except TooManyLayers as exc:
            with contextlib.suppress(RefrtError):
                store.remove(image, force=True)
            exc.exit_code = 1
            raise


def _load(args: argparse.Namespace, store: Store) -> list[str]:
    if args.input in (None, "-"):
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty")
        report = load_archive(store, sys.stdin.buffer)
    else:
        try:
            fh = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"load: cannot open {args.input}: {exc.strerror}") from None
        with fh:
            report = load_archive(store, fh)
    return list(report)


def cmd_save(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    for ref in args.images:
        store.resolve(ref)  # fail before creating the output file
    if args.output and args.output != "-":
        _check_output(args.output)
    if not args.output or args.output == "-":
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        sys.stdout.flush()
        save_docker_archive(store, args.images, cast(BinaryIO, sys.stdout.buffer))
        return 0
    target = Path(args.output).absolute()
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:  # what the access check cannot see: /proc, a read-only or full file system
        raise RefrtError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            save_docker_archive(store, args.images, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return 0


def _check_output(output: str) -> None:
    """``save -o``: refuse, before the archive is written, a target that is a directory or whose directory is
    missing or not writable (the archive goes to a temporary file beside it, renamed at the end)."""
    target = Path(output).absolute()
    if target.is_dir():
        raise UsageError(f"invalid output path {output!r}: is a directory")
    if not target.parent.is_dir():
        raise UsageError(f"invalid output path {output!r}: directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise UsageError(f"invalid output path {output!r}: directory {target.parent} is not writable")


def cmd_bootstrap(args: argparse.Namespace, ctx: Context) -> int:
    store = _store(ctx)
    tags = args.tag or None
    build = bootstrap_busybox if args.name == "busybox" else None
    image = build(store, tags) if build else bootstrap_debian(store, args.suite, tags)
    print(image.id)
    return 0


# ------------------------------------------------------------------------------------------------------ parsers


def _add_images_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", nargs="?", help="show only REPOSITORY[:TAG] (glob patterns allowed)")
    p.add_argument("-a", "--all", action="store_true", help="show all images (refrt has no intermediate ones)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("--format", help="Go-template subset, or 'table TEMPLATE'")
    p.add_argument("-f", "--filter", action="append", help="dangling=true|false, reference=PATTERN")
    p.set_defaults(func=cmd_images)


def _add_rmi_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="untag even if a container uses the image")
    p.add_argument("--no-prune", action="store_true", help="accepted for docker compatibility")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rmi)


def _add_tag_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)


def _add_history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-H", "--human", type=lambda v: v.lower() != "false", default=True, nargs="?", const=True)
    p.add_argument("--format")
    p.set_defaults(func=cmd_history)


def _add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--change", action="append", default=[], help="Dockerfile instruction to apply")
    p.add_argument("-m", "--message", help="commit message for the imported image")
    p.add_argument("--platform", help="accepted for docker compatibility (host platform only)")
    p.add_argument("file", metavar="file|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(func=cmd_import)


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", help="read from this tar file (docker-archive or OCI layout), not stdin")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_load)


def _add_save_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", help="write to this file, not stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_save)


def _add_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--format")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_inspect)


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=cmd_prune)


def _add_bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=["busybox", "debian"], help="which base image to build")
    p.add_argument("-t", "--tag", action="append", help="name it (default busybox:latest / debian:SUITE)")
    p.add_argument("--suite", default="bookworm", help="Debian suite for 'debian' (default bookworm)")
    p.set_defaults(func=cmd_bootstrap)


def register(sub: Any) -> None:
    """Add the image commands to the top-level parser's subparsers."""
    _add_images_args(sub.add_parser("images", help="list images"))
    _add_rmi_args(sub.add_parser("rmi", help="remove images"))
    _add_tag_args(sub.add_parser("tag", help="give an image another name"))
    _add_history_args(sub.add_parser("history", help="show an image's history"))
    _add_import_args(sub.add_parser("import", help="create an image from a root file system tarball"))
    _add_load_args(sub.add_parser("load", help="load images from a docker-archive or OCI-layout tar"))
    _add_save_args(sub.add_parser("save", help="save images to a docker-archive tar"))

    group = sub.add_parser("image", help="manage images")
    image_sub = group.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=type(group))
    _add_images_args(image_sub.add_parser("ls", aliases=["list"], help="list images"))
    _add_inspect_args(image_sub.add_parser("inspect", help="show images as JSON"))
    _add_prune_args(image_sub.add_parser("prune", help="remove unused images"))
    _add_rmi_args(image_sub.add_parser("rm", aliases=["remove"], help="remove images"))
    _add_tag_args(image_sub.add_parser("tag", help="give an image another name"))
    _add_history_args(image_sub.add_parser("history", help="show an image's history"))
    _add_import_args(image_sub.add_parser("import", help="create an image from a tarball"))
    _add_load_args(image_sub.add_parser("load", help="load images from a tar"))
    _add_save_args(image_sub.add_parser("save", help="save images to a tar"))
    _add_bootstrap_args(image_sub.add_parser("bootstrap", help="build a base image offline (busybox, debian)"))


__all__ = ["register"]

_ = parse_reference
