"""The two kernel calls of a container's last set-up steps that glibc does not wrap: seccomp(2) and keyctl(2).

Both go through ``syscall(2)`` by number (x86_64, arm64); ``runtime.syscalls`` holds the shared libc handle.
"""

from __future__ import annotations

import ctypes
import os
import platform

from runtime import syscalls

_SYS = {
    "x86_64": {"seccomp": 317, "keyctl": 250},
    "aarch64": {"seccomp": 277, "keyctl": 219},
}
SECCOMP_SET_MODE_FILTER = 1
KEYCTL_JOIN_SESSION_KEYRING = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _number(name: str) -> int:
    try:
        return _SYS[platform.machine()][name]
    except KeyError:
        raise OSError(f"{name}: system call number unknown on {platform.machine()}") from None


def install_filter(program: bytes) -> None:
    """Install a packed classic-BPF program as this thread's seccomp filter (inherited across fork/exec).

    Needs ``no_new_privs`` or CAP_SYS_ADMIN in the caller's user namespace (see init.py for the order)."""
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = syscalls._libc
    result = libc.syscall(ctypes.c_long(_number("seccomp")), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                          ctypes.c_uint(0), ctypes.byref(prog))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"installing the seccomp filter: {os.strerror(err)}")


def join_new_session_keyring() -> None:
    """Join a new anonymous session keyring, so the keys of the caller's session are out of reach.

    ENOSYS (a kernel without keys) is ignored, as runc does: keyrings then cannot leak either."""
    libc = syscalls._libc
    result = libc.syscall(ctypes.c_long(_number("keyctl")), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING),
                          ctypes.c_void_p(None))
    if result < 0:
        err = ctypes.get_errno()
        if err != 38:  # ENOSYS
            raise OSError(err, f"joining a new session keyring: {os.strerror(err)}")


def seccomp_mode(pid: int | str = "self") -> int:
    """The ``Seccomp:`` field of /proc/PID/status (0 none, 1 strict, 2 filter)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    return 0
