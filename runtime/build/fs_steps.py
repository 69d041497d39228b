"""The instructions that may change files (WORKDIR, RUN, COPY, ADD): each works in an overlay of the stage's
layers with a fresh upper dir, which the store turns into the next layer, unless the cache has that layer already.

Apart from the config-only instructions (:mod:`runtime.build.config_steps`) because these are the ones that mount,
run containers and read the build context, with the bounds and clean-ups that takes.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runtime.build import context as ctxfiles
from runtime.build.cache import CacheEntry, step_key
from runtime.build.errors import BuildError, ContextError, StepFailed
from runtime.build.expand import Lexer
from runtime.build.parser import Instruction, parse_heredoc_word
from runtime.build.session import BuildSession
from runtime.build.state import DEFAULT_PATH, State, StepContext, now
from runtime.errors import RefrtError, UsageError
from runtime.spec import MountSpec

if TYPE_CHECKING:
    from runtime.store.layers import Layer

_URL = re.compile(r"^(https?://|git@|git://)")


class FilesystemSteps(BuildSession):
    """The ``_do_<keyword>`` handlers of the instructions that may make a layer, and the overlay work they share."""

    def _fs_step(self, new: State, label: str, created_by: str, content: str, work: Any) -> None:
        """A step that may change files: reuse the cached layer, or run ``work(upper)`` and store the result."""
        step = self.begin(self._title)
        key = step_key(new.key, created_by, self._args_in_effect(new), content)
        entry = None if self.opts.no_cache else self.cache.get(key)
        layer = None
        if entry is not None and entry.diff_id is not None:
            layer = self.store.get_layer(entry.diff_id)
            if layer is None:
                entry = None  # the layer was garbage-collected since: rebuild
            else:
                layer = self.store.ensure_layer(layer.digest, layer.diff_id)  # fresh again: spared by a gc
        if entry is None:
            with self._scratch() as scratch:
                work(scratch)
                layer = self.store.add_layer_from_dir(scratch / "upper")
            history: dict[str, Any] = {"created": now(), "created_by": created_by}
            if layer is None:
                history["empty_layer"] = True
            entry = CacheEntry(layer.diff_id if layer else None, history)
            self.cache.put(key, entry)
            self.done(step)
        else:
            self.done(step, cached=True)
        if layer is not None:
            from runtime.store.overlay import check_depth

            check_depth(len(new.layers) + 1)  # docker's "max depth exceeded" for a layer past the limit
            new.layers.append(layer)
        new.config["history"] = [*new.config.get("history", []), entry.history]
        new.key = key

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[Path]:
        base = self.ctx.paths.build_cache / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=base, prefix="step-"))
        try:
            for name in ("upper", "work", "merged", "empty"):
                (path / name).mkdir()
            os.chmod(path / "upper", 0o755)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _lower_dirs(self, layers: list[Layer], scratch: Path) -> list[Path]:
        return [layer.path for layer in reversed(layers)] or [scratch / "empty"]

    @contextlib.contextmanager
    def _mounted(self, layers: list[Layer], scratch: Path, name: str = "") -> Iterator[Path]:
        """The rootfs of ``layers`` mounted read-write at ``scratch/merged`` (writes land in ``scratch/upper``)."""
        from runtime.store.overlay import mount_overlay, unmount

        upper, work, merged = scratch / f"upper{name}", scratch / f"work{name}", scratch / f"merged{name}"
        for d in (upper, work, merged):
            d.mkdir(exist_ok=True)
        mount_overlay(self._lower_dirs(layers, scratch), upper, work, merged)
        try:
            yield merged
        finally:
            unmount(merged)

    def _do_workdir(self, step: StepContext, new: State) -> None:
        path = step.word(step.instr.args[0])
        path = posixpath.normpath(posixpath.join(new.workdir, path))
        new.cfg["WorkingDir"] = path
        created_by = "WORKDIR " + path
        if not new.layers and path == "/":
            self._meta_step(new, step.label, created_by)
            return
        seen = None if self.opts.no_cache else self.cache.get(step_key(new.key, created_by, self._args_in_effect(new)))
        # the parent's files decide whether the directory must be made; a cached answer spares a mount
        exists = seen.diff_id is None if seen is not None else self._exists(new.layers, path)
        if exists:
            self._meta_step(new, step.label, created_by)
            return

        def work(scratch: Path) -> None:
            with self._mounted(new.layers, scratch) as root:
                user = str(new.cfg.get("User") or "")
                owner = ctxfiles.parse_chown(user, root) if user else None  # BuildKit: made as the USER
                writer = ctxfiles.RootfsWriter(root, owner=owner, chmod=None, keep_owner=False)
                writer.mkdirs(path)

        self._fs_step(new, step.label, created_by, "", work)

    def _exists(self, layers: list[Layer], path: str) -> bool:
        """Whether ``path`` is a directory in the rootfs of ``layers`` (top layer first, whiteouts respected)."""
        with self._scratch() as scratch, self._mounted(layers, scratch) as root:
            return ctxfiles.resolve_in_root(root, path).is_dir()

    def _do_run(self, step: StepContext, new: State) -> None:
        argv, script = self._run_argv(new, step.instr)
        args = self._args_in_effect(new)
        shown = " ".join(argv)
        if args:
            shown = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in sorted(args.items())) + " " + shown
        network = "none" if step.instr.flags.get("network") == "none" else "host"  # docker build's default: host
        created_by = "RUN " + ("--network=none " if network == "none" else "") + shown
        content = _sha(script.encode()) if script else ""
        run_env = self._run_env(new)

        def work(scratch: Path) -> None:
            mounts: list[MountSpec] = []
            if script:
                # "RUN <<EOF" whose document starts with "#!": BuildKit runs it as a file under /dev/pipes
                host = scratch / "pipes" / posixpath.basename(argv[0])
                host.parent.mkdir()
                host.write_text(script)
                host.chmod(0o755)
                mounts.append(MountSpec(type="bind", source=str(host), target=argv[0], read_only=True))
            try:
                status = self._run_container(new, scratch, argv, run_env, mounts, network)
            except BuildError:
                raise
            except RefrtError as exc:
                raise StepFailed(
                    f'process "{" ".join(argv)}" could not be started: {exc} (Dockerfile line {step.instr.line})',
                    exc.exit_code,
                ) from None
            if status != 0:
                raise StepFailed(
                    f'process "{" ".join(argv)}" did not complete successfully: exit code: {status}'
                    f" (Dockerfile line {step.instr.line})",
                    status,
                )
            _drop_mountpoints(scratch / "upper", self._lower_dirs(new.layers, scratch))

        self._fs_step(new, step.label, created_by, content, work)

    def _run_argv(self, new: State, instr: Instruction) -> tuple[list[str], str]:
        """The argv of a RUN, and the script to bind at argv[0] for a heredoc with a shebang ("" if none)."""
        if instr.json:
            return list(instr.args), ""
        script = instr.args[0]
        if instr.heredocs:
            marker = parse_heredoc_word(script)
            if marker is not None and len(instr.heredocs) == 1:
                # "RUN <<EOF": the document is the script; with a shebang it runs as a file, else via the shell
                data = instr.heredocs[0].text()
                if data.startswith("#!"):
                    return ["/dev/pipes/" + instr.heredocs[0].name], data
                script = data
            else:
                script += "".join("\n" + doc.content + doc.name for doc in instr.heredocs)
        return [*new.shell, script], ""

    def _run_env(self, new: State) -> list[str]:
        env = new.env_list()
        names = {e.partition("=")[0] for e in env}
        for key, value in sorted(self._args_in_effect(new).items()):
            if key not in names:
                env.append(f"{key}={value}")
        if "PATH" not in names:
            env.insert(0, DEFAULT_PATH)
        return env

    def _run_container(
        self, new: State, scratch: Path, argv: list[str], env: list[str], mounts: list[MountSpec], network: str
    ) -> int:
        """Run ``argv`` in a throw-away container over the state's layers; its changes land in scratch/upper."""
        from runtime.container import run_in_rootfs

        if self.out is not None:
            self.out.flush()
        with contextlib.ExitStack() as stack:
            fd = _fileno(self.out)
            if fd is None:
                fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                stack.callback(os.close, fd)
            return run_in_rootfs(
                self.ctx,
                self._lower_dirs(new.layers, scratch),
                scratch / "upper",
                argv,
                env,
                new.workdir,
                str(new.cfg.get("User") or ""),
                network=network,
                mounts=mounts,
                stdout=fd,
                stderr=fd,
            )

    def _do_copy(self, step: StepContext, new: State) -> None:
        self._copy(step, new, extract=False)

    def _do_add(self, step: StepContext, new: State) -> None:
        self._copy(step, new, extract=True)

    def _copy(self, step: StepContext, new: State, *, extract: bool) -> None:
        """COPY and ADD: the same work, ADD also unpacking local archives (``extract``)."""
        instr = step.instr
        kw = instr.keyword
        dest = step.word(instr.args[-1])
        to_dir_hint = dest.endswith("/") or dest in (".", "")
        dest = posixpath.normpath(posixpath.join(new.workdir, dest))
        if (to_dir_hint or instr.args[-1].endswith("/")) and not dest.endswith("/"):
            dest += "/"
        chown = step.word(instr.flags["chown"]) if "chown" in instr.flags else None
        chmod = ctxfiles.parse_chmod(step.word(instr.flags["chmod"])) if "chmod" in instr.flags else None
        docs = {doc.name: doc for doc in instr.heredocs}
        sources: list[str] = []
        contents: list[tuple[str, bytes]] = []
        for raw in instr.args[:-1]:
            marker = None if instr.json else parse_heredoc_word(raw)
            if marker is not None and marker[0] in docs:
                doc = docs[marker[0]]
                data = doc.text()
                if doc.expand:
                    data = Lexer(skip_quotes=True).word(data, step.env)
                contents.append((doc.name, data.encode()))
            else:
                sources.append(step.word(raw))
        for src in sources:
            if _URL.match(src):
                raise BuildError(f"{kw} from a URL is not supported by refrt (builds have no network): {src}")
        from_ref = step.word(instr.flags["from"]) if "from" in instr.flags else None
        flags = " ".join(f"--{k}={v}" for k, v in instr.flags.items() if k != "link")
        created_by = f"{kw} {flags + ' ' if flags else ''}{' '.join(sources + [n for n, _ in contents])} {dest}"

        src_layers: list[Layer] | None = None
        if from_ref is not None:
            dep = self._stage_ref(step.df, from_ref, step.stage.index)
            if dep is not None:
                src_state = self.results[dep.index]
                src_layers, src_key = src_state.layers, src_state.key
            else:
                image, _ = self._image(from_ref)
                src_layers, src_key = list(image.layers), "image:" + image.id
            content = f"from {src_key}"
            entries_ctx: list[ctxfiles.Entry] = []
        else:
            assert self.tree is not None
            entries_ctx = [e for src in sources for e in self.tree.match(src, kw)]
            _check_step_context(self.tree, entries_ctx, kw)
            content = ctxfiles.digest(self.tree, entries_ctx)
        content += "".join(f"\nheredoc {name} " + _sha(data) for name, data in contents)

        def work(scratch: Path) -> None:
            with self._mounted(new.layers, scratch) as root:
                owner = ctxfiles.parse_chown(chown, root) if chown else None
                writer = ctxfiles.RootfsWriter(root, owner=owner, chmod=chmod, keep_owner=from_ref is not None)
                several = len(sources) + len(contents) > 1
                if several and not (dest.endswith("/") or writer.is_dir(dest)):
                    raise ContextError(
                        f"When using {kw} with more than one source file, the destination must be a directory "
                        "and end with a /"
                    )
                if src_layers is not None:
                    with self._mounted(src_layers, scratch, "-src") as src_root:
                        tree = ctxfiles.SourceTree(src_root, is_context=False)
                        entries = [e for src in sources for e in tree.match(src, kw)]
                        ctxfiles.copy_entries(tree, entries, dest, writer, keyword=kw, extract=False)
                else:
                    assert self.tree is not None
                    ctxfiles.copy_entries(self.tree, entries_ctx, dest, writer, keyword=kw, extract=extract)
                to_dir = dest.endswith("/") or writer.is_dir(dest) or several
                for name, data in contents:
                    ctxfiles.write_content(dest, name, data, writer, to_dir=to_dir)

        self._fs_step(new, step.label, created_by, content, work)


