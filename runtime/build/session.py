"""What every step handler needs from a build in progress: progress output, the store, the cache, references to
earlier stages or images, and the config-only step.

A base class of its own so that the two families of handlers (config edits in :mod:`runtime.build.config_steps`,
file changes in :mod:`runtime.build.fs_steps`) and the stage orchestration (:mod:`runtime.build.builder`) are each
a module of their own, all leaning on this one and none on each other.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from runtime.build import context as ctxfiles
from runtime.build.cache import BuildCache, CacheEntry, step_key
from runtime.build.errors import BuildError, DockerfileError
from runtime.build.parser import Dockerfile, Stage
from runtime.build.state import BuildOptions, State, Step, now
from runtime.errors import RefrtError

if TYPE_CHECKING:
    from runtime.cli import Context
    from runtime.store.images import Image
    from runtime.store.store import Store


class BuildSession:
    """The shared services of one build of one Dockerfile into one image in the store of ``ctx``."""

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
