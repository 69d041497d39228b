"""Requests that cross package boundaries inside refrt: what a container asks of volumes and of the network.

``cli/containers`` parses flags into these; ``volumes`` and ``network`` fulfil them; ``container`` carries them.
Kept here, apart from all three, so none of them imports another's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MountType = Literal["bind", "volume", "tmpfs"]


@dataclass
class MountSpec:
    """One mount into the container, as given by ``-v``, ``--mount``, ``--tmpfs`` or the image's ``VOLUME``.

    ``source`` is a host path (bind), a volume name (volume; empty for anonymous) or unused (tmpfs).
    After ``runtime.volumes.prepare_mounts`` every volume has ``host_path`` set to the directory to bind.
    """

    type: MountType
    target: str
    source: str = ""
    read_only: bool = False
    options: dict[str, str] = field(default_factory=dict)
    host_path: str = ""
    anonymous: bool = False


@dataclass
class NetworkRequest:
    """How a container wants to be networked (``--network``, ``--network-alias``, ``-p``, ``-P``, ``--dns``...).

    ``mode`` is ``bridge`` (the default network), ``none``, ``host``, ``container:<name|id>`` or a user network
    name. ``publish`` holds the raw ``-p`` values; ``exposed`` the image's and ``--expose`` ports ("80/tcp").
    """

    mode: str = "bridge"
    aliases: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    exposed: list[str] = field(default_factory=list)
    hostname: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
