"""Linux capabilities: names, docker's default set, and how the container's sets are reduced before exec.

Root in a container is not root on the host because its bounding set keeps only docker's 14 default
capabilities; a process can never regain a capability once it left the bounding set.
"""

from __future__ import annotations

from runtime import syscalls
from runtime.errors import UsageError

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {name: number for number, name in enumerate(NAMES)}

#: Docker's default capability set (moby oci/caps/defaults.go); as a mask 0x00000000a80425fb.
DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip


def normalize(name: str) -> str:
    """``net_admin``, ``CAP_NET_ADMIN`` and ``NET_ADMIN`` all name one capability; ``ALL`` names every one."""
    upper = name.strip().upper()
    upper = upper.removeprefix("CAP_")
    if upper != "ALL" and upper not in NUMBERS:
        raise UsageError(f"unknown capability: {name!r}")
    return upper


def resolve(cap_add: list[str], cap_drop: list[str], privileged: bool = False) -> list[str]:
    """The container's capability names: docker's defaults, then ``--cap-drop``, then ``--cap-add``."""
    if privileged:
        return list(NAMES)
    adds = [normalize(c) for c in cap_add]
    drops = [normalize(c) for c in cap_drop]
    caps = [] if "ALL" in drops else [c for c in DEFAULT if c not in drops]
    if "ALL" in adds:
        return list(NAMES)
    caps.extend(c for c in adds if c not in caps)
    return caps


def mask(names: list[str]) -> int:
    value = 0
    for name in names:
        value |= 1 << NUMBERS[name]
    return value


def drop_bounding_set(keep: list[str]) -> None:
    """Remove from the bounding set every capability the kernel knows that is not in ``keep``."""
    wanted = mask(keep)
    for number in range(64):
        if not syscalls.capbset_read(number):
            continue
        if not wanted & (1 << number):
            syscalls.capbset_drop(number)


def apply_process_sets(keep: list[str], uid: int) -> None:
    """Effective and permitted sets to ``keep`` for root, empty for other users (as docker does).

    The inheritable set stays empty (docker since 20.10.14, CVE-2022-24769), and ambient capabilities are
    cleared, so a non-root program cannot inherit capabilities through file capabilities.
    """
    syscalls.clear_ambient_caps()
    _, permitted, _ = syscalls.capget()
    # never more than we hold: --privileged asks for all, but the host may have withheld some (CAP_SYS_RESOURCE)
    value = (mask(keep) & permitted) if uid == 0 else 0
    syscalls.capset(value, value, 0)
