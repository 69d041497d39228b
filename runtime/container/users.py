"""``-u user[:group]`` resolved against the container's own /etc/passwd and /etc/group (never the host's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.errors import RefrtError


class UserError(RefrtError):
    """The user or group named by ``-u`` does not exist in the container."""


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    home: str = "/"


def _read(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> User:
    """Resolve ``name|uid[:group|gid]`` as docker does: numbers need no entry, names must exist."""
    user_part, _, group_part = (spec or "0").partition(":")
    entries = _read(passwd)
    entry = next((e for e in entries if len(e) >= 7 and (e[0] == user_part or e[2] == user_part)), None)
    if entry is not None:
        result = User(uid=int(entry[2]), gid=int(entry[3]), home=entry[5] or "/")
        name = entry[0]
    elif user_part.isdigit():
        result = User(uid=int(user_part), gid=0 if not group_part else -1)
        name = ""
    else:
        raise UserError(f"unable to find user {user_part}: no matching entries in passwd file")
    groups = _read(group)
    if group_part:
        gentry = next((g for g in groups if len(g) >= 3 and (g[0] == group_part or g[2] == group_part)), None)
        if gentry is not None:
            result.gid = int(gentry[2])
        elif group_part.isdigit():
            result.gid = int(group_part)
        else:
            raise UserError(f"unable to find group {group_part}: no matching entries in group file")
    if result.gid < 0:
        result.gid = 0
    if name:
        result.groups = sorted({int(g[2]) for g in groups if len(g) >= 4 and name in g[3].split(",")})
    return result


def with_added(user: User, names: list[str]) -> list[int]:
    """The supplementary groups with ``--group-add``'s; docker then lists the primary group among them too."""
    if not names:
        return user.groups
    return sorted({*user.groups, *group_ids(names), user.gid})


def group_ids(names: list[str], group: str = "/etc/group") -> list[int]:
    """``--group-add``: each group by name or number, as docker resolves them in the container's /etc/group."""
    entries = _read(group)
    ids = []
    for item in names:
        entry = next((g for g in entries if len(g) >= 3 and (g[0] == item or g[2] == item)), None)
        if entry is not None:
            ids.append(int(entry[2]))
        elif item.isdigit():
            ids.append(int(item))
        else:
            raise UserError(f"unable to find group {item}: no matching entries in group file")
    return ids