def _fileno(out: TextIO | None) -> int | None:
    if out is None:
        return None
    try:
        return out.fileno()
    except (OSError, ValueError, AttributeError):
        return None


_MOUNTPOINTS = ("etc/hosts", "etc/hostname", "etc/resolv.conf")


def _drop_mountpoints(upper: Path, lowers: list[Path]) -> None:
    """Remove the empty files the container's /etc/hosts-style bind mounts left in the upper dir.

    They are mount points, not the command's work; Docker does not keep them in the layer either."""
    for rel in _MOUNTPOINTS:
        path = upper / rel
        empty = path.is_file() and not path.is_symlink() and path.stat().st_size == 0
        if empty and not any(os.path.lexists(lower / rel) for lower in lowers):
            path.unlink()
    etc = upper / "etc"
    unused = etc.is_dir() and not etc.is_symlink() and not any(etc.iterdir()) and not _opaque(etc)
    if unused and any((lower / "etc").is_dir() for lower in lowers):
        etc.rmdir()


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


#: Most bytes of regular files one COPY/ADD may read from the build context; ``REFRT_BUILD_MAX_STEP_CONTEXT``
#: (bytes) overrides it. A bound, so a mistaken ``COPY . .`` of a huge tree fails before hashing and copying it.
MAX_STEP_CONTEXT = 16 << 30


def _check_step_context(tree: ctxfiles.SourceTree, entries: list[ctxfiles.Entry], keyword: str) -> None:
    raw = os.environ.get("REFRT_BUILD_MAX_STEP_CONTEXT", "").strip()
    if raw and not raw.isdigit():
        raise UsageError(f"invalid REFRT_BUILD_MAX_STEP_CONTEXT {raw!r}: want a number of bytes")
    limit = int(raw) if raw else MAX_STEP_CONTEXT
    total = 0
    for top in entries:
        for _, entry in tree.expand_entry(top):
            total += entry.st.st_size if stat.S_ISREG(entry.st.st_mode) else 0
            if total > limit:
                raise ContextError(f"{keyword} reads more than {limit} bytes of the build context (the bound per step)")


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
