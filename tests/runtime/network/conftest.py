"""Fixtures for refrt networking tests: a temporary refrt root and stand-in "containers".

Until a test needs the whole runtime, a container is a process in its own network namespace
(``unshare --net sleep``) plus the directory ``paths.containers/<id>/`` where refrt keeps its hosts files. Every
fixture checks on the way out that nothing of the root's networking is left on the host.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import runtime.network as rn
from runtime.network import firewall
from runtime.network.store import NetworkStore, root_tag
from runtime.paths import Paths
from runtime.spec import NetworkRequest
from tests.runtime.network.runner import Refrt, make_refrt, mounts_mentioning, remove_all


@dataclass(frozen=True)
class Ctx:
    paths: Paths


@dataclass
class FakeContainer:
    id: str
    name: str
    proc: subprocess.Popen[bytes]
    directory: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def netns(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def sh(self, script: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run ``script`` in the container's network namespace, with its hosts file as /etc/hosts."""
        wrapped = f"mount --bind {self.directory / 'hosts'} /etc/hosts && {script}"
        return subprocess.run(["nsenter", f"--net={self.netns}", "unshare", "--mount", "--propagation", "private",
                               "sh", "-c", wrapped], capture_output=True, text=True, timeout=timeout)


class Sandbox:
    """Makes stand-in containers and attaches them; tears everything down afterwards."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.containers: list[FakeContainer] = []
        self.helpers: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str = "") -> FakeContainer:
        cid = secrets.token_hex(32)
        directory = self.ctx.paths.containers / cid
        directory.mkdir(parents=True)
        (directory / "hosts").write_text("")
        (directory / "resolv.conf").write_text("")
        proc = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise RuntimeError("unshare --net did not take effect")
            time.sleep(0.01)
        c = FakeContainer(cid, name or f"c-{cid[:6]}", proc, directory)
        self.containers.append(c)
        return c

    def run(self, name: str = "", **request: object) -> FakeContainer:
        c = self.spawn(name)
        c.settings = rn.attach(self.ctx, c.id, c.name, c.pid, NetworkRequest(**request))  # type: ignore[arg-type]
        return c

    def serve_http(self, c: FakeContainer, directory: Path, port: int = 80) -> None:
        proc = subprocess.Popen(["nsenter", f"--net={c.netns}", "busybox", "httpd", "-f", "-p", str(port),
                                 "-h", str(directory)])
        self.helpers.append(proc)
        for _ in range(100):
            if subprocess.run(["nsenter", f"--net={c.netns}", "sh", "-c", f"grep -q ':{port:04X} ' "
                               "/proc/net/tcp /proc/net/tcp6"], capture_output=True).returncode == 0:
                return
            time.sleep(0.02)

    def stop(self, c: FakeContainer) -> None:
        rn.detach(self.ctx, c.id)
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGKILL)
            c.proc.wait()

    def close(self) -> None:
        for p in self.helpers:
            p.kill()
            p.wait()
        for c in self.containers:
            self.stop(c)


@pytest.fixture
def ctx(tmp_path: Path) -> Ctx:
    return Ctx(Paths.resolve(str(tmp_path / "root")))


@pytest.fixture
def sandbox(ctx: Ctx) -> Iterator[Sandbox]:
    box = Sandbox(ctx)
    try:
        yield box
    finally:
        box.close()
        for rec in NetworkStore(ctx.paths).networks():
            if not rec.default:
                rn.remove_network(ctx, rec.id)
        leftovers = rn.leftovers(ctx)
        tag = root_tag(ctx.paths)
        assert leftovers == [], leftovers
        assert not (firewall.HOST_STATE / "forward-users" / tag).exists()


@pytest.fixture(scope="module")
def refrt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refrt]:
    """A refrt root with busybox for the end-to-end tests; on the way out nothing of it may remain."""
    runner = make_refrt(tmp_path_factory, "refrt-net")
    yield runner
    remove_all(runner)
    assert rn.leftovers(Ctx(Paths.resolve(str(runner.root)))) == []
    assert mounts_mentioning(str(runner.root)) == []
