"""A container's files from the command line, as docker's: ``cp``, ``diff``, ``export`` and ``commit``.

The file work is the daemon's (:mod:`runtime.daemon.archive`): a forked child enters the container's root
(``/proc/PID/root`` while it runs, else its overlay in a private mount namespace) before it resolves any path,
so a symlink the container chose can never reach the host. Here is docker's CLI half: which side is the
container, where a copied tree lands, the tar stream on ``-``, and the image ``commit`` writes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import safetar
from runtime.errors import RefrtError

if TYPE_CHECKING:
    from runtime.cli import Context
    from runtime.container.state import Container


class CopyError(RefrtError):
    """A ``cp`` that cannot be done (docker's CLI exits 1)."""

    exit_code = 1


def _container(ctx: Context, ref: str) -> Container:
    from runtime.container import lifecycle
    from runtime.container.state import find

    c = find(ctx.paths, ref)
    lifecycle.reconcile(ctx, c)
    return c


def _split(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` or a local path (docker: a local path with a colon must start with / or .)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    name, _, path = arg.partition(":")
    return name, path


def _inside(c: Container, work: Any, data_fd: int, path: str) -> tuple[int, dict[str, Any]]:
    from runtime.daemon.archive import run_inside

    pid, report = run_inside(c, work, data_fd)
    if "error" in report:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        status, message = int(report.get("status", 500)), str(report["error"])
        raise CopyError(f"No such container:path: {c.name}:{path}" if status == 404 else message)
    return pid, report


def _stat(c: Container, path: str) -> dict[str, Any] | None:
    from runtime.daemon.archive import path_stat

    def work(report_fd: int, _data: int) -> None:
        import json

        os.write(report_fd, json.dumps({"stat": path_stat(path)}).encode() + b"\n")

    try:
        pid, report = _inside(c, work, -1, path)
    except CopyError:
        return None
    os.waitpid(pid, 0)
    stat: dict[str, Any] = report["stat"]
    return stat


def cmd_cp(args: argparse.Namespace, ctx: Context) -> int:
    (src_ctr, src), (dst_ctr, dst) = _split(args.source), _split(args.dest)
    if (src_ctr is None) == (dst_ctr is None):
        raise CopyError("copying between containers is not supported" if src_ctr else
                        "must specify at least one container source")
    if src_ctr is not None:
        _copy_out(_container(ctx, src_ctr), src, dst)
    else:
        assert dst_ctr is not None
        _copy_in(_container(ctx, dst_ctr), src, dst, args.archive)
    return 0


def _copy_out(c: Container, src: str, dst: str) -> None:
    from runtime.daemon.archive import _tar_path

    contents_only = src.endswith("/.")
    data_r, data_w = os.pipe()
    try:
        pid, report = _inside(c, _tar_path(src.removesuffix("/.") or "/", whole_fs=False), data_w, src)
    finally:
        os.close(data_w)
    name = report["stat"]["name"]
    try:
        with os.fdopen(data_r, "rb") as stream:
            if dst == "-":
                shutil.copyfileobj(stream, sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return
            target = Path(dst)
            if not target.parent.exists():
                raise CopyError(f'invalid output path: directory "{target.parent}" does not exist')
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".refrt-cp-") as scratch:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    # the container's tar: a hard link out of scratch would hand a host file to its owner/mode
                    safetar.extract_all(tar, scratch, "tar", extra=safetar.check_hard_link_inside)
                _place(Path(scratch) / name, target, contents_only)
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _place(copied: Path, target: Path, contents_only: bool) -> None:
    """docker's rules: into an existing directory under the source's name (or its contents with ``SRC/.``),
    otherwise as ``target`` itself."""
    if target.is_dir() and (not copied.is_dir() or not contents_only):
        destination = target / copied.name
    elif target.is_dir() and contents_only:
        for item in copied.iterdir():
            _replace(item, target / item.name)
        return
    else:
        if target.exists() and copied.is_dir():
            raise CopyError(f"cannot copy a directory to a file: {target}")
        destination = target
    _replace(copied, destination)


def _replace(item: Path, destination: Path) -> None:
    if destination.is_dir() and not destination.is_symlink() and item.is_dir():
        for child in item.iterdir():
            _replace(child, destination / child.name)
        return
    if destination.exists() or destination.is_symlink():
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        else:
            destination.unlink()
    os.rename(item, destination)


def _copy_in(c: Container, src: str, dst: str, keep_owner: bool) -> None:
    from runtime.daemon.archive import _extract_into

    if c.spec.read_only and c.state.running:
        raise CopyError("container rootfs is marked read-only")
    info = _stat(c, dst)
    if src == "-":
        directory, rename = dst, None
        if info is None:
            raise CopyError(f"No such container:path: {c.name}:{dst}")
    elif info is not None and info["mode"] & (1 << 31):
        directory, rename = dst, None
    else:
        parent = os.path.dirname(dst.rstrip("/")) or "/"
        if _stat(c, parent) is None:
            raise CopyError(f"No such container:path: {c.name}:{parent}")
        directory, rename = parent, os.path.basename(dst.rstrip("/"))
    if src != "-" and not os.path.lexists(src):
        raise CopyError(f"lstat {os.path.abspath(src)}: no such file or directory")
    data_r, data_w = os.pipe()
    try:
        pid, _ = _inside(c, _extract_into(directory, keep_owner), data_r, directory)
    finally:
        os.close(data_r)
    try:
        with os.fdopen(data_w, "wb") as sink:
            if src == "-":
                shutil.copyfileobj(sys.stdin.buffer, sink)
            else:
                contents_only = src.endswith("/.")
                source = src.removesuffix("/.") or "."
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    if contents_only:
                        for item in sorted(os.listdir(source)):
                            tar.add(os.path.join(source, item), arcname=item)
                    else:
                        tar.add(source, arcname=rename or os.path.basename(os.path.abspath(source)))
    except BrokenPipeError:
        pass
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CopyError(f"extracting into {c.name}:{directory} failed")


def cmd_diff(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.daemon.archive import changes

    for change in changes(_container(ctx, args.container)):
        print("CAD"[change["Kind"]], change["Path"])
    return 0


def cmd_export(args: argparse.Namespace, ctx: Context) -> int:
    from runtime.daemon.archive import _tar_path

    c = _container(ctx, args.container)
    if not args.output and os.isatty(1):
        raise CopyError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    data_r, data_w = os.pipe()
    try:
        pid, _ = _inside(c, _tar_path("/", whole_fs=True), data_w, "/")
    finally:
        os.close(data_w)
    try:
        with os.fdopen(data_r, "rb") as stream:
            if args.output:
                try:
                    with open(args.output, "wb") as out:
                        shutil.copyfileobj(stream, out)
                except OSError as exc:
                    raise CopyError(f"failed to export container: {exc}") from None
            else:
                shutil.copyfileobj(stream, sys.stdout.buffer)
                sys.stdout.buffer.flush()
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("cp", help="copy files/folders between a container and the local filesystem")
    p.set_defaults(func=cmd_cp)
    p.add_argument("-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH")
    p.add_argument("source", help="CONTAINER:SRC_PATH, a local path, or - (a tar stream on stdin)")
    p.add_argument("dest", help="CONTAINER:DEST_PATH, a local path, or - (a tar stream on stdout)")

    p = sub.add_parser("diff", help="inspect changes to files or directories on a container's filesystem")
    p.set_defaults(func=cmd_diff)
    p.add_argument("container")

    p = sub.add_parser("export", help="export a container's filesystem as a tar archive")
    p.set_defaults(func=cmd_export)
    p.add_argument("-o", "--output", default="", help="write to a file, instead of STDOUT")
    p.add_argument("container")

    from runtime.cli.commit import register as register_commit

    register_commit(sub)

