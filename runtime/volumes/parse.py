"""The three mount flags of ``run``/``create``, parsed as docker parses them into :class:`MountSpec`.

Options kept in ``MountSpec.options`` (what the container code may use): ``propagation`` (``rprivate``...),
``nocopy`` ("true": do not populate a new volume from the image), ``create_host_path`` ("true" for ``-v``
binds: a missing host directory is created; "false" for ``--mount``: it must exist), ``selinux`` (``z``/``Z``,
accepted and ignored), and for tmpfs ``size`` (bytes or with k/m/g suffix, as given), ``mode`` (octal) and bare
flags such as ``noexec`` (value "").

This is the one parser of mount options: the CLI (``-v``, ``--mount``, ``--tmpfs``, ``--volumes-from``) and the
Engine API's ``Binds``/``Tmpfs`` use it. It is strict, as docker is, because a misspelled read-only option that
is silently ignored gives a writable mount: every unknown or malformed option is a :class:`BadMountSpec`
(exit 125) naming it, raised before anything is created.
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
    """``-v`` modes, comma-separated, each kind at most once (docker refuses ``ro,rw`` or ``z,Z``)."""
    seen: set[str] = set()
    for mode in modes.split(",") if modes else []:
        if mode in ("ro", "rw"):
            kind = "access"
            spec.read_only = mode == "ro"
        elif mode in PROPAGATIONS:
            kind = "propagation"
            if spec.type != "bind":
                raise BadMountSpec(f"invalid mode: propagation {mode} applies to bind mounts only: {value!r}")
            spec.options["propagation"] = mode
        elif mode in ("z", "Z"):
            kind = "label"
            spec.options["selinux"] = mode
        elif mode == "nocopy":
            kind = "nocopy"
            if spec.type != "volume":
                raise BadMountSpec(f"invalid mode: nocopy applies to volumes only: {value!r}")
            spec.options["nocopy"] = "true"
        elif mode in CONSISTENCY:
            kind = "consistency"
        else:
            raise BadMountSpec(f"invalid mode: {mode!r} in {value!r}")
        if kind in seen:
            raise BadMountSpec(f"invalid mode: {modes!r} sets the {kind} twice in {value!r}")
        seen.add(kind)
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


_TRUE = ("", "1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool, as docker's CLI uses it
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _flag(key: str, value: str, raw: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadMountSpec(f"invalid value for {key}: {value!r} in {raw!r} (true, false, 1 or 0)")


def parse_mount_flag(value: str) -> MountSpec:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,...`` (docker's keys and aliases)."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        if not item:
            raise BadMountSpec(f"invalid field '' must be a key=value pair in {value!r}")
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
            spec.read_only = _flag(key, fields.pop(key), value)
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
        if "bind-nonrecursive" in fields:
            _flag("bind-nonrecursive", fields.pop("bind-nonrecursive"), value)
    elif kind == "volume":
        if source:
            spec.source = check_volume_name(source)
        else:
            spec.anonymous = True
        if "volume-nocopy" in fields and _flag("volume-nocopy", fields.pop("volume-nocopy"), value):
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
    if fields.get("consistency", "consistent") not in CONSISTENCY:
        raise BadMountSpec(f"invalid consistency {fields['consistency']!r} in {value!r}")
    fields.pop("consistency", None)
    if fields:
        raise BadMountSpec(f"unexpected key {next(iter(fields))!r} in {value!r}")
    return spec


#: ``--tmpfs`` flags as mount(8) spells them: (MS_* bits set, MS_* bits cleared)
TMPFS_FLAGS = {
    "ro": (0x1, 0), "rw": (0, 0x1), "nosuid": (0x2, 0), "suid": (0, 0x2), "nodev": (0x4, 0), "dev": (0, 0x4),
    "noexec": (0x8, 0), "exec": (0, 0x8), "sync": (0x10, 0), "async": (0, 0x10), "dirsync": (0x80, 0),
    "noatime": (0x400, 0), "atime": (0, 0x400), "nodiratime": (0x800, 0), "diratime": (0, 0x800),
    "relatime": (1 << 21, 0), "norelatime": (0, 1 << 21), "strictatime": (1 << 24, 0),
    "nostrictatime": (0, 1 << 24),
}
#: tmpfs's own ``key=value`` parameters (mount data)
TMPFS_PARAMETERS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol", "huge")


def tmpfs_mount_args(spec: MountSpec, flags: int) -> tuple[int, str]:
    """mount(2) flags and data for a tmpfs ``spec``, starting from ``flags``: mount(8) flags such as ``noexec``
    are flag bits (tmpfs itself refuses them as data), parameters such as ``size`` the data string."""
    data = []
    for key, value in spec.options.items():
        if key in TMPFS_FLAGS:
            set_bits, clear_bits = TMPFS_FLAGS[key]
            flags = (flags | set_bits) & ~clear_bits
        elif key in TMPFS_PARAMETERS:
            data.append(f"{key}={value}")
    if spec.read_only:
        flags |= TMPFS_FLAGS["ro"][0]
    return flags, ",".join(data)


def parse_tmpfs_flag(value: str) -> MountSpec:
    """``--tmpfs TARGET[:OPTIONS]`` with mount(8)-style options (``size=64m,mode=1777,noexec``)."""
    target, _, opts = value.partition(":")
    spec = MountSpec(type="tmpfs", target=_check_target(target, value))
    for item in opts.split(",") if opts else []:
        key, eq, val = item.partition("=")
        if key in TMPFS_FLAGS and not eq:
            if key in ("ro", "rw"):
                spec.read_only = key == "ro"
            else:
                spec.options[key] = ""
        elif key in TMPFS_PARAMETERS and eq and val:
            spec.options[key] = val
        else:
            raise BadMountSpec(f"invalid tmpfs option {item!r} in {value!r}")
    return spec


def parse_volumes_from_flag(value: str) -> tuple[str, str]:
    """``--volumes-from CONTAINER[:ro|:rw]``: the container reference and the access mode ("" keeps each)."""
    ref, sep, mode = value.partition(":")
    if not ref or (sep and mode not in ("ro", "rw")):
        raise BadMountSpec(f"invalid mode for --volumes-from: {mode!r} in {value!r} (ro or rw)")
    return ref, mode
