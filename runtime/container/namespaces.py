"""Which namespaces a container gets, and how a process joins those of a running container (``exec``).

The PID namespace is special: unshare(CLONE_NEWPID) affects only the caller's *children*, so the monitor
unshares it, forks the container's init (which becomes PID 1) and then returns to its own namespace with setns.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from runtime import syscalls

#: Kinds in the order ``exec`` joins them. Every namespace of a refrt container is owned by the host's user
#: namespace (the container's own, with --userns=private, owns none), so the user namespace comes last: joining
#: it first would leave us without the rights to join the others. All fds are opened before the first setns.
JOIN_ORDER = (
    ("cgroup", syscalls.CLONE_NEWCGROUP),
    ("ipc", syscalls.CLONE_NEWIPC),
    ("uts", syscalls.CLONE_NEWUTS),
    ("net", syscalls.CLONE_NEWNET),
    ("pid", syscalls.CLONE_NEWPID),
    ("mnt", syscalls.CLONE_NEWNS),
    ("user", syscalls.CLONE_NEWUSER),
)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def flags_of(names: list[str]) -> int:
    """The CLONE_NEW* bits of namespace names (``uts``, ``ipc`` ...)."""
    table = dict(JOIN_ORDER)
    flags = 0
    for name in names:
        flags |= table[name]
    return flags


def unshare_flags(network_mode: str) -> int:
    """The namespaces the container's init unshares itself (PID is done by the monitor, see module doc)."""
    flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC
    if network_mode != "host":
        flags |= syscalls.CLONE_NEWNET
    return flags


def fork_into_new_pid_namespace() -> int:
    """fork(), the child becoming PID 1 of a new PID namespace; the parent's own namespace is unchanged.

    Returns like os.fork(): 0 in the child, the child's (host) pid in the parent.
    """
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.unshare(syscalls.CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            syscalls.setns(own, syscalls.CLONE_NEWPID)
            raise
        if pid != 0:
            syscalls.setns(own, syscalls.CLONE_NEWPID)  # later children (ip, iptables...) stay in ours
        return pid
    finally:
        os.close(own)


def same_namespace(pid: int, kind: str) -> bool:
    """True when ``pid`` shares the caller's namespace ``kind`` (then joining it is a no-op and is skipped)."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino


def join(pid: int) -> None:
    """setns into every namespace of ``pid`` that differs from ours (``exec``). PID applies to children."""
    fds: list[tuple[int, int]] = []
    try:
        for kind, flag in JOIN_ORDER:
            try:
                if same_namespace(pid, kind):
                    continue
                fds.append((os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flag))
            except FileNotFoundError:
                continue
        for fd, flag in fds:
            syscalls.setns(fd, flag)
    finally:
        for fd, _ in fds:
            os.close(fd)


def bring_up_loopback() -> None:
    """``ip link set lo up`` without ip(8): a fresh network namespace has ``lo`` down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def join_network(path: str) -> None:
    """setns into the network namespace at ``path`` (``--network container:NAME``)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)
