"""Executes a parsed Dockerfile: stages, steps, layers, the cache, and the final image.

Each stage's state is its layers and its OCI image config. Steps that change files (RUN, COPY, ADD, a WORKDIR that
must be created) work in an overlay of the state's layers with a fresh upper dir, which the store turns into the
next layer; every other instruction only edits the config and adds a history entry with ``empty_layer: true``,
as Docker does. Only the stages the target needs (through ``FROM <stage>`` and ``COPY --from``) are built, as
BuildKit does. Progress goes to ``out`` in BuildKit's plain style (``#3 [build 2/5] RUN ...`` / ``#3 CACHED`` /
``#3 DONE 0.4s``); the RUN commands' own output goes there too.

Choices where Docker leaves room, documented: every build failure raises a :class:`BuildError` (exit 1, as
``docker build``); ``ADD`` of a URL is refused (builds have no network to fetch with); the cache ignores file
mtimes (as BuildKit: a ``touch`` alone keeps a COPY cached, a content, mode or owner change does not); ``RUN
--mount`` and ``--security`` are refused rather than ignored, ``--network=none|host|default`` is honoured;
``FROM --platform`` is accepted and the host's platform is used (BuildKit's ``BUILDPLATFORM``/``TARGETARCH``...
args hold the host's values).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from runtime.build import context as ctxfiles
from runtime.build.cache import BuildCache, CacheEntry, step_key
from runtime.build.dockerignore import Ignore
from runtime.build.errors import BuildError, ContextError, DockerfileError, ExpansionError, StepFailed
from runtime.build.expand import Lexer
from runtime.build.parser import (
    Dockerfile,
    Instruction,
    Stage,
    check_instruction,
    parse,
    parse_duration,
    parse_heredoc_word,
    parse_instructions,
)
from runtime.errors import RefrtError, UsageError
from runtime.spec import MountSpec

if TYPE_CHECKING:
    from runtime.cli import Context
    from runtime.store.images import Image
    from runtime.store.layers import Layer
    from runtime.store.store import Store

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_URL = re.compile(r"^(https?://|git@|git://)")


@dataclass
class BuildOptions:
    """What ``refrt build`` was asked: the context, the Dockerfile and the flags."""

    context: Path
    dockerfile: Path | None = None
    dockerfile_text: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    out: TextIO | None = None


@dataclass
class State:
    """A stage in progress: its layers (bottom first), image config, cache key and ARGs in effect."""

    layers: list[Layer]
    config: dict[str, Any]
    key: str
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False

    @property
    def cfg(self) -> dict[str, Any]:
        inner: dict[str, Any] = self.config.setdefault("config", {})
        return inner

    def env_list(self) -> list[str]:
        return list(self.cfg.get("Env") or [])

    def env(self) -> dict[str, str]:
        """What ``$VAR`` sees: build args in effect, overridden by ENV (Docker's precedence)."""
        out = {k: v for k, v in self.args.items() if v is not None}
        for item in self.env_list():
            k, _, v = item.partition("=")
            out[k] = v
        return out

    def set_env(self, key: str, value: str) -> None:
        env = [e for e in self.env_list() if e.partition("=")[0] != key]
        env.append(f"{key}={value}")
        self.cfg["Env"] = env

    @property
    def workdir(self) -> str:
        return str(self.cfg.get("WorkingDir") or "/")

    @property
    def shell(self) -> list[str]:
        return list(self.cfg.get("Shell") or DEFAULT_SHELL)


@dataclass
class Step:
    """One numbered line of progress."""

    number: int
    title: str
    started: float = field(default_factory=time.monotonic)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Builder:
    """Builds one Dockerfile into one image in the store of ``ctx``."""

    def __init__(self, ctx: Context, options: BuildOptions) -> None:
        from runtime.store.store import Store

        self.ctx = ctx
        self.opts = options
        self.out = options.out
        self.store: Store = Store(ctx.paths)
        self.cache = BuildCache(ctx.paths.build_cache)
        self.counter = 0
        self.results: dict[int, State] = {}
        self.meta_env: dict[str, str] = {}
        self.used_args: set[str] = set()
        self.df: Dockerfile | None = None
        self.tree: ctxfiles.SourceTree | None = None
        self._title = ""

    # ------------------------------------------------------------------------------------------- output

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def begin(self, title: str) -> Step:
        self.counter += 1
        step = Step(self.counter, title)
        self.say(f"#{step.number} {title}")
        return step

    def done(self, step: Step, cached: bool = False) -> None:
        if cached:
            self.say(f"#{step.number} CACHED")
        else:
            self.say(f"#{step.number} DONE {time.monotonic() - step.started:.1f}s")

    # ---------------------------------------------------------------------------------------- top level

    def load(self) -> Dockerfile:
        """Read and parse the Dockerfile; remember the context and its .dockerignore."""
        ctx_dir = self.opts.context
        if not ctx_dir.is_dir():
            raise ContextError(f"unable to prepare context: path {str(ctx_dir)!r} not found")
        if self.opts.dockerfile_text is not None:
            text, name = self.opts.dockerfile_text, "Dockerfile"
        else:
            path = self.opts.dockerfile or ctx_dir / "Dockerfile"
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise BuildError(f"failed to read dockerfile: open {path}: {exc.strerror}") from None
            name = path.name
        step = self.begin("[internal] load build definition from " + name)
        try:
            df = parse(text)
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, exc.line, filename=name) from None
        for warning in df.warnings:
            self.say(f"#{step.number} WARNING: {warning}")
        self.done(step)
        try:
            ignore = Ignore.load(ctx_dir)
        except ValueError as exc:
            raise ContextError(f"invalid .dockerignore: {exc}") from None
        self.tree = ctxfiles.SourceTree(ctx_dir, ignore=ignore)
        self.df = df
        return df

    def build(self) -> Image:
        """Build the target; a build that fails takes back the cache entries it made (no partial cache)."""
        try:
            return self._build()
        except BaseException:
            self.cache.discard_created()
            raise

    def _build(self) -> Image:
        df = self.load()
        self.meta_env = self._meta_args(df)
        target = self._target(df)
        needed = self._needed_stages(df, target)
        for stage in df.stages:
            if stage.index in needed:
                self.results[stage.index] = self._build_stage(df, stage)
        final = self.results[target.index]
        unused = sorted(set(self.opts.build_args) - self.used_args - set(self.meta_env))
        if unused:
            self.say(f"[Warning] One or more build-args {unused} were not consumed")
        return self._commit(final)

    def _meta_args(self, df: Dockerfile) -> dict[str, str]:
        """Global ARGs (before the first FROM): usable in FROM lines, and as defaults for re-declared ARGs."""
        env = _platform_args()
        lexer = Lexer(df.escape)
        for instr in df.meta_args:
            for word in instr.args:
                name, has_default, default = word.partition("=")
                name = self._expand(lexer, name, env, instr)
                if name in self.opts.build_args:
                    env[name] = self.opts.build_args[name]
                    self.used_args.add(name)
                elif has_default:
                    env[name] = self._expand(lexer, default, env, instr)
        return env

    def _target(self, df: Dockerfile) -> Stage:
        if not self.opts.target:
            return df.stages[-1]
        stage = df.stage(self.opts.target)
        if stage is None or (stage.name is None and not self.opts.target.isdigit()):
            raise BuildError(f'target stage "{self.opts.target}" could not be found')
        return stage

    def _stage_ref(self, df: Dockerfile, ref: str, before: int) -> Stage | None:
        """The earlier stage ``ref`` names (a name, or an index for COPY --from), else None (an image)."""
        for st in df.stages[:before]:
            if st.name is not None and st.name == ref.lower():
                return st
        if ref.isdigit():
            idx = int(ref)
            if idx >= before:
                raise BuildError(f"invalid stage reference --from={ref}: stage {idx} is not a previous stage")
            return df.stages[idx]
        for st in df.stages[before:]:
            if st.name is not None and st.name == ref.lower():
                raise DockerfileError(f"circular dependency detected on stage: {st.name}", st.line)
        return None

    def _needed_stages(self, df: Dockerfile, target: Stage) -> set[int]:
        lexer = Lexer(df.escape)
        needed: set[int] = set()
        todo = [target]
        while todo:
            stage = todo.pop()
            if stage.index in needed:
                continue
            needed.add(stage.index)
            base = self._expand(lexer, stage.base, self.meta_env, None)
            dep = self._stage_ref(df, base, stage.index)
            if dep is not None:
                todo.append(dep)
            for instr in stage.instructions:
                if instr.keyword == "COPY" and "from" in instr.flags:
                    ref = self._expand(lexer, instr.flags["from"], self.meta_env, instr)
                    src = self._stage_ref(df, ref, stage.index)
                    if src is not None:
                        todo.append(src)
        return needed

    @staticmethod
    def _expand(lexer: Lexer, text: str, env: dict[str, str], instr: Instruction | None) -> str:
        try:
            return lexer.word(text, env)
        except ExpansionError as exc:
            if instr is None:
                raise
            raise DockerfileError(str(exc), instr.line) from None

    # -------------------------------------------------------------------------------------------- stages

    def _build_stage(self, df: Dockerfile, stage: Stage) -> State:
        total = len(stage.instructions) + 1
        lexer = Lexer(df.escape)
        base = self._expand(lexer, stage.base, self.meta_env, None)
        if not base.strip():
            raise DockerfileError(f"base name ({stage.base}) should not be blank", stage.line)
        step = self.begin(f"[{stage.label} 1/{total}] FROM {base}")
        try:
            state, cached = self._from(df, stage, base)
        except BuildError as exc:
            if isinstance(exc, DockerfileError):
                raise
            raise BuildError(f"{exc} (Dockerfile line {stage.line})") from None
        self.done(step, cached=cached)
        triggers = list(state.cfg.get("OnBuild") or [])
        if "OnBuild" in state.cfg:
            state.cfg["OnBuild"] = None
        for text in triggers:
            self._run_trigger(stage, state, text)
        for number, instr in enumerate(stage.instructions, start=2):
            state = self._step(df, stage, state, instr, f"[{stage.label} {number}/{total}]", lexer)
        return state

    def _from(self, df: Dockerfile, stage: Stage, base: str) -> tuple[State, bool]:
        if base.lower() == "scratch":
            config: dict[str, Any] = {"architecture": "", "os": "linux", "config": {}, "history": []}
            from runtime.store.store import host_architecture

            config["architecture"] = host_architecture()
            return State([], config, step_key("scratch", "", {})), True
        dep = self._stage_ref(df, base, stage.index)
        if dep is not None:
            parent = self.results[dep.index]
            return State(list(parent.layers), copy.deepcopy(parent.config), parent.key), True
        image, pulled = self._image(base)
        config = copy.deepcopy(image.config)
        config.setdefault("config", {})
        config.setdefault("history", [])
        config.pop("rootfs", None)
        return State(list(image.layers), config, step_key("image:" + image.id, "", {})), not pulled

    def _image(self, ref: str) -> tuple[Image, bool]:
        """A local image, else pulled through ``runtime.registry`` when that package is present."""
        from runtime.store.errors import ImageNotFound

        try:
            return self.store.resolve(ref), False
        except ImageNotFound:
            pass
        try:
            from runtime.registry.pull import pull
        except ImportError:
            raise BuildError(f"image {ref!r} is not in the store and refrt has no registry client") from None
        try:
            if self.out is not None:
                return pull(self.ctx, ref, out=self.out), True
            with open(os.devnull, "w") as quiet:  # -q: stdout carries the image id only
                return pull(self.ctx, ref, out=quiet), True
        except BuildError:
            raise
        except RefrtError as exc:
            # docker build exits 1 for any failure, a base image that cannot be pulled included
            raise BuildError(f"failed to resolve source image {ref}: {exc}") from None

    def _run_trigger(self, stage: Stage, state: State, text: str) -> None:
        """An ONBUILD trigger of the base image, run right after FROM as Docker does."""
        try:
            instrs, _, _ = parse_instructions(text)
            for instr in instrs:
                check_instruction(instr)
        except DockerfileError as exc:
            raise BuildError(f"failed to process ONBUILD trigger {text!r}: {exc.reason}") from None
        assert self.df is not None
        for instr in instrs:
            new = self._step(self.df, stage, state, instr, f"[{stage.label} ONBUILD]", Lexer())
            state.layers, state.config, state.key = new.layers, new.config, new.key
            state.args, state.cmd_set = new.args, new.cmd_set

    # --------------------------------------------------------------------------------------------- steps

    def _step(self, df: Dockerfile, stage: Stage, state: State, instr: Instruction, label: str, lexer: Lexer) -> State:
        """Run one instruction on a copy of ``state``; returns the new state."""
        new = State(list(state.layers), copy.deepcopy(state.config), state.key, dict(state.args), state.cmd_set)
        env = new.env()
        self._title = f"{label} {_display(instr)}"
        try:
            handler = getattr(self, f"_do_{instr.keyword.lower()}")
            handler(df, stage, new, instr, label, lexer, env)
        except ExpansionError as exc:
            raise DockerfileError(str(exc), instr.line) from None
        except StepFailed:
            raise
        except BuildError as exc:
            if isinstance(exc, DockerfileError):
                raise
            raise type(exc)(f"{exc} (Dockerfile line {instr.line})") from None
        return new

    def _meta_step(self, new: State, label: str, created_by: str) -> None:
        """A config-only step: no layer, a history entry with ``empty_layer``; CACHED when seen before."""
        step = self.begin(self._title)
        key = step_key(new.key, created_by, self._args_in_effect(new))
        entry = None if self.opts.no_cache else self.cache.get(key)
        history = entry.history if entry else {"created": now(), "created_by": created_by, "empty_layer": True}
        new.config["history"] = [*new.config.get("history", []), history]
        new.key = key
        if entry is None:
            self.cache.put(key, CacheEntry(None, history))
        self.done(step, cached=entry is not None)

    def _args_in_effect(self, state: State) -> dict[str, str]:
        return {k: v for k, v in state.args.items() if v is not None}

    def _do_arg(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        shown = []
        for word in instr.args:
            raw_name, has_default, raw_default = word.partition("=")
            name = lexer.word(raw_name, env)
            value: str | None
            if name in self.opts.build_args:
                value = self.opts.build_args[name]
                self.used_args.add(name)
            elif has_default:
                value = lexer.word(raw_default, env)
            else:
                value = self.meta_env.get(name)
            new.args[name] = value
            env = new.env()
            shown.append(f"{name}={value}" if has_default or value is not None else name)
        self._meta_step(new, label, "ARG " + " ".join(shown))

    def _do_env(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        pairs = [(lexer.word(k, env), lexer.word(v, env)) for k, v in instr.pairs]
        for key, value in pairs:
            new.set_env(key, value)
        self._meta_step(new, label, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_label(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        pairs = [(lexer.word(k, env), lexer.word(v, env)) for k, v in instr.pairs]
        labels = dict(new.cfg.get("Labels") or {})
        labels.update(pairs)
        new.cfg["Labels"] = labels
        self._meta_step(new, label, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_maintainer(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        new.config["author"] = instr.args[0]
        self._meta_step(new, label, "MAINTAINER " + instr.args[0])

    def _do_user(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        user = lexer.word(instr.args[0], env)
        new.cfg["User"] = user
        self._meta_step(new, label, "USER " + user)

    def _do_stopsignal(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        sig = lexer.word(instr.args[0], env)
        new.cfg["StopSignal"] = sig
        self._meta_step(new, label, "STOPSIGNAL " + sig)

    def _do_expose(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        ports = dict(new.cfg.get("ExposedPorts") or {})
        added = []
        for arg in instr.args:
            for word in lexer.words(arg, env):
                for port in _expand_ports(word):
                    ports[port] = {}
                    added.append(port)
        new.cfg["ExposedPorts"] = ports
        self._meta_step(new, label, "EXPOSE " + " ".join(added))

    def _do_volume(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        volumes = dict(new.cfg.get("Volumes") or {})
        added = []
        for arg in instr.args:
            path = lexer.word(arg, env)
            if not path.strip():
                raise DockerfileError("VOLUME specified can not be an empty string", instr.line)
            volumes[path] = {}
            added.append(path)
        new.cfg["Volumes"] = volumes
        self._meta_step(new, label, "VOLUME " + str(added))

    def _command(self, new: State, instr: Instruction) -> list[str]:
        if instr.json:
            return list(instr.args)
        return [*new.shell, instr.args[0]] if instr.args else []

    def _do_cmd(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        new.cfg["Cmd"] = self._command(new, instr)
        new.cmd_set = True
        self._meta_step(new, label, "CMD " + _json(new.cfg["Cmd"]))

    def _do_entrypoint(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        argv = self._command(new, instr)
        new.cfg["Entrypoint"] = argv or None
        if not new.cmd_set:
            # docker: a CMD inherited from the base image is reset by a new ENTRYPOINT
            new.cfg["Cmd"] = None
        self._meta_step(new, label, "ENTRYPOINT " + _json(argv))

    def _do_shell(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        new.cfg["Shell"] = list(instr.args)
        self._meta_step(new, label, "SHELL " + _json(instr.args))

    def _do_healthcheck(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        check = healthcheck_config(instr)
        new.cfg["Healthcheck"] = check
        self._meta_step(new, label, "HEALTHCHECK " + _json(check))

    def _do_onbuild(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        text = instr.args[0]
        if instr.heredocs:
            text += "".join("\n" + doc.content + doc.name for doc in instr.heredocs)
        new.cfg["OnBuild"] = [*(new.cfg.get("OnBuild") or []), text]
        self._meta_step(new, label, "ONBUILD " + text)

    def _do_from(self, *args: Any) -> None:  # pragma: no cover - FROM is a stage boundary, never a step
        raise BuildError("FROM inside a stage")

    # ------------------------------------------------------------------------------------ filesystem steps

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

    def _do_workdir(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        path = lexer.word(instr.args[0], env)
        path = posixpath.normpath(posixpath.join(new.workdir, path))
        new.cfg["WorkingDir"] = path
        created_by = "WORKDIR " + path
        if not new.layers and path == "/":
            self._meta_step(new, label, created_by)
            return
        seen = None if self.opts.no_cache else self.cache.get(step_key(new.key, created_by, self._args_in_effect(new)))
        # the parent's files decide whether the directory must be made; a cached answer spares a mount
        exists = seen.diff_id is None if seen is not None else self._exists(new.layers, path)
        if exists:
            self._meta_step(new, label, created_by)
            return

        def work(scratch: Path) -> None:
            with self._mounted(new.layers, scratch) as root:
                user = str(new.cfg.get("User") or "")
                owner = ctxfiles.parse_chown(user, root) if user else None  # BuildKit: made as the USER
                writer = ctxfiles.RootfsWriter(root, owner=owner, chmod=None, keep_owner=False)
                writer.mkdirs(path)

        self._fs_step(new, label, created_by, "", work)

    def _exists(self, layers: list[Layer], path: str) -> bool:
        """Whether ``path`` is a directory in the rootfs of ``layers`` (top layer first, whiteouts respected)."""
        with self._scratch() as scratch, self._mounted(layers, scratch) as root:
            return ctxfiles.resolve_in_root(root, path).is_dir()

    def _do_run(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        argv, script = self._run_argv(new, instr)
        args = self._args_in_effect(new)
        shown = " ".join(argv)
        if args:
            shown = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in sorted(args.items())) + " " + shown
        network = "none" if instr.flags.get("network") == "none" else "host"  # docker build's default: host
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
                    f'process "{" ".join(argv)}" could not be started: {exc} (Dockerfile line {instr.line})',
                    exc.exit_code,
                ) from None
            if status != 0:
                raise StepFailed(
                    f'process "{" ".join(argv)}" did not complete successfully: exit code: {status}'
                    f" (Dockerfile line {instr.line})",
                    status,
                )
            _drop_mountpoints(scratch / "upper", self._lower_dirs(new.layers, scratch))

        self._fs_step(new, label, created_by, content, work)

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

    def _do_copy(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        self._copy(df, stage, new, instr, label, lexer, env, extract=False)

    def _do_add(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
    ) -> None:
        self._copy(df, stage, new, instr, label, lexer, env, extract=True)

    def _copy(
        self,
        df: Dockerfile,
        stage: Stage,
        new: State,
        instr: Instruction,
        label: str,
        lexer: Lexer,
        env: dict[str, str],
        *,
        extract: bool,
    ) -> None:
        kw = instr.keyword
        dest = lexer.word(instr.args[-1], env)
        to_dir_hint = dest.endswith("/") or dest in (".", "")
        dest = posixpath.normpath(posixpath.join(new.workdir, dest))
        if (to_dir_hint or instr.args[-1].endswith("/")) and not dest.endswith("/"):
            dest += "/"
        chown = lexer.word(instr.flags["chown"], env) if "chown" in instr.flags else None
        chmod = ctxfiles.parse_chmod(lexer.word(instr.flags["chmod"], env)) if "chmod" in instr.flags else None
        docs = {doc.name: doc for doc in instr.heredocs}
        sources: list[str] = []
        contents: list[tuple[str, bytes]] = []
        for raw in instr.args[:-1]:
            marker = None if instr.json else parse_heredoc_word(raw)
            if marker is not None and marker[0] in docs:
                doc = docs[marker[0]]
                data = doc.text()
                if doc.expand:
                    data = Lexer(skip_quotes=True).word(data, env)
                contents.append((doc.name, data.encode()))
            else:
                sources.append(lexer.word(raw, env))
        for src in sources:
            if _URL.match(src):
                raise BuildError(f"{kw} from a URL is not supported by refrt (builds have no network): {src}")
        from_ref = lexer.word(instr.flags["from"], env) if "from" in instr.flags else None
        flags = " ".join(f"--{k}={v}" for k, v in instr.flags.items() if k != "link")
        created_by = f"{kw} {flags + ' ' if flags else ''}{' '.join(sources + [n for n, _ in contents])} {dest}"

        src_layers: list[Layer] | None = None
        if from_ref is not None:
            dep = self._stage_ref(df, from_ref, stage.index)
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

        self._fs_step(new, label, created_by, content, work)

    # ------------------------------------------------------------------------------------------- commit

    def _commit(self, final: State) -> Image:
        config = copy.deepcopy(final.config)
        if self.opts.labels:
            labels = dict(config["config"].get("Labels") or {})
            labels.update(self.opts.labels)
            config["config"]["Labels"] = labels
        history = config.get("history") or []
        config["created"] = history[-1]["created"] if history else now()
        config.pop("rootfs", None)
        step = self.begin("exporting to image")
        image = self.store.commit_image(config, final.layers, list(self.opts.tags))
        self.say(f"#{step.number} writing image {image.id} done")
        for tag in self.opts.tags:
            self.say(f"#{step.number} naming to {tag} done")
        self.done(step)
        return image


def _platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs (``FROM --platform=$BUILDPLATFORM``, ``ARG TARGETARCH``): the host's."""
    from runtime.store.store import host_architecture

    arch = host_architecture()
    return {
        "BUILDPLATFORM": f"linux/{arch}",
        "BUILDOS": "linux",
        "BUILDARCH": arch,
        "BUILDVARIANT": "",
        "TARGETPLATFORM": f"linux/{arch}",
        "TARGETOS": "linux",
        "TARGETARCH": arch,
        "TARGETVARIANT": "",
    }


def _display(instr: Instruction) -> str:
    """How progress shows an instruction: as written, on one line, a heredoc summarised (BuildKit's way)."""
    text = " ".join(instr.original.split())
    if instr.heredocs:
        first = instr.heredocs[0].content.strip().splitlines()
        text += f" ({first[0][:60]}{'...' if len(first) > 1 else ''})" if first else ""
    return text


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


def _expand_ports(word: str) -> list[str]:
    """``80`` -> ``80/tcp``; ``53/udp`` kept; ``8000-8002`` -> three ports, as docker's nat.ParsePortSpecs."""
    port, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    start, _, end = port.partition("-")
    if not start.isdigit() or (end and not end.isdigit()):
        raise BuildError(f"invalid containerPort: {port}")
    first, last = int(start), int(end or start)
    if not 0 < first <= last <= 65535:
        raise BuildError(f"invalid port range: {port}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def build(ctx: Context, options: BuildOptions) -> Image:
    """Build ``options`` into an image of the store of ``ctx``; errors are :class:`RefrtError`."""
    try:
        return Builder(ctx, options).build()
    except (BuildError, UsageError):
        raise
    except RefrtError as exc:
        # a store, mount or container error during a build is a failed build: exit 1, as docker build
        raise BuildError(str(exc)) from None
    except OSError as exc:
        raise BuildError(f"build failed: {exc}") from None


def healthcheck_config(instr: Instruction) -> dict[str, Any]:
    """A (checked) HEALTHCHECK instruction as the image config's Healthcheck, in docker's shape: ``NONE``, or the
    test (``CMD`` exec form, ``CMD-SHELL`` shell form) with the durations in nanoseconds; ``commit -c`` uses it
    too, and the container's monitor runs it (runtime.container.health)."""
    if instr.args[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    test = ["CMD", *instr.args[1:]] if instr.json else ["CMD-SHELL", instr.args[1]]
    check: dict[str, Any] = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        if flag in instr.flags:
            check[key] = parse_duration(instr.flags[flag])
    if "retries" in instr.flags:
        check["Retries"] = int(instr.flags["retries"])
    return check
