"""Containers: namespaces, the rootfs set-up, the per-container monitor, exec, logs and the life cycle.

Map: ``spec`` (what was asked) and ``state`` (what is, on disk); ``lifecycle`` (create/start/stop/kill/rm/
wait/reconcile); ``monitor`` (the parent of each container); ``init`` (fork to execve inside the container) with
``rootfs``, ``namespaces``, ``capabilities``, ``users``; ``exec``; ``logs``; ``terminal``; ``stats``;
``inspect``; ``oneshot`` (``run_in_rootfs`` for the builder); ``hooks`` (the optional volumes/network packages).
"""

from __future__ import annotations

from runtime.container.oneshot import run_in_rootfs
from runtime.container.spec import ContainerSpec
from runtime.container.state import Container, ContainerNotFound

__all__ = ["Container", "ContainerNotFound", "ContainerSpec", "run_in_rootfs"]
