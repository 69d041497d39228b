"""COPY/ADD: finding sources (context files, globs, another stage's filesystem) and writing them into a rootfs.

Docker's semantics, which users rely on: sources are relative to the context root and may not leave it
(``../x``, or a symlink leading out, is refused); ``*``, ``?`` and ``[...]`` globs never cross ``/``; copying a
directory copies its *contents*; a destination ending in ``/`` (or an existing directory, or several sources) is
a directory, otherwise the path of the single file; relative destinations are under WORKDIR; context files become
``0:0`` unless ``--chown`` (files from ``--from`` keep their owner); ``--chmod`` applies to every copied file and
directory; ADD unpacks local tar archives (plain, gzip, bzip2, xz). Writes go through a root-scoped path
resolver, so a symlink inside the image (``/usr/local -> /opt``) is followed *inside* the image, never out into
the host.

``digest`` hashes what a COPY reads (paths, types, modes, owners, contents) for the layer cache.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runtime.build.dockerignore import Ignore, _translate
from runtime.build.errors import ContextError

_MAX_LINKS = 40
_GLOB_CHARS = re.compile(r"[*?\[]")


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """The host path of ``path`` inside the tree ``root``, following symlinks as a chroot would.

    Absolute link targets start again at ``root``; ``..`` stops at ``root``. Components that do not exist are
    kept as written (the caller creates them).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (parts or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_LINKS:
                raise ContextError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


@dataclass(frozen=True)
class Entry:
    """One file, directory or link to copy: ``rel`` is its path below the source root (``a/b``)."""

    rel: str
    path: Path
    st: os.stat_result


class SourceTree:
    """Where COPY reads from: the build context (with its ``.dockerignore``) or a stage's/image's rootfs."""

    def __init__(self, root: Path, *, ignore: Ignore | None = None, is_context: bool = True) -> None:
        self.root = root
        self.ignore = ignore or Ignore([])
        self.is_context = is_context

    def _clean(self, pattern: str, keyword: str) -> str:
        rel = posixpath.normpath(pattern if self.is_context else "/" + pattern)
        if self.is_context and (rel == ".." or rel.startswith("../")):
            raise ContextError(f"{keyword} failed: forbidden path outside the build context: {pattern}")
        rel = rel.lstrip("/")
        return "" if rel == "." else rel

    def _inside(self, path: Path, pattern: str, keyword: str) -> None:
        if not self.is_context:
            return
        real = Path(os.path.realpath(path))
        root = Path(os.path.realpath(self.root))
        if real != root and root not in real.parents:
            raise ContextError(f"{keyword} failed: forbidden path outside the build context: {pattern}")

    def _visible(self, rel: str) -> bool:
        return not (self.is_context and rel and self.ignore.ignored(rel))

    def match(self, pattern: str, keyword: str = "COPY") -> list[Entry]:
        """The top-level entries ``pattern`` names (several for a glob); raises ContextError when none."""
        rel = self._clean(pattern, keyword)
        if _GLOB_CHARS.search(rel):
            regex = re.compile("^" + _translate(rel) + "$", re.S)
            found = [e for e in self.walk("") if regex.match(e.rel)]
            if not found:
                raise ContextError(f"{keyword} failed: no source files were specified (no match for {pattern})")
            return found
        path = resolve_in_root(self.root, rel)
        hidden = not self._visible(rel) and not self._reincluded_inside(rel, path)
        if hidden or not os.path.lexists(path):
            where = "in build context or excluded by .dockerignore" if self.is_context else "in source image"
            raise ContextError(f"{keyword} failed: file not found {where}: stat {pattern}: file does not exist")
        self._inside(path, pattern, keyword)
        return [Entry(rel, path, path.stat())]

    def _reincluded_inside(self, rel: str, path: Path) -> bool:
        """An ignored directory still counts when a ``!`` pattern re-includes something below it."""
        return self.ignore.has_exclusions and path.is_dir() and any(True for _ in self.walk(rel, path))

    def walk(self, rel: str, base: Path | None = None) -> Iterator[Entry]:
        """Every visible entry below ``rel`` (not ``rel`` itself), parents before children, sorted.

        ``base`` is the host path of ``rel`` when it differs (a top-level source that is a symlink, already
        resolved inside the root); below it nothing is followed.
        """
        base = base if base is not None else (self.root / rel if rel else self.root)
        try:
            names = sorted(os.listdir(base))
        except NotADirectoryError:
            return
        for name in names:
            child_rel = f"{rel}/{name}" if rel else name
            path = base / name
            st = path.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            if self._visible(child_rel):
                yield Entry(child_rel, path, st)
                if is_dir:
                    yield from self.walk(child_rel, path)
            elif is_dir and self.ignore.has_exclusions:
                # an ignored directory may still hold re-included ("!") files: look inside, and keep the
                # directory itself only if something inside is visible.
                inner = list(self.walk(child_rel, path))
                if inner:
                    yield Entry(child_rel, path, st)
                    yield from inner

    def expand_entry(self, entry: Entry) -> list[tuple[str, Entry]]:
        """(path relative to the copy destination, entry) for one matched source: a directory's contents."""
        if stat.S_ISDIR(entry.st.st_mode):
            cut = len(entry.rel) + 1 if entry.rel else 0
            return [(e.rel[cut:], e) for e in self.walk(entry.rel, entry.path)]
        return [("", entry)]


def digest(tree: SourceTree, entries: list[Entry]) -> str:
    """sha256 over what a COPY of ``entries`` reads: relative paths, types, modes, owners and contents."""
    h = hashlib.sha256()
    for top in entries:
        h.update(f"source {top.rel}\n".encode())
        _hash_entry(h, "", top.path, top.st)
        if stat.S_ISDIR(top.st.st_mode):
            for rel, entry in tree.expand_entry(top):
                _hash_entry(h, rel, entry.path, entry.st)
    return "sha256:" + h.hexdigest()


def _hash_entry(h: hashlib._Hash, rel: str, path: Path, st: os.stat_result) -> None:
    kind = stat.S_IFMT(st.st_mode)
    h.update(f"{rel}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}:{st.st_gid}\0".encode())
    if stat.S_ISREG(st.st_mode):
        h.update(_file_sha(path).encode())
    elif stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode())
    h.update(b"\n")


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


