"""``commit --change`` (``-c``): Dockerfile instructions applied to an image config, for the CLI's ``commit`` and
the Engine API's ``POST /commit`` alike. They are read and checked by the Dockerfile parser
(:mod:`runtime.build.parser`), so a change is refused in the words a Dockerfile's instruction would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runtime.errors import RefrtError, UsageError

if TYPE_CHECKING:
    from runtime.build.parser import Instruction


class CommitError(RefrtError):
    """A commit docker's daemon would refuse (its CLI exits 1)."""

    exit_code = 1


# what docker's ``commit --change`` accepts
CHANGES = frozenset({"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR",
                     "STOPSIGNAL", "HEALTHCHECK"})


def _unquote(text: str) -> str:
    from runtime.build.expand import Lexer

    words = Lexer(skip_unset=True).words(text, {})
    return " ".join(words)


def apply_change(config: dict[str, Any], instr: Instruction) -> None:
    """One ``-c`` instruction applied to an image config's ``config`` section."""
    kw = instr.keyword
    if kw not in CHANGES:
        raise CommitError(f"{kw.lower()} is not a valid change command")
    if kw in ("CMD", "ENTRYPOINT"):
        key = "Cmd" if kw == "CMD" else "Entrypoint"
        config[key] = list(instr.args) if instr.json else ["/bin/sh", "-c", *instr.args]
    elif kw == "ENV":
        env = [e for e in config.get("Env") or [] if e.partition("=")[0] not in {k for k, _ in instr.pairs}]
        config["Env"] = env + [f"{k}={_unquote(v)}" for k, v in instr.pairs]
    elif kw == "LABEL":
        config["Labels"] = {**(config.get("Labels") or {}), **{_unquote(k): _unquote(v) for k, v in instr.pairs}}
    elif kw == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for port in instr.args:
            ports[port if "/" in port else f"{port}/tcp"] = {}
        config["ExposedPorts"] = ports
    elif kw == "VOLUME":
        config["Volumes"] = {**(config.get("Volumes") or {}), **{path: {} for path in instr.args}}
    elif kw == "ONBUILD":
        config["OnBuild"] = [*(config.get("OnBuild") or []), instr.args[0]]
    elif kw == "STOPSIGNAL":
        config["StopSignal"] = instr.args[0]
    elif kw == "HEALTHCHECK":  # over the container's own, field by field, as docker merges a commit's changes
        from runtime.build.config_steps import healthcheck_config
        from runtime.container.health import merged

        config["Healthcheck"] = merged(healthcheck_config(instr), config.get("Healthcheck"))
    else:
        config["User" if kw == "USER" else "WorkingDir"] = instr.args[0]


def parse_changes(changes: list[str]) -> list[Instruction]:
    from runtime.build.errors import DockerfileError

    out = []
    for change in changes:
        try:
            out += parse_checked(change)
        except DockerfileError as exc:
            raise UsageError(f"--change {change!r}: {exc}") from None
    return out


def parse_checked(text: str) -> list[Instruction]:
    """Instructions given as text outside a Dockerfile (a ``--change``, an image's ONBUILD trigger), parsed and
    checked as a Dockerfile's would be; :class:`DockerfileError` if not, for the caller to word in its own terms."""
    from runtime.build.parser import check_instruction, parse_instructions

    instructions, _, _ = parse_instructions(text)
    for instr in instructions:
        check_instruction(instr)
    return instructions
