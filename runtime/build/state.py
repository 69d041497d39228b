"""The data a build carries from step to step: what it was asked, a stage's state, a line of progress.

Apart from the builder so that the step handlers (:mod:`runtime.build.config_steps`, :mod:`runtime.build.fs_steps`),
the orchestration (:mod:`runtime.build.builder`) and the daemon's legacy builder share these types without any of
them importing the others.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from runtime.build.expand import Lexer
    from runtime.build.parser import Dockerfile, Instruction, Stage
    from runtime.store.layers import Layer

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


@dataclass(frozen=True)
class StepContext:
    """Where one instruction runs and what it reads: its Dockerfile and stage, the instruction, its progress label,
    the lexer (the Dockerfile's escape character) and the environment its words expand in.

    One value for the builder to hand every ``_do_<keyword>`` handler, so a handler names only what it uses; the
    :class:`State` the step changes is passed beside it, being the one thing a handler writes to."""

    df: Dockerfile
    stage: Stage
    instr: Instruction
    label: str
    lexer: Lexer
    env: dict[str, str]

    def word(self, text: str) -> str:
        """``text`` expanded as one word in the step's environment (``$VAR``, quotes, escapes)."""
        return self.lexer.word(text, self.env)


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
