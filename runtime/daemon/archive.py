"""A container's files over the API: ``archive`` (HEAD stat / GET tar / PUT extract, for ``docker cp``),
``export`` (the whole root filesystem as a tar) and ``changes`` (what differs from the image).

Why a forked, chrooted child does the file work: paths come from the client and the container's tree holds
symlinks the container chose; resolved by the daemon, ``/etc -> /`` or ``../../..`` would reach the host. The
child enters the container's root first - ``/proc/PID/root`` while it runs (its mounts and volumes included),
or for a stopped container its overlay mounted in a private mount namespace (gone when the child exits, so no
mount is left behind) with its volumes bound in - and only then resolves anything. It reports over a pipe: one
JSON line (the stat, or an error with docker's status), then the tar bytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runtime import safetar
from runtime.container.state import Container
from runtime.daemon import Daemon
from runtime.daemon.http import ApiError, Handler, Request, Response

_GO_MODE_BITS = ((stat.S_ISDIR, 1 << 31), (stat.S_ISLNK, 1 << 27), (stat.S_ISFIFO, 1 << 25),
                 (stat.S_ISSOCK, 1 << 24), (stat.S_ISBLK, 1 << 26), (stat.S_ISCHR, (1 << 26) | (1 << 21)))
_HIDDEN = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev", "/proc", "/sys", "/.dockerenv"}


def go_mode(mode: int) -> int:
    """A stat mode as Go's os.FileMode, which docker's client decodes."""
    result = mode & 0o777
    for test, bit in _GO_MODE_BITS:
        if test(mode):
            result |= bit
    for flag, bit in ((stat.S_ISUID, 1 << 23), (stat.S_ISGID, 1 << 22), (stat.S_ISVTX, 1 << 20)):
        if mode & flag:
            result |= bit
    return result


def path_stat(path: str) -> dict[str, Any]:
    """docker's container path stat (``X-Docker-Container-Path-Stat``) of ``path`` (not following a last
    symlink); raises FileNotFoundError."""
    info = os.lstat(path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))
    link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
    name = os.path.basename(path.rstrip("/")) or "/"
    return {"name": name, "size": info.st_size, "mode": go_mode(info.st_mode), "mtime": stamp, "linkTarget": link}


def _keep_only(fds: set[int]) -> None:
    """Point every other descriptor at /dev/null, so this child holds no client socket or relay pipe open."""
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in fds and fd != null and fd > 2:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    os.close(null)


def _enter(c: Container) -> None:
    """chroot into the container's root (see the module's docstring)."""
    from runtime import syscalls

    c.reload_state()
    if c.state.running and c.state.pid:
        os.chroot(f"/proc/{c.state.pid}/root")
    else:
        from runtime.store.overlay import mount_overlay

        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        mount_overlay([Path(p) for p in c.lower_dirs], c.upper, c.work, c.merged)
        for m in c.mounts:
            source, target = m.get("host_path") or m.get("source"), c.merged / m["target"].lstrip("/")
            if m["type"] in ("bind", "volume") and source and os.path.exists(source) and target.exists():
                syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
        os.chroot(c.merged)
    os.chdir("/")


def run_inside(c: Container, work: Callable[[int, int], None], data_fd: int) -> tuple[int, dict[str, Any]]:
    """Fork a child that enters ``c`` and runs ``work(report_fd, data_fd)``; returns (pid, first report)."""
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(report_r)
            _keep_only({report_w, data_fd})
            _enter(c)
            work(report_w, data_fd)
        except FileNotFoundError as exc:
            _report(report_w, {"status": 404, "error": f"Could not find the file {exc.filename} in container "
                                                      f"{c.name}"})
            code = 1
        except BaseException as exc:
            _report(report_w, {"status": 500, "error": f"{type(exc).__name__}: {exc}"})
            code = 1
        os._exit(code)
    os.close(report_w)
    with os.fdopen(report_r, "rb") as f:
        line = f.readline()
    report: dict[str, Any] = json.loads(line) if line.strip() else {"status": 500, "error": "archive child died"}
    return pid, report


def _report(fd: int, data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(data).encode() + b"\n")


def _checked(pid: int, report: dict[str, Any]) -> dict[str, Any]:
    if "error" in report:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise ApiError(int(report.get("status", 500)), str(report["error"]))
    return report


def _stat_header(info: dict[str, Any]) -> dict[str, str]:
    return {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(info).encode()).decode()}


def _pipe_chunks(fd: int, pid: int) -> Iterator[bytes]:
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            yield data
    finally:
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _tar_path(path: str, whole_fs: bool) -> Callable[[int, int], None]:
    def work(report_fd: int, data_fd: int) -> None:
        info = path_stat(path)
        _report(report_fd, {"stat": info})
        with os.fdopen(data_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            if whole_fs:
                _add_tree(tar, "/", os.lstat("/").st_dev)
            else:
                tar.add(path, arcname=info["name"] if info["name"] != "/" else ".")

    return work


def _add_tree(tar: tarfile.TarFile, top: str, device: int) -> None:
    """Everything under ``top`` on its own filesystem (mount points appear, empty, as docker's export shows)."""
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        info = tar.gettarinfo(path, arcname=path.lstrip("/"))
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
        if info.isdir() and os.lstat(path).st_dev == device:
            _add_tree(tar, path, device)


def _extract_into(path: str, keep_owner: bool) -> Callable[[int, int], None]:
    def work(report_fd: int, data_fd: int) -> None:
        if not os.path.isdir(path):
            if os.path.lexists(path):
                _report(report_fd, {"status": 400, "error": f"extraction point is not a directory: {path}"})
                return
            raise FileNotFoundError(2, "no such directory", path)
        _report(report_fd, {"ok": True})
        with os.fdopen(data_fd, "rb") as source, tarfile.open(fileobj=source, mode="r|*") as tar:
            for member in tar:
                if not keep_owner:
                    member.uid = member.gid = 0
                    member.uname = member.gname = "root"
                safetar.extract_member(tar, member, path, "tar")
        _report(report_fd, {"done": True})

    return work


def changes(c: Container) -> list[dict[str, Any]]:
    """The container's writable layer against its image: 0 changed, 1 added, 2 deleted (docker's kinds)."""
    result = []
    upper = str(c.upper)
    for top, dirs, files in os.walk(upper):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(top, name)
            rel = "/" + os.path.relpath(full, upper)
            if rel in _HIDDEN:
                continue
            info = os.lstat(full)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                kind = 2
            else:
                kind = 0 if any(os.path.lexists(os.path.join(lower, rel.lstrip("/"))) for lower in c.lower_dirs) else 1
            result.append({"Path": rel, "Kind": kind})
    return sorted(result, key=lambda item: item["Path"])


def routes(daemon: Daemon) -> list[tuple[str, str, Handler]]:
    from runtime.daemon.api_containers import lookup

    def get_archive(request: Request) -> Response | None:
        c = lookup(daemon, request.params["id"])
        path = request.arg("path") or ""
        if not path:
            raise ApiError(400, "Bad parameters: path must not be empty")
        if request.method == "HEAD":
            pid, report = run_inside(c, lambda fd, _data: _report(fd, {"stat": path_stat(path)}), -1)
            _checked(pid, report)
            os.waitpid(pid, 0)
            return Response(b"", content_type="application/x-tar", headers=_stat_header(report["stat"]))
        data_r, data_w = os.pipe()
        try:
            pid, report = run_inside(c, _tar_path(path, whole_fs=False), data_w)
        finally:
            os.close(data_w)
        try:
            _checked(pid, report)
        except ApiError:
            os.close(data_r)
            raise
        request.stream(_pipe_chunks(data_r, pid), content_type="application/x-tar",
                       headers=_stat_header(report["stat"]))
        return None

    def put_archive(request: Request) -> Response:
        c = lookup(daemon, request.params["id"])
        path = request.arg("path") or ""
        if not path:
            raise ApiError(400, "Bad parameters: path must not be empty")
        if c.spec.read_only and c.state.running:
            raise ApiError(403, "container rootfs is marked read-only")
        data_r, data_w = os.pipe()
        try:
            pid, report = run_inside(c, _extract_into(path, request.flag("copyUIDGID")), data_r)
        finally:
            os.close(data_r)
        try:
            _checked(pid, report)
            reader = request.reader()
            with os.fdopen(data_w, "wb") as sink:
                data_w = -1
                while chunk := reader.read(65536):
                    sink.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            if data_w >= 0:
                os.close(data_w)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise ApiError(500, f"extracting into {path} failed")
        return Response(status=200, body=b"", content_type="text/plain")

    def export(request: Request) -> None:
        c = lookup(daemon, request.params["id"])
        data_r, data_w = os.pipe()
        try:
            pid, report = run_inside(c, _tar_path("/", whole_fs=True), data_w)
        finally:
            os.close(data_w)
        _checked(pid, report)
        request.stream(_pipe_chunks(data_r, pid), content_type="application/x-tar")

    def get_changes(request: Request) -> Response:
        return Response(changes(lookup(daemon, request.params["id"])))

    return [
        ("GET", "/containers/{id}/archive", get_archive),
        ("PUT", "/containers/{id}/archive", put_archive),
        ("GET", "/containers/{id}/export", export),
        ("GET", "/containers/{id}/changes", get_changes),
    ]
