"""One interface over cgroup v1 and v2: what a container needs from its control group.

A container gets one group, ``refrt/<id>``, at the root of each hierarchy (as docker and crun do, rather than
below the caller's own group, so limits do not depend on where the CLI happened to run). The group is configured
from :class:`Resources` - docker's flags in docker's units - and each driver maps them to its own files. The
``refrt`` parent is removed once its last child is gone.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import RefrtError

PARENT = "refrt"

#: docker's default device rules: any node may be created (mknod), only these may be opened.
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null zero full random urandom
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",  # tty console ptmx pts/*
    "c 10:200 rwm",  # net/tun
)  # fmt: skip


class CgroupError(RefrtError):
    """A control group cannot be created, configured or removed."""


@dataclass
class Resources:
    """Resource limits in docker's units (``HostConfig`` field names in comments). 0 / "" means unset."""

    memory: int = 0  # Memory, bytes
    memory_swap: int = 0  # MemorySwap, bytes of memory+swap; -1 unlimited
    nano_cpus: int = 0  # NanoCpus, 1e9 per CPU
    cpu_shares: int = 0  # CpuShares, relative weight (v1 cpu.shares, default 1024)
    cpuset_cpus: str = ""  # CpusetCpus, "0-1"
    pids_limit: int = 0  # PidsLimit; <0 unlimited
    blkio_weight: int = 0  # BlkioWeight, 10..1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Resources:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class CgroupStats:
    """Counters read from the group, as ``stats`` shows them."""

    cpu_usage_ns: int = 0
    memory_usage: int = 0
    memory_limit: int = 0  # 0 when unlimited
    memory_cache: int = 0  # inactive file pages, which docker subtracts from usage
    pids_current: int = 0
    pids_limit: int = 0  # 0 when unlimited
    blkio_read: int = 0
    blkio_write: int = 0


@dataclass
class CFSQuota:
    """``--cpus`` as CFS bandwidth: ``quota`` microseconds of CPU time per ``period``."""

    quota: int
    period: int = 100_000

    @classmethod
    def from_nano_cpus(cls, nano_cpus: int) -> CFSQuota:
        period = 100_000
        return cls(quota=nano_cpus * period // 1_000_000_000, period=period)


@dataclass
class Cgroup(abc.ABC):
    """One container's group (in every hierarchy it spans)."""

    name: str
    warnings: list[str] = field(default_factory=list)

    @abc.abstractmethod
    def dirs(self) -> list[Path]:
        """The group's directories (one per v1 hierarchy, one in v2)."""

    @abc.abstractmethod
    def add(self, pid: int) -> None:
        """Move ``pid`` (a whole process) into the group."""

    @abc.abstractmethod
    def stats(self) -> CgroupStats: ...

    @abc.abstractmethod
    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer killed a process of this group."""

    @abc.abstractmethod
    def freeze(self, frozen: bool) -> None:
        """Freeze (``pause``) or thaw every process of the group; returns once the kernel reports it done."""

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for d in self.dirs():
            try:
                pids.update(int(line) for line in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                continue
        return sorted(pids)

    def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group and wait until it is empty (a frozen group is thawed first)."""
        with contextlib.suppress(CgroupError, OSError):
            self.freeze(False)
        deadline = time.monotonic() + timeout
        while True:
            pids = self.procs()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name}: processes {pids} survive SIGKILL")
            time.sleep(0.01)

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the group (it must be empty or about to be) and the ``refrt`` parent when it is empty too."""
        deadline = time.monotonic() + timeout
        for d in self.dirs():
            _rmdir_retrying(d, deadline)
            try:
                d.parent.rmdir()
            except OSError as exc:  # another container's group is still there, or the parent is gone
                if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOENT):
                    raise


def _rmdir_retrying(d: Path, deadline: float) -> None:
    while True:
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # EBUSY while the last task is still being torn down after its exit
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove cgroup {d}: {exc.strerror}") from exc
            time.sleep(0.01)


def make_group_dir(parent: Path, name: str, prepare_parent: Any = None) -> Path:
    """mkdir ``parent/refrt/name``; retry when a concurrent ``remove`` deleted the empty ``refrt`` meanwhile."""
    for _ in range(50):
        try:
            (parent / PARENT).mkdir(exist_ok=True)
            if prepare_parent is not None:
                prepare_parent(parent / PARENT)
            path = parent / PARENT / name
            path.mkdir()
            return path
        except FileExistsError as exc:
            raise CgroupError(f"cgroup {parent / PARENT / name} already exists") from exc
        except (FileNotFoundError, CgroupError):
            if (parent / PARENT).is_dir():
                raise
            continue  # the parent was removed under us by a container that just went away: make it again
    raise CgroupError(f"cannot create cgroup {parent / PARENT / name}")


def write(path: Path, value: str | int) -> None:
    try:
        path.write_text(str(value))
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, OSError):
        return default
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed file (``key value`` per line) such as memory.stat, memory.events, cpu.stat."""
    result: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            try:
                result[key] = int(value)
            except ValueError:
                continue
    except OSError:
        pass
    return result


class CgroupDriver(abc.ABC):
    """Creates and finds groups on one host; ``driver_for_host()`` picks the implementation."""

    version: int
    name: str = "cgroupfs"

    @abc.abstractmethod
    def create(self, name: str, resources: Resources) -> Cgroup:
        """Create ``refrt/<name>`` configured with ``resources``."""

    @abc.abstractmethod
    def open(self, name: str) -> Cgroup:
        """A handle on an existing (or already removed) group ``refrt/<name>``."""
