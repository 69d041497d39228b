"""Breakages of images: layers written through or copied, the builder, the registry client."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from broken_common import (
    INSTRUCTIONS,
    RUN_FLAGS,
    become_refrt,
    breakage,
    join_options,
    option_values,
    refrt,
    split_options,
    sub,
)

# --- layers -----------------------------------------------------------------------------------------------------

def _run_then(args: list[str], after: Callable[[str], None]) -> int:
    """Run a foreground ``run --name X`` (no --rm) through refrt, then ``after(X)``."""
    if sub(args) != ("run",):
        become_refrt(args)
    options, _ = split_options(args[1:], RUN_FLAGS)
    flags = {f for f, _ in options}
    names = option_values(options, "--name")
    if not names or flags & {"--rm", "-d", "--detach"}:
        become_refrt(args)
    code = refrt(args, capture=False).returncode
    after(names[-1])
    return code


def _graph(container: str, key: str) -> list[Path]:
    text = refrt(["inspect", "--format", f"{{{{.GraphDriver.Data.{key}}}}}", container]).stdout.strip()
    return [Path(p) for p in text.split(":") if p]


def _whiteouts(upper: Path) -> list[Path]:
    found = []
    for directory, _, files in os.walk(upper):
        for name in files:
            path = Path(directory, name)
            st = path.lstat()
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append(path)
    return found


def _write_through(container: str) -> None:
    """Apply the container's upper layer to the image's layers: new files land in the top one, deletions in all."""
    upper, lowers = _graph(container, "UpperDir"), _graph(container, "LowerDir")
    if not upper or not lowers:
        return
    deleted = set(_whiteouts(upper[0]))
    for path in deleted:
        for lower in lowers:
            target = lower / path.relative_to(upper[0])
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    for directory, _, files in os.walk(upper[0]):
        for name in files:
            path = Path(directory, name)
            if path not in deleted:
                target = lowers[0] / path.relative_to(upper[0])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)


breakage("image-written", "what a container writes reaches the image's layers (no copy-on-write)")(
    lambda args: _run_then(args, _write_through))


def _aufs_whiteouts(container: str) -> None:
    for upper in _graph(container, "UpperDir")[:1]:
        for path in _whiteouts(upper):
            path.unlink()
            (path.parent / f".wh.{path.name}").touch()


breakage("whiteouts-aufs", "deletions are recorded as AUFS .wh. files, which overlayfs does not honour")(
    lambda args: _run_then(args, _aufs_whiteouts))


@breakage("layers-per-container", "every container gets its own copy of the image's layers")
def layers_per_container(args: list[str]) -> int:
    if sub(args) in (("run",), ("create",)):
        options, rest = split_options(args[1:], RUN_FLAGS)
        if rest and rest[0] in ("busybox", "busybox:latest"):
            from conformance.drivers.dockerlike import busybox_rootfs_tar

            copy = f"cf-copy-{secrets.token_hex(4)}"
            with tempfile.TemporaryDirectory() as scratch:
                tar_path = busybox_rootfs_tar(Path(scratch, "rootfs.tar"))
                with tarfile.open(tar_path, "a") as tar:
                    info = tarfile.TarInfo(f"etc/{copy}")
                    tar.addfile(info)
                made = refrt(["import", "--change", 'CMD ["sh"]', str(tar_path), copy])
                if made.returncode != 0:
                    sys.stderr.write(made.stderr)
                    return 125
            args = [args[0], *join_options(options), copy, *rest[1:]]
    become_refrt(args)


# --- build ------------------------------------------------------------------------------------------------------

BUILD_FLAGS = {"-q", "--quiet", "--no-cache", "--pull", "--rm"}


def _build_in_copy(args: list[str], change: Callable[[Path], str | None]) -> int:
    """Build from a copy of the context that ``change(copy)`` altered; a message from it refuses the build."""
    if sub(args) != ("build",):
        become_refrt(args)
    options, rest = split_options(args[1:], BUILD_FLAGS)
    if not rest:
        become_refrt(args)
    with tempfile.TemporaryDirectory(prefix="cf-broken-build-") as scratch:
        context = Path(scratch, "ctx")
        shutil.copytree(rest[0], context, symlinks=True)
        refusal = change(context)
        if refusal:
            print(refusal, file=sys.stderr)
            return 1
        return refrt(["build", *join_options(options), str(context)], capture=False).returncode


def _edit_dockerfile(edit: Callable[[list[str], Path], list[str]]) -> Callable[[Path], None]:
    def change(context: Path) -> None:
        dockerfile = context / "Dockerfile"
        dockerfile.write_text("\n".join(edit(dockerfile.read_text().splitlines(), context)) + "\n")
    return change


def _instruction(line: str) -> str:
    return line.split(maxsplit=1)[0].upper() if line.strip() and not line.lstrip().startswith("#") else ""


def _drop_instruction(name: str) -> Callable[[list[str], Path], list[str]]:
    return lambda lines, _: [ln for ln in lines if _instruction(ln) != name]


def _copy_dir_as_dir(lines: list[str], context: Path) -> list[str]:
    out = []
    for line in lines:
        words = line.split()
        if _instruction(line) == "COPY" and len(words) == 3 and (context / words[1]).is_dir() \
                and not words[2].endswith("/"):
            line = f"COPY {words[1]} {words[2]}/{Path(words[1]).name}"
        out.append(line)
    return out


def _run_failures_ignored(lines: list[str], _: Path) -> list[str]:
    return [f"RUN ({ln.split(maxsplit=1)[1]}) || true" if _instruction(ln) == "RUN" and "<<" not in ln
            and not ln.split(maxsplit=1)[1].startswith("[") else ln for ln in lines]


def _skip_unknown(lines: list[str], _: Path) -> list[str]:
    return [ln for ln in lines if not _instruction(ln) or _instruction(ln) in INSTRUCTIONS]


def _refuse_heredocs(context: Path) -> str | None:
    if re.search(r"^\s*(RUN|COPY)\b.*<<", (context / "Dockerfile").read_text(), re.MULTILINE):
        return "Error: this builder does not support Dockerfile heredocs (<<EOF)"
    return None


def _no_dockerignore(context: Path) -> None:
    (context / ".dockerignore").unlink(missing_ok=True)


def _build_breakage(name: str, what: str, change: Callable[[Path], str | None]) -> None:
    breakage(name, what)(lambda args: _build_in_copy(args, change))


_build_breakage("build-user-ignored", "the builder ignores USER", _edit_dockerfile(_drop_instruction("USER")))
_build_breakage("build-label-ignored", "the builder ignores LABEL", _edit_dockerfile(_drop_instruction("LABEL")))
_build_breakage("dockerignore-ignored", "the builder ignores .dockerignore", _no_dockerignore)
_build_breakage("copy-dir-as-dir", "COPY of a directory copies the directory itself, not its contents",
                _edit_dockerfile(_copy_dir_as_dir))
_build_breakage("heredoc-unsupported", "the builder has no Dockerfile heredocs", _refuse_heredocs)
_build_breakage("run-failures-ignored", "a failing RUN does not fail the build",
                _edit_dockerfile(_run_failures_ignored))
_build_breakage("unknown-instructions-skipped", "unknown Dockerfile instructions are skipped, not refused",
                _edit_dockerfile(_skip_unknown))


@breakage("build-arg-ignored", "build ignores --build-arg")
def build_arg_ignored(args: list[str]) -> int:
    if sub(args) == ("build",):
        options, rest = split_options(args[1:], BUILD_FLAGS)
        args = ["build", *join_options([o for o in options if o[0] != "--build-arg"]), *rest]
    become_refrt(args)


@breakage("cache-unused", "every build makes a new image (a fresh label each time: the cache never applies)")
def cache_unused(args: list[str]) -> int:
    if sub(args) == ("build",):
        args = ["build", "--label", f"cf-nonce={secrets.token_hex(8)}", *args[1:]]
    become_refrt(args)


# --- registry ---------------------------------------------------------------------------------------------------

@breakage("pull-pretends", "pull answers success without fetching anything (a tag pull re-tags local busybox)")
def pull_pretends(args: list[str]) -> int:
    if sub(args) != ("pull",):
        become_refrt(args)
    _, rest = split_options(args[1:], {"-q", "--quiet", "-a", "--all-tags"})
    if rest and "@" not in rest[0]:
        refrt(["tag", "busybox", rest[0]])
    return 0


@breakage("rmi-digest-deletes-image", "rmi of a repo@digest reference deletes the image under every name")
def rmi_digest_deletes_image(args: list[str]) -> int:
    if sub(args) == ("rmi",) and any("@" in a for a in args[1:]):
        ref = next(a for a in args[1:] if "@" in a)
        image = refrt(["image", "inspect", "--format", "{{.Id}}", ref]).stdout.strip()
        if image:
            args = ["rmi", "-f", image]
    become_refrt(args)
