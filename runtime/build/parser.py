"""Dockerfile text -> instructions -> build stages, with BuildKit's syntax rules.

Two passes, as BuildKit has: :func:`parse_instructions` (in :mod:`runtime.build.reader`, re-exported here with
the instruction model) turns physical lines into logical instructions (parser directives, escape-character
continuations with comments and blank lines inside them, heredocs, JSON vs shell form, builder flags), then
:func:`parse` checks each instruction's arguments against its own rules (:func:`check_instruction`, shared with
``commit --change``) and groups them into stages (ARG before the first FROM are the global "meta" args).
Variables are *not* expanded here: that depends on build args and on the stage's ENV, so the builder does it step
by step (``runtime.build.expand``).

Every error is a :class:`DockerfileError` naming the line where the instruction starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runtime.build.errors import DockerfileError
from runtime.build.reader import Heredoc, Instruction, parse_heredoc_word, parse_instructions

__all__ = [
    "FLAGS",
    "Dockerfile",
    "Heredoc",
    "Instruction",
    "Stage",
    "check_instruction",
    "parse",
    "parse_duration",
    "parse_heredoc_word",
    "parse_instructions",
]

#: Flags each instruction accepts; a flag with value ``bool`` takes no value. HEALTHCHECK has docker 20.10's
#: flags: ``--start-interval`` came with docker 25 and is an unknown flag here, as docker 20.10 refuses it.
FLAGS: dict[str, dict[str, type]] = {
    "FROM": {"platform": str},
    "COPY": {"from": str, "chown": str, "chmod": str, "link": bool},
    "ADD": {"chown": str, "chmod": str, "link": bool},
    "RUN": {"network": str},
    "HEALTHCHECK": {"interval": str, "timeout": str, "start-period": str, "retries": str},
}
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


@dataclass
class Stage:
    """One ``FROM`` and the instructions after it. ``name`` is lower-case, as BuildKit compares it."""

    index: int
    base: str
    name: str | None
    line: int
    platform: str
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Dockerfile:
    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str = "\\"
    syntax: str | None = None
    warnings: list[str] = field(default_factory=list)

    def stage(self, ref: str) -> Stage | None:
        """The stage named ``ref`` (case-insensitive) or numbered ``ref``; None when there is none."""
        for st in self.stages:
            if st.name is not None and st.name == ref.lower():
                return st
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


# ------------------------------------------------------------------------------------------ pass 2: checking


def _flag_checks(instr: Instruction) -> None:
    allowed = FLAGS.get(instr.keyword, {})
    seen: set[str] = set()
    for word in instr.flag_words:  # in order, as BuildKit reports the first problem
        name = word[2:].partition("=")[0]
        if name not in allowed:
            if instr.keyword == "RUN":
                raise instr.fail(f"RUN --{name} is not supported by refrt")
            raise instr.fail(f"unknown flag: --{name}")
        if name in seen:
            raise instr.fail(f"Duplicate flag specified: {name}")
        seen.add(name)
    for name, value in instr.flags.items():
        kind = allowed.get(name)
        if kind is str and value in ("\0", ""):
            raise instr.fail(f"missing a value on flag: --{name}")
        if kind is bool and value not in ("\0", "true", "false"):
            raise instr.fail(f"expecting boolean value for flag --{name}, not: {value}")


def check_instruction(instr: Instruction) -> None:
    """BuildKit's per-instruction argument rules; raises :class:`DockerfileError` with the line."""
    _flag_checks(instr)
    kw, args = instr.keyword, instr.args
    if kw in ("RUN", "EXPOSE", "VOLUME", "ARG", "ENV", "LABEL", "ONBUILD") and not args:
        raise instr.fail(f"{kw} requires at least one argument")
    if kw in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER") and len(args) != 1:
        raise instr.fail(f"{kw} requires exactly one argument")
    if kw in ("COPY", "ADD"):
        if len(args) < 2:
            raise instr.fail(
                f"{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        if not instr.json and parse_heredoc_word(args[-1]) is not None:
            raise instr.fail(f"{kw} cannot accept a heredoc as a destination")
    if kw == "SHELL" and not instr.json:
        raise instr.fail("SHELL requires the arguments to be in JSON form")
    if kw == "SHELL" and not args:
        raise instr.fail("SHELL requires at least one argument")
    if kw == "VOLUME" and any(not a.strip() for a in args):
        raise instr.fail("VOLUME specified can not be an empty string")
    if kw in ("ENV", "LABEL") and any(not k for k, _ in instr.pairs):
        raise instr.fail(f"{kw} names can not be blank")
    if kw == "ARG":
        for word in args:
            if not word.partition("=")[0]:
                raise instr.fail("ARG names can not be blank")
    if kw == "HEALTHCHECK":
        _check_healthcheck(instr)
    if kw == "RUN" and instr.flags.get("network", "default") not in ("default", "none", "host"):
        raise instr.fail(f"RUN --network={instr.flags['network']}: only default, none and host are supported")
    if kw == "ONBUILD" and instr.trigger is not None:
        trig = instr.trigger.keyword
        if trig == "ONBUILD":
            raise instr.fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trig in ("FROM", "MAINTAINER"):
            raise instr.fail(f"{trig} isn't allowed as an ONBUILD trigger")
        check_instruction(instr.trigger)


def _check_healthcheck(instr: Instruction) -> None:
    if not instr.args:
        raise instr.fail("HEALTHCHECK requires at least one argument")
    typ = instr.args[0].upper()
    if typ == "NONE":
        if len(instr.args) > 1 or instr.flags:
            raise instr.fail("HEALTHCHECK NONE takes no arguments")
    elif typ == "CMD":
        if len(instr.args) < 2:
            raise instr.fail("Missing command after HEALTHCHECK CMD")
    else:
        raise instr.fail(f"Unknown type {instr.args[0]!r} in HEALTHCHECK (try CMD)")
    for name in ("interval", "timeout", "start-period"):
        if name in instr.flags:
            try:
                parse_duration(instr.flags[name])
            except ValueError as exc:
                raise instr.fail(f"HEALTHCHECK --{name}: {exc}") from None
    if "retries" in instr.flags:
        value = instr.flags["retries"]
        if not value.lstrip("-").isdigit():
            raise instr.fail(f"HEALTHCHECK --retries: not a number: {value!r}")
        if int(value) < 0:
            raise instr.fail(f"--retries cannot be negative ({value})")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in nanoseconds, as HEALTHCHECK flags are stored."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return int(total)


def _stage_from(instr: Instruction, index: int) -> Stage:
    args = instr.args
    if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
        raise instr.fail("FROM requires either one or three arguments (FROM image [AS name])")
    name = None
    if len(args) == 3:
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise instr.fail(
                f"invalid name for build stage: {args[2]!r}, name can't start with a number or contain symbols"
            )
    platform = instr.flags.get("platform", "")
    return Stage(index=index, base=args[0], name=name, line=instr.line, platform=platform)


def parse(text: str) -> Dockerfile:
    """Parse a whole Dockerfile; raises :class:`DockerfileError` naming the line of the first fault."""
    instructions, d, warnings = parse_instructions(text)
    if not instructions:
        raise DockerfileError("file with no instructions", max(1, text.count("\n")))
    meta: list[Instruction] = []
    stages: list[Stage] = []
    for instr in instructions:
        check_instruction(instr)
        if instr.keyword == "FROM":
            stage = _stage_from(instr, len(stages))
            if stage.name is not None and any(s.name == stage.name for s in stages):
                raise instr.fail(f"duplicate stage name {stage.name!r}")
            stages.append(stage)
        elif not stages:
            if instr.keyword != "ARG":
                raise instr.fail(
                    f"{instr.keyword} before the first FROM: only ARG may come before FROM (no build stage yet)"
                )
            meta.append(instr)
        else:
            stages[-1].instructions.append(instr)
    if not stages:
        raise DockerfileError("no FROM instruction: a Dockerfile needs at least one build stage", meta[-1].line)
    return Dockerfile(meta_args=meta, stages=stages, escape=d.escape, syntax=d.syntax, warnings=warnings)
