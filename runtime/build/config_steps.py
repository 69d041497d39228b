"""The instructions that only edit the image config (ARG, ENV, LABEL, USER, EXPOSE, CMD, HEALTHCHECK...).

Each adds a history entry with ``empty_layer: true`` and no layer, as Docker does (:meth:`BuildSession._meta_step`);
none mounts or runs anything, which is why they live apart from :mod:`runtime.build.fs_steps`.
:func:`healthcheck_config` is also how ``commit --change HEALTHCHECK`` shapes its check (:mod:`runtime.build.changes`).
"""

from __future__ import annotations

from typing import Any

from runtime.build.errors import BuildError, DockerfileError
from runtime.build.parser import Instruction, parse_duration
from runtime.build.session import BuildSession
from runtime.build.state import State, StepContext


class ConfigSteps(BuildSession):
    """The ``_do_<keyword>`` handlers of the config-only instructions (the builder dispatches on the keyword)."""

    def _do_arg(self, step: StepContext, new: State) -> None:
        shown = []
        env = step.env  # an ARG is in effect for the words after it in the same instruction
        for word in step.instr.args:
            raw_name, has_default, raw_default = word.partition("=")
            name = step.lexer.word(raw_name, env)
            value: str | None
            if name in self.opts.build_args:
                value = self.opts.build_args[name]
                self.used_args.add(name)
            elif has_default:
                value = step.lexer.word(raw_default, env)
            else:
                value = self.meta_env.get(name)
            new.args[name] = value
            env = new.env()
            shown.append(f"{name}={value}" if has_default or value is not None else name)
        self._meta_step(new, step.label, "ARG " + " ".join(shown))

    def _do_env(self, step: StepContext, new: State) -> None:
        pairs = [(step.word(k), step.word(v)) for k, v in step.instr.pairs]
        for key, value in pairs:
            new.set_env(key, value)
        self._meta_step(new, step.label, "ENV " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_label(self, step: StepContext, new: State) -> None:
        pairs = [(step.word(k), step.word(v)) for k, v in step.instr.pairs]
        labels = dict(new.cfg.get("Labels") or {})
        labels.update(pairs)
        new.cfg["Labels"] = labels
        self._meta_step(new, step.label, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs))

    def _do_maintainer(self, step: StepContext, new: State) -> None:
        new.config["author"] = step.instr.args[0]
        self._meta_step(new, step.label, "MAINTAINER " + step.instr.args[0])

    def _do_user(self, step: StepContext, new: State) -> None:
        user = step.word(step.instr.args[0])
        new.cfg["User"] = user
        self._meta_step(new, step.label, "USER " + user)

    def _do_stopsignal(self, step: StepContext, new: State) -> None:
        sig = step.word(step.instr.args[0])
        new.cfg["StopSignal"] = sig
        self._meta_step(new, step.label, "STOPSIGNAL " + sig)

    def _do_expose(self, step: StepContext, new: State) -> None:
        ports = dict(new.cfg.get("ExposedPorts") or {})
        added = []
        for arg in step.instr.args:
            for word in step.lexer.words(arg, step.env):
                for port in _expand_ports(word):
                    ports[port] = {}
                    added.append(port)
        new.cfg["ExposedPorts"] = ports
        self._meta_step(new, step.label, "EXPOSE " + " ".join(added))

    def _do_volume(self, step: StepContext, new: State) -> None:
        volumes = dict(new.cfg.get("Volumes") or {})
        added = []
        for arg in step.instr.args:
            path = step.word(arg)
            if not path.strip():
                raise DockerfileError("VOLUME specified can not be an empty string", step.instr.line)
            volumes[path] = {}
            added.append(path)
        new.cfg["Volumes"] = volumes
        self._meta_step(new, step.label, "VOLUME " + str(added))

    def _command(self, new: State, instr: Instruction) -> list[str]:
        if instr.json:
            return list(instr.args)
        return [*new.shell, instr.args[0]] if instr.args else []

    def _do_cmd(self, step: StepContext, new: State) -> None:
        new.cfg["Cmd"] = self._command(new, step.instr)
        new.cmd_set = True
        self._meta_step(new, step.label, "CMD " + _json(new.cfg["Cmd"]))

    def _do_entrypoint(self, step: StepContext, new: State) -> None:
        argv = self._command(new, step.instr)
        new.cfg["Entrypoint"] = argv or None
        if not new.cmd_set:
            # docker: a CMD inherited from the base image is reset by a new ENTRYPOINT
            new.cfg["Cmd"] = None
        self._meta_step(new, step.label, "ENTRYPOINT " + _json(argv))

    def _do_shell(self, step: StepContext, new: State) -> None:
        new.cfg["Shell"] = list(step.instr.args)
        self._meta_step(new, step.label, "SHELL " + _json(step.instr.args))

    def _do_healthcheck(self, step: StepContext, new: State) -> None:
        check = healthcheck_config(step.instr)
        new.cfg["Healthcheck"] = check
        self._meta_step(new, step.label, "HEALTHCHECK " + _json(check))

    def _do_onbuild(self, step: StepContext, new: State) -> None:
        text = step.instr.args[0]
        if step.instr.heredocs:
            text += "".join("\n" + doc.content + doc.name for doc in step.instr.heredocs)
        new.cfg["OnBuild"] = [*(new.cfg.get("OnBuild") or []), text]
        self._meta_step(new, step.label, "ONBUILD " + text)


def healthcheck_config(instr: Instruction) -> dict[str, Any]:
    """A (checked) HEALTHCHECK instruction as the image config's Healthcheck, in docker's shape: ``NONE``, or the
    test (``CMD`` exec form, ``CMD-SHELL`` shell form) with the durations in nanoseconds; ``commit -c`` uses it
    too, and the container's monitor runs it (runtime.container.health)."""
    if instr.args[0].upper() == "NONE":
        return {"Test": ["NONE"]}
    test = ["CMD", *instr.args[1:]] if instr.json else ["CMD-SHELL", instr.args[1]]
    check: dict[str, Any] = {"Test": test}
    # no --start-interval: docker 20.10 has none, and the parser refuses it as an unknown flag
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
        if flag in instr.flags:
            check[key] = parse_duration(instr.flags[flag])
    if "retries" in instr.flags:
        check["Retries"] = int(instr.flags["retries"])
    return check


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
