"""A container's seccomp filter and ``--security-opt``, as docker has them.

- :mod:`.profile`: docker's default rules (as a table of our own) and the loader of docker's JSON profiles;
- :mod:`.compile` and :mod:`.bpf`: the profile compiled to classic BPF with the standard library only;
- :mod:`.kernel`: seccomp(2) and keyctl(2) through ctypes;
- this module: ``--security-opt`` values (validated at create time, stored in the container's spec, shown by
  ``inspect`` as ``HostConfig.SecurityOpt``) and the filter a container or an exec gets.

``--security-opt`` values, as docker's CLI accepts them: ``seccomp=unconfined``, ``seccomp=PATH`` (the file is
read at create time and stored as ``seccomp=<its JSON>``, as docker's CLI sends it), ``no-new-privileges`` with
an optional ``=``/``:`` boolean, and ``label=...``/``apparmor=...`` (stored; this host has no SELinux or
AppArmor, where docker ignores them the same way). ``--privileged`` means no filter at all, as in docker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from runtime.container.seccomp.compile import compile_profile
from runtime.container.seccomp.profile import DEFAULT, BadProfile, load_json
from runtime.errors import UsageError

__all__ = ["BadProfile", "SecurityOptions", "filter_for", "normalize", "parse"]

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


@dataclass(frozen=True)
class SecurityOptions:
    seccomp: str = "default"  # "default", "unconfined" or a profile's JSON text
    no_new_privileges: bool = False


def _split(value: str) -> tuple[str, str, bool]:
    """``key=value`` or docker's older ``key:value``; the flag says whether a value was given."""
    for sep in ("=", ":"):
        key, found, rest = value.partition(sep)
        if found:
            return key, rest, True
    return value, "", False


def normalize(values: list[str]) -> list[str]:
    """Validate ``--security-opt`` values and read ``seccomp=PATH`` files: what the container stores.

    Raises UsageError (exit 125) naming the bad value; nothing has been created at that point."""
    out: list[str] = []
    for index, value in enumerate(values, start=1):
        key, rest, given = _split(value)
        if key == "seccomp" and given and rest:
            if rest == "unconfined":
                out.append("seccomp=unconfined")
                continue
            if rest.lstrip().startswith("{"):  # already the profile's text: the Engine API form docker's CLI sends
                load_json(rest, "SecurityOpt")
                out.append(f"seccomp={rest}")
                continue
            try:
                with open(rest) as f:
                    text = f.read()
            except OSError as exc:
                raise UsageError(f"opening seccomp profile ({rest}) failed: {exc.strerror}") from None
            load_json(text, rest)  # refused now rather than at start
            out.append(f"seccomp={text}")
        elif key == "no-new-privileges":
            if given and rest not in _TRUE + _FALSE:
                raise UsageError(f'invalid --security-opt {index}: "{value}": no-new-privileges takes a boolean')
            out.append(value)
        elif key in ("label", "apparmor") and given:
            out.append(value)
        else:
            raise UsageError(f'invalid --security-opt {index}: "{value}"')
    return out


def parse(values: list[str]) -> SecurityOptions:
    """The stored (normalized) values as settings; the last one of a kind wins, as in docker."""
    seccomp, nnp = "default", False
    for value in values:
        key, rest, given = _split(value)
        if key == "seccomp":
            seccomp = rest
        elif key == "no-new-privileges":
            nnp = (not given) or rest in _TRUE
    return SecurityOptions(seccomp=seccomp, no_new_privileges=nnp)


@cache
def _compiled_default(capabilities: tuple[str, ...]) -> bytes:
    return compile_profile(DEFAULT, list(capabilities))


def filter_for(options: SecurityOptions, privileged: bool, capabilities: list[str]) -> bytes | None:
    """The packed BPF program a process of this container gets, or None (unconfined, privileged)."""
    if privileged or options.seccomp == "unconfined":
        return None
    if options.seccomp == "default":
        return _compiled_default(tuple(sorted(capabilities)))
    return compile_profile(load_json(options.seccomp, "seccomp profile"), capabilities)
