"""``--sysctl NAME=VALUE``: namespaced kernel parameters of the container, as docker allows them.

Only parameters that live in the container's own namespaces can be set: ``net.*`` (its network namespace; not
with ``--network host``) and the IPC ones (``kernel.msg*``, ``kernel.sem``, ``kernel.shm*``, ``fs.mqueue.*``).
Anything else would change the host and is refused, as docker refuses it. The monitor writes them while the
init waits for its go-ahead: a short-lived child joins the init's namespace and writes ``/proc/sys/...`` (the
files resolve against the writer's namespace).
"""

from __future__ import annotations

import os

from runtime import syscalls
from runtime.errors import RefrtError, UsageError

IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
       "kernel.shmmni", "kernel.shm_rmid_forced")


def parse(item: str, network_mode: str = "") -> tuple[str, str, str]:
    """(name, value, namespace) of ``NAME=VALUE``; docker's refusals."""
    name, eq, value = item.partition("=")
    if not eq or not name:
        raise UsageError(f"invalid argument \"{item}\" for \"--sysctl\" flag: sysctl '{item}' is not whitelisted")
    if name in IPC or name.startswith("fs.mqueue."):
        return name, value, "ipc"
    if name.startswith("net."):
        if network_mode == "host":
            raise UsageError(f"sysctl '{name}' not allowed in host network namespace")
        return name, value, "net"
    raise UsageError(f"sysctl '{name}' is not whitelisted")


def apply(pid: int, items: list[str]) -> None:
    """Write each sysctl inside process ``pid``'s namespaces; the first failure is raised."""
    for item in items:
        name, value, ns = parse(item)
        read_r, write_w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the writer
            os.close(read_r)
            try:
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
                syscalls.setns(fd, syscalls.CLONE_NEWNET if ns == "net" else syscalls.CLONE_NEWIPC)
                with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
                    f.write(value)
                os._exit(0)
            except OSError as exc:
                os.write(write_w, (exc.strerror or str(exc)).encode())
                os._exit(1)
        os.close(write_w)
        with os.fdopen(read_r, "rb") as r:
            problem = r.read().decode(errors="replace")
        _, status = os.waitpid(child, 0)
        if status != 0:
            raise RefrtError(f"write sysctl {name}={value}: {problem or 'failed'}")
