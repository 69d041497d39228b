"""``--userns=private``: the container's root is an unprivileged uid range of the host (docker's userns-remap).

The user namespace maps container ids 0..size-1 to host ids base..base+size-1, taken from the ``refrt`` entry of
/etc/subuid and /etc/subgid (docker uses ``dockremap``), or 100000:65536 when there is none. The image layers stay
owned by host root and shared with every other container: the init sees them through *idmapped* mounts (the
kernel shifts owners on the fly), so files owned by root in the image are owned by root in the container, and
what the container writes lands in its upper dir owned by base+uid. The init sets everything up as real root and
joins the user namespace last, just before dropping privileges: it then holds capabilities only over its own
user namespace, never over the host's mounts, network or hostname.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from runtime import syscalls
from runtime.errors import RefrtError

DEFAULT_BASE = 100000
DEFAULT_SIZE = 65536
NAME = "refrt"


class UsernsError(RefrtError):
    """The user namespace or its idmapped mounts cannot be set up."""


@dataclass(frozen=True)
class IdRange:
    base: int = DEFAULT_BASE
    size: int = DEFAULT_SIZE


def subordinate_range(path: str, name: str = NAME) -> IdRange:
    """The first ``name:base:size`` line of /etc/subuid or /etc/subgid, else the default range."""
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] == name:
                    return IdRange(int(parts[1]), int(parts[2]))
    except (OSError, ValueError):
        pass
    return IdRange()


def ranges() -> tuple[IdRange, IdRange]:
    return subordinate_range("/etc/subuid"), subordinate_range("/etc/subgid")


def create_user_namespace(uids: IdRange, gids: IdRange) -> int:
    """A new user namespace with the given maps, as an fd (a short-lived child creates it; we keep its ns)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the holder
        code = 0
        try:
            os.close(ready_r)
            os.close(hold_w)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise UsernsError("cannot create a user namespace (unshare CLONE_NEWUSER failed)")
        Path(f"/proc/{pid}/uid_map").write_text(f"0 {uids.base} {uids.size}\n")
        Path(f"/proc/{pid}/gid_map").write_text(f"0 {gids.base} {gids.size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsernsError(f"cannot set up the user namespace: {exc}") from exc
    finally:
        os.close(ready_r)
        os.close(hold_w)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def idmapped_copy(source: Path, target: Path, userns_fd: int) -> None:
    """Mount ``source`` again at ``target``, its owners shifted by the user namespace's mapping."""
    fd = syscalls.open_tree(source, syscalls.OPEN_TREE_CLONE | syscalls.OPEN_TREE_CLOEXEC)
    try:
        syscalls.mount_setattr_idmap(fd, userns_fd)
        syscalls.move_mount(fd, target)
    except OSError as exc:
        raise UsernsError(f"cannot make an idmapped mount of {source}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def enter(userns_fd: int) -> None:
    """Join the container's user namespace (the last namespace step of the init)."""
    syscalls.setns(userns_fd, syscalls.CLONE_NEWUSER)
