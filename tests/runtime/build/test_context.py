"""COPY/ADD source matching and writing, on plain directories (the builder does the same into an overlay)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from runtime.build.context import (
    Owner,
    RootfsWriter,
    SourceTree,
    copy_entries,
    digest,
    parse_chmod,
    parse_chown,
    resolve_in_root,
    write_content,
)
from runtime.build.dockerignore import Ignore, compile_patterns
from runtime.build.errors import ContextError


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "c.log").write_text("c")
    (root / "dir" / "one").write_text("1")
    (root / "dir" / "sub" / "two").write_text("2")
    os.symlink("a.txt", root / "link")
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (root / "opt").mkdir()
    os.symlink("/opt", root / "usrlocal")  # an absolute link inside the image
    return root


def _writer(root: Path, **kw: object) -> RootfsWriter:
    return RootfsWriter(root, owner=kw.get("owner"), chmod=kw.get("chmod"), keep_owner=False)  # type: ignore[arg-type]


def test_glob_matches_one_level(ctx: Path) -> None:
    tree = SourceTree(ctx)
    assert [e.rel for e in tree.match("*.txt")] == ["a.txt", "b.txt"]
    assert [e.rel for e in tree.match("dir/*")] == ["dir/one", "dir/sub"]
    with pytest.raises(ContextError, match="no source files"):
        tree.match("*.none")


def test_outside_context_refused(ctx: Path) -> None:
    with pytest.raises(ContextError, match="outside the build context"):
        SourceTree(ctx).match("../etc/passwd")


def test_symlink_out_of_context_stays_inside(ctx: Path) -> None:
    os.symlink("/etc/passwd", ctx / "escape")
    with pytest.raises(ContextError, match="not found"):
        SourceTree(ctx).match("escape")  # resolved inside the context: there is no ctx/etc/passwd


def test_dockerignore_hides_files(ctx: Path) -> None:
    tree = SourceTree(ctx, ignore=Ignore(compile_patterns(["*.log", "dir", "!dir/sub"])))
    with pytest.raises(ContextError, match=r"excluded by \.dockerignore"):
        tree.match("c.log")
    assert [e.rel for e in tree.walk("")] == ["a.txt", "b.txt", "dir", "dir/sub", "dir/sub/two", "link"]
    entries = tree.match("dir")  # ignored itself, but "!dir/sub" re-includes part of it
    assert [rel for rel, _ in tree.expand_entry(entries[0])] == ["sub", "sub/two"]


def test_directory_copies_contents(ctx: Path, rootfs: Path) -> None:
    tree = SourceTree(ctx)
    copy_entries(tree, tree.match("dir"), "/app", _writer(rootfs), keyword="COPY", extract=False)
    assert (rootfs / "app" / "one").read_text() == "1"
    assert (rootfs / "app" / "sub" / "two").read_text() == "2"
    assert not (rootfs / "app" / "dir").exists()


def test_file_to_dir_and_to_name(ctx: Path, rootfs: Path) -> None:
    tree = SourceTree(ctx)
    copy_entries(tree, tree.match("a.txt"), "/d/", _writer(rootfs), keyword="COPY", extract=False)
    copy_entries(tree, tree.match("a.txt"), "/renamed", _writer(rootfs), keyword="COPY", extract=False)
    assert (rootfs / "d" / "a.txt").read_text() == "a"
    assert (rootfs / "renamed").read_text() == "a"


def test_several_sources_need_a_directory(ctx: Path, rootfs: Path) -> None:
    tree = SourceTree(ctx)
    with pytest.raises(ContextError, match="must be a directory and end with a /"):
        copy_entries(tree, tree.match("*.txt"), "/file", _writer(rootfs), keyword="COPY", extract=False)


def test_dest_symlink_followed_inside_rootfs(ctx: Path, rootfs: Path) -> None:
    tree = SourceTree(ctx)
    copy_entries(tree, tree.match("a.txt"), "/usrlocal/", _writer(rootfs), keyword="COPY", extract=False)
    assert (rootfs / "opt" / "a.txt").read_text() == "a"
    assert resolve_in_root(rootfs, "/usrlocal/../../../etc/passwd") == rootfs / "etc" / "passwd"


def test_chown_chmod(ctx: Path, rootfs: Path) -> None:
    owner = parse_chown("app", rootfs)
    assert owner == Owner(1000, 1001)
    assert parse_chown("app:staff", rootfs) == Owner(1000, 50)
    assert parse_chown("7", rootfs) == Owner(7, 7)
    with pytest.raises(ContextError, match="no such user"):
        parse_chown("ghost", rootfs)
    tree = SourceTree(ctx)
    writer = RootfsWriter(rootfs, owner=owner, chmod=parse_chmod("0751"), keep_owner=False)
    copy_entries(tree, tree.match("dir"), "/owned", writer, keyword="COPY", extract=False)
    st = (rootfs / "owned" / "sub" / "two").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1001, 0o751)
    with pytest.raises(ContextError):
        parse_chmod("u+x")


def test_add_extracts_tar(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "tarctx"
    ctx.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/file")
        info.size = 3
        info.uid = 5
        tar.addfile(info, io.BytesIO(b"xyz"))
        evil = tarfile.TarInfo("../../evil")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"!"))
    (ctx / "a.tar.gz").write_bytes(buf.getvalue())
    tree = SourceTree(ctx)
    copy_entries(tree, tree.match("a.tar.gz"), "/x", _writer(rootfs), keyword="ADD", extract=True)
    assert (rootfs / "x" / "pkg" / "file").read_bytes() == b"xyz"
    assert (rootfs / "x" / "pkg" / "file").stat().st_uid == 5
    assert (rootfs / "x" / "evil").exists() and not (tmp_path / "evil").exists()
    copy_entries(tree, tree.match("a.tar.gz"), "/y/", _writer(rootfs), keyword="COPY", extract=False)
    assert (rootfs / "y" / "a.tar.gz").is_file()


def test_heredoc_content(rootfs: Path) -> None:
    write_content("/etc/app/", "conf", b"k=v\n", _writer(rootfs), to_dir=True)
    assert (rootfs / "etc" / "app" / "conf").read_text() == "k=v\n"
    assert (rootfs / "etc" / "app" / "conf").stat().st_mode & 0o777 == 0o644


def test_digest_follows_content_and_mode(ctx: Path) -> None:
    tree = SourceTree(ctx)
    first = digest(tree, tree.match("dir"))
    assert digest(tree, tree.match("dir")) == first
    (ctx / "dir" / "sub" / "two").write_text("changed")
    second = digest(tree, tree.match("dir"))
    assert second != first
    os.chmod(ctx / "dir" / "one", 0o600)
    assert digest(tree, tree.match("dir")) != second
    assert digest(tree, tree.match("a.txt")) != digest(tree, tree.match("b.txt"))