def parse_chown(spec: str, rootfs: Path) -> Owner:
    """``--chown=user[:group]`` with names looked up in the *destination* image's /etc/passwd and /etc/group."""
    user, _, group = spec.partition(":")
    uid, primary_gid = _lookup_user(user, rootfs)
    # docker: a user given without a group gets the uid as gid when numeric, else the user's primary group
    default_gid = uid if user.isdigit() else primary_gid
    return Owner(uid, _lookup_group(group, rootfs) if group else default_gid)


def _db(rootfs: Path, name: str) -> list[list[str]]:
    path = resolve_in_root(rootfs, f"/etc/{name}")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _lookup_user(user: str, rootfs: Path) -> tuple[int, int]:
    if user.isdigit():
        uid = int(user)
        for row in _db(rootfs, "passwd"):
            if len(row) > 3 and row[2] == user and row[3].isdigit():
                return uid, int(row[3])
        return uid, uid
    for row in _db(rootfs, "passwd"):
        if len(row) > 3 and row[0] == user and row[2].isdigit() and row[3].isdigit():
            return int(row[2]), int(row[3])
    raise ContextError(f"unable to convert uid/gid chown string to host mapping: no such user: {user}")


def _lookup_group(group: str, rootfs: Path) -> int:
    if group.isdigit():
        return int(group)
    for row in _db(rootfs, "group"):
        if len(row) > 2 and row[0] == group and row[2].isdigit():
            return int(row[2])
    raise ContextError(f"unable to convert uid/gid chown string to host mapping: no such group: {group}")


def parse_chmod(spec: str) -> int:
    if not re.fullmatch(r"[0-7]{3,4}", spec):
        raise ContextError(f"invalid --chmod value {spec!r}: only octal modes such as 0755 are supported")
    return int(spec, 8)


