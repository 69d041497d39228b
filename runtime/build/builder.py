"""Executes a parsed Dockerfile: stages, steps, layers, the cache, and the final image.

Each stage's state is its layers and its OCI image config. Steps that change files (RUN, COPY, ADD, a WORKDIR that
must be created) work in an overlay of the state's layers with a fresh upper dir, which the store turns into the
next layer; every other instruction only edits the config and adds a history entry with ``empty_layer: true``,
as Docker does. Only the stages the target needs (through ``FROM <stage>`` and ``COPY --from``) are built, as
BuildKit does. Progress goes to ``out`` in BuildKit's plain style (``#3 [build 2/5] RUN ...`` / ``#3 CACHED`` /
``#3 DONE 0.4s``); the RUN commands' own output goes there too.

This module is the orchestration (stages, their order, dispatch of each instruction to its ``_do_<keyword>``
handler, the final image); the handlers are in :mod:`runtime.build.config_steps` (config-only instructions) and
:mod:`runtime.build.fs_steps` (WORKDIR, RUN, COPY, ADD), over the shared services of :mod:`runtime.build.session`.

Choices where Docker leaves room, documented: every build failure raises a :class:`BuildError` (exit 1, as
``docker build``); ``ADD`` of a URL is refused (builds have no network to fetch with); the cache ignores file
mtimes (as BuildKit: a ``touch`` alone keeps a COPY cached, a content, mode or owner change does not); ``RUN
--mount`` and ``--security`` are refused rather than ignored, ``--network=none|host|default`` is honoured;
``FROM --platform`` is accepted and the host's platform is used (BuildKit's ``BUILDPLATFORM``/``TARGETARCH``...
args hold the host's values).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from runtime.build import context as ctxfiles
from runtime.build.cache import step_key
from runtime.build.changes import parse_checked
from runtime.build.config_steps import ConfigSteps, healthcheck_config
from runtime.build.dockerignore import Ignore
from runtime.build.errors import BuildError, ContextError, DockerfileError, ExpansionError, StepFailed
from runtime.build.expand import Lexer
from runtime.build.fs_steps import FilesystemSteps
from runtime.build.parser import Dockerfile, Instruction, Stage, parse
from runtime.build.state import BuildOptions, State, Step, StepContext, now
from runtime.errors import RefrtError, UsageError

if TYPE_CHECKING:
    from runtime.cli import Context
    from runtime.store.images import Image

# what other modules import from here (the daemon's legacy builder, the CLI, ``commit --change``)
__all__ = ["BuildOptions", "Builder", "State", "Step", "build", "healthcheck_config"]


class Builder(ConfigSteps, FilesystemSteps):
    """Builds one Dockerfile into one image: which stages, in which order, each instruction to its handler."""

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

    def _run_trigger(self, stage: Stage, state: State, text: str) -> None:
        """An ONBUILD trigger of the base image, run right after FROM as Docker does."""
        try:
            instrs = parse_checked(text)
        except DockerfileError as exc:
            raise BuildError(f"failed to process ONBUILD trigger {text!r}: {exc.reason}") from None
        assert self.df is not None
        for instr in instrs:
            new = self._step(self.df, stage, state, instr, f"[{stage.label} ONBUILD]", Lexer())
            state.layers, state.config, state.key = new.layers, new.config, new.key
            state.args, state.cmd_set = new.args, new.cmd_set

    def _step(self, df: Dockerfile, stage: Stage, state: State, instr: Instruction, label: str, lexer: Lexer) -> State:
        """Run one instruction on a copy of ``state``; returns the new state."""
        new = State(list(state.layers), copy.deepcopy(state.config), state.key, dict(state.args), state.cmd_set)
        self._title = f"{label} {_display(instr)}"
        try:
            handler = getattr(self, f"_do_{instr.keyword.lower()}")
            handler(StepContext(df, stage, instr, label, lexer, new.env()), new)
        except ExpansionError as exc:
            raise DockerfileError(str(exc), instr.line) from None
        except StepFailed:
            raise
        except BuildError as exc:
            if isinstance(exc, DockerfileError):
                raise
            raise type(exc)(f"{exc} (Dockerfile line {instr.line})") from None
        return new

    def _do_from(self, *args: Any) -> None:  # pragma: no cover - FROM is a stage boundary, never a step
        raise BuildError("FROM inside a stage")

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
