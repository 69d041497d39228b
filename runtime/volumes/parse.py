"""The three mount flags of ``run``/``create``, parsed as docker parses them into :class:`MountSpec`.

Options kept in ``MountSpec.options`` (what the container code may use): ``propagation`` (``rprivate``...),
``nocopy`` ("true": do not populate a new volume from the image), ``create_host_path`` ("true" for ``-v``
binds: a missing host directory is created; "false" for ``--mount``: it must exist), ``selinux`` (``z``/``Z``,
accepted and ignored), and for tmpfs ``size`` (bytes or with k/m/g suffix, as given), ``mode`` (octal) and bare
flags such as ``noexec`` (value "").
"""

from __future__ import annotations

import os
import re

from runtime.spec import MountSpec
from runtime.volumes.errors import BadMountSpec

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")
PROPAGATIONS = ("shared", "rshared", "slave", "rslave", "private", "rprivate")
CONSISTENCY = ("consistent", "cached", "delegated")


def _check_target(target: str, value: str) -> str:
    if not target.startswith("/"):
        raise BadMountSpec(f"invalid mount config: mount path must be absolute: {value!r}")
    target = os.path.normpath(target)
    if target == "/":
        raise BadMountSpec(f"invalid specification: destination can't be '/' in {value!r}")
    return target


def check_volume_name(name: str) -> str:
    if not VOLUME_NAME.match(name):
        raise BadMountSpec(
            f'"{name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" '
            "are allowed. If you intended to pass a host directory, use absolute path"
        )
    return name


def _apply_modes(spec: MountSpec, modes: str, value: str) -> MountSpec:
    seen_rw = False
    for mode in filter(None, modes.split(",")):
        if mode in ("ro", "rw"):
            if seen_rw:
                raise BadMountSpec(f"invalid mode: {modes} in {value!r}")
            seen_rw = True
            spec.read_only = mode == "ro"
        elif mode in PROPAGATIONS:
            if spec.type != "bind":
                raise BadMountSpec(f"invalid mode: propagation {mode} applies to bind mounts only: {value!r}")
            spec.options["propagation"] = mode
        elif mode in ("z", "Z"):
            spec.options["selinux"] = mode
        elif mode == "nocopy":
            if spec.type != "volume":
                raise BadMountSpec(f"invalid mode: nocopy applies to volumes only: {value!r}")
            spec.options["nocopy"] = "true"
        elif mode not in CONSISTENCY:
            raise BadMountSpec(f"invalid mode: {mode} in {value!r}")
    return spec


def parse_volume_flag(value: str) -> MountSpec:
    """``-v [SOURCE:]TARGET[:MODES]``: a SOURCE path (absolute, or starting with ``./``/``../``, made absolute as
    docker's client does) is a bind, another SOURCE a named volume, none an anonymous volume."""
    parts = value.split(":")
    if not value or len(parts) > 3 or any(p == "" for p in parts[:2]):
        raise BadMountSpec(f"invalid volume specification: {value!r}")
    modes = ""
    if len(parts) == 1:
        source, target = "", parts[0]
    elif len(parts) == 2 and not parts[1].startswith("/"):
        source, target, modes = "", parts[0], parts[1]
    else:
        source, target = parts[0], parts[1]
        modes = parts[2] if len(parts) == 3 else ""
    target = _check_target(target, value)
    if not source:
        spec = MountSpec(type="volume", target=target, anonymous=True)
    elif source.startswith(("/", "./", "../")) or source in (".", ".."):
        spec = MountSpec(type="bind", target=target, source=os.path.normpath(os.path.abspath(source)),
                         options={"create_host_path": "true"})
    else:
        spec = MountSpec(type="volume", target=target, source=check_volume_name(source))
    return _apply_modes(spec, modes, value)


def _flag(value: str, raw: str) -> bool:
    if value in ("", "1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise BadMountSpec(f"invalid boolean value {value!r} in {raw!r}")


def parse_mount_flag(value: str) -> MountSpec:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,...`` (docker's keys and aliases)."""
    fields: dict[str, str] = {}
    for item in filter(None, value.split(",")):
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if key in fields and key != "volume-opt":
            raise BadMountSpec(f"duplicate key {key!r} in {value!r}")
        fields[key] = val if eq else ""
    kind = fields.pop("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise BadMountSpec(f"invalid mount type {kind!r} in {value!r}")
    source = fields.pop("source", None) or fields.pop("src", None) or ""
    target = fields.pop("target", None) or fields.pop("destination", None) or fields.pop("dst", None) or ""
    if not target:
        raise BadMountSpec(f"invalid mount config: target is required: {value!r}")
    target = _check_target(target, value)
    spec = MountSpec(type=kind, target=target)  # type: ignore[arg-type]
    for key in ("readonly", "ro"):
        if key in fields:
            spec.read_only = _flag(fields.pop(key), value)
    if kind == "bind":
        if not source:
            raise BadMountSpec(f"invalid mount config for type \"bind\": field Source must not be empty: {value!r}")
        spec.source = os.path.normpath(os.path.abspath(source))
        spec.options["create_host_path"] = "false"
        if "bind-propagation" in fields:
            prop = fields.pop("bind-propagation")
            if prop not in PROPAGATIONS:
                raise BadMountSpec(f"invalid bind-propagation {prop!r}")
            spec.options["propagation"] = prop
        fields.pop("bind-nonrecursive", None)
    elif kind == "volume":
        if source:
            spec.source = check_volume_name(source)
        else:
            spec.anonymous = True
        if "volume-nocopy" in fields and _flag(fields.pop("volume-nocopy"), value):
            spec.options["nocopy"] = "true"
        driver = fields.pop("volume-driver", "local")
        if driver != "local":
            raise BadMountSpec(f"volume driver {driver!r} is not supported (only local)")
        for key in ("volume-label", "volume-opt"):
            fields.pop(key, None)
    else:
        if source:
            raise BadMountSpec(
                f"invalid mount config for type \"tmpfs\": field Source must not be specified: {value!r}"
            )
        if "tmpfs-size" in fields:
            spec.options["size"] = fields.pop("tmpfs-size")
        if "tmpfs-mode" in fields:
            spec.options["mode"] = fields.pop("tmpfs-mode")
    fields.pop("consistency", None)
    if fields:
        raise BadMountSpec(f"unexpected key {next(iter(fields))!r} in {value!r}")
    return spec


def parse_tmpfs_flag(value: str) -> MountSpec:
    """``--tmpfs TARGET[:OPTIONS]`` with mount(8)-style options (``size=64m,mode=1777,noexec``)."""
    target, _, opts = value.partition(":")
    spec = MountSpec(type="tmpfs", target=_check_target(target, value))
    for item in filter(None, opts.split(",")):
        key, eq, val = item.partition("=")
        if key == "ro":
            spec.read_only = True
        elif key == "rw":
            spec.read_only = False
        else:
            spec.options[key] = val if eq else ""
    return spec