class RootfsWriter:
    """Creates files inside a mounted rootfs (an overlay's merged view) with COPY's ownership and modes."""

    def __init__(self, rootfs: Path, *, owner: Owner | None, chmod: int | None, keep_owner: bool) -> None:
        self.rootfs = rootfs
        self.owner = owner
        self.chmod = chmod
        self.keep_owner = keep_owner

    def _ids(self, st: os.stat_result | None) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner.uid, self.owner.gid
        if self.keep_owner and st is not None:
            return st.st_uid, st.st_gid
        return 0, 0

    def mkdirs(self, image_path: str) -> Path:
        """Create ``image_path`` and missing parents (0755, COPY's owner); returns its host path."""
        current = "/"
        for part in [p for p in image_path.split("/") if p]:
            current = posixpath.join(current, part)
            host = resolve_in_root(self.rootfs, current)
            if not os.path.lexists(host):
                os.mkdir(host, 0o755)
                uid, gid = self._ids(None)
                os.lchown(host, uid, gid)
            elif not host.is_dir():
                raise ContextError(f"cannot copy to {image_path}: {current} is not a directory")
        return resolve_in_root(self.rootfs, image_path)

    def is_dir(self, image_path: str) -> bool:
        return resolve_in_root(self.rootfs, image_path).is_dir()

    def put(self, image_path: str, src: Path, st: os.stat_result) -> None:
        """Copy one entry (file, directory, symlink, fifo/device) to ``image_path``."""
        parent, name = posixpath.split(image_path.rstrip("/") or "/")
        if not name:
            self._meta(self.rootfs, st, is_link=False)
            return
        self.mkdirs(parent)
        host = resolve_in_root(self.rootfs, parent) / name
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if host.is_symlink() or (os.path.lexists(host) and not host.is_dir()):
                host.unlink()
            if not os.path.lexists(host):
                os.mkdir(host, 0o700)
        else:
            if host.is_dir() and not host.is_symlink():
                raise ContextError(f"cannot overwrite directory {image_path} with a non-directory")
            if os.path.lexists(host):
                host.unlink()
            if stat.S_ISREG(mode):
                with open(src, "rb") as fin, open(host, "xb") as fout:
                    while block := fin.read(1 << 20):
                        fout.write(block)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(src), host)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(host)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(host, mode, st.st_rdev)
            else:
                return  # sockets are not copied, as docker
        self._meta(host, st, is_link=stat.S_ISLNK(mode))

    def _meta(self, host: Path, st: os.stat_result, *, is_link: bool) -> None:
        uid, gid = self._ids(st)
        os.lchown(host, uid, gid)
        if not is_link:
            os.chmod(host, self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode))
        os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_entries(
    tree: SourceTree, entries: list[Entry], dest: str, writer: RootfsWriter, *, keyword: str, extract: bool
) -> None:
    """COPY/ADD ``entries`` to the absolute image path ``dest`` (a trailing ``/`` means a directory)."""
    to_dir = dest.endswith("/") or writer.is_dir(dest)
    if len(entries) > 1 and not to_dir:
        raise ContextError(
            f"When using {keyword} with more than one source file, the destination must be a directory and end with a /"
        )
    for entry in entries:
        st = entry.st
        if stat.S_ISDIR(st.st_mode):
            writer.mkdirs(dest)
            for rel, inner in tree.expand_entry(entry):
                writer.put(posixpath.join(dest, rel), inner.path, inner.st)
        elif extract and _is_archive(entry.path):
            writer.mkdirs(dest)
            extract_archive(entry.path, dest, writer)
        else:
            name = posixpath.basename(entry.rel) or entry.path.name
            target = posixpath.join(dest, name) if to_dir else dest
            writer.put(target, entry.path, st)


def write_content(dest: str, name: str, data: bytes, writer: RootfsWriter, *, to_dir: bool) -> None:
    """A heredoc source of COPY/ADD: a file named after its delimiter (mode 0644) or the destination file."""
    target = posixpath.join(dest, name) if to_dir else dest
    parent = posixpath.dirname(target.rstrip("/"))
    writer.mkdirs(parent)
    host = resolve_in_root(writer.rootfs, parent) / posixpath.basename(target.rstrip("/"))
    if os.path.lexists(host):
        host.unlink()
    host.write_bytes(data)
    uid, gid = writer._ids(None)
    os.lchown(host, uid, gid)
    os.chmod(host, writer.chmod if writer.chmod is not None else 0o644)


def _is_archive(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def extract_archive(archive: Path, dest: str, writer: RootfsWriter) -> None:
    """ADD's unpacking of a local tar: members land below ``dest``, never outside the rootfs; owners kept."""
    keep = RootfsWriter(writer.rootfs, owner=writer.owner, chmod=writer.chmod, keep_owner=True)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = posixpath.normpath("/" + member.name).lstrip("/")
            if not name or name == ".":
                continue
            target = posixpath.join(dest, name)
            parent, base = posixpath.split(target)
            keep.mkdirs(parent)
            host = resolve_in_root(keep.rootfs, parent) / base
            if member.isdir():
                if not host.is_dir():
                    if os.path.lexists(host):
                        host.unlink()
                    os.mkdir(host, 0o700)
            else:
                if os.path.lexists(host) and not (host.is_dir() and not host.is_symlink()):
                    host.unlink()
                if member.isreg():
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, open(host, "xb") as fout:
                        while block := src.read(1 << 20):
                            fout.write(block)
                elif member.issym():
                    os.symlink(member.linkname, host)
                elif member.islnk():
                    link_src = resolve_in_root(keep.rootfs, posixpath.join(dest, member.linkname.lstrip("/")))
                    os.link(link_src, host)
                    continue
                elif member.isfifo():
                    os.mkfifo(host)
                elif member.ischr() or member.isblk():
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(host, kind | member.mode, os.makedev(member.devmajor, member.devminor))
                else:
                    continue
            uid, gid = (keep.owner.uid, keep.owner.gid) if keep.owner else (member.uid, member.gid)
            os.lchown(host, uid, gid)
            if not member.issym():
                os.chmod(host, keep.chmod if keep.chmod is not None else member.mode & 0o7777)
            os.utime(host, (member.mtime, member.mtime), follow_symlinks=False)
