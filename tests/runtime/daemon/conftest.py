"""Fixtures of the daemon tests: a refrt daemon on its own root, and a real dockerd to judge it against.

Every docker-compatibility check runs the same client commands against both (``engine`` is parametrized), so a
check cannot pass for the wrong reason. The refrt root and the dockerd are per session: bootstrapping busybox
and starting dockerd cost seconds each.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.drivers import driver_class
from conformance.targets import Target

DOCKER = "/usr/bin/docker"  # Debian's 20.10 client, the one the issue names


def refrt(root: Path, *args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the refrt CLI on ``root`` directly (not through the daemon)."""
    return subprocess.run([sys.executable, "-m", "runtime", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]


def wait_for_socket(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                time.sleep(0.05)
    raise AssertionError(f"nothing listens on {path} after {timeout}s")


@pytest.fixture(scope="session")
def refrt_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("refrtd")
    made = refrt(root, "image", "bootstrap", "busybox", timeout=600)
    assert made.returncode == 0, made.stderr
    yield root
    ids = refrt(root, "ps", "-aq").stdout.split()
    if ids:
        refrt(root, "rm", "-f", "-v", *ids, timeout=300)
    refrt(root, "network", "prune", "-f")
    refrt(root, "volume", "prune", "-a", "-f")


@pytest.fixture(scope="session")
def refrt_daemon(refrt_root: Path) -> Iterator[str]:
    """``unix://…`` of a refrt daemon serving ``refrt_root`` (started here, stopped at the end)."""
    sock = refrt_root / "api.sock"
    log = open(refrt_root / "daemon.log", "ab")  # noqa: SIM115 - kept open for the daemon's life
    proc = subprocess.Popen([sys.executable, "-m", "runtime", "--root", str(refrt_root), "daemon",
                             "--host", f"unix://{sock}"], stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for_socket(sock)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def dockerd(local_target: Target) -> Iterator[str]:
    """``unix://…`` of a real dockerd with its own data root, bridge and the offline busybox image."""
    driver = driver_class("docker")(local_target, f"daemon-tests-{uuid.uuid4().hex[:8]}")
    try:
        driver.prepare()
        yield f"unix://{driver.socket}"  # type: ignore[attr-defined]
    finally:
        driver.cleanup()
        driver.close()


@pytest.fixture(params=["refrt", "docker"])
def engine(request: pytest.FixtureRequest) -> str:
    """The Engine API socket under test: refrt's daemon, then a real dockerd with the very same checks."""
    name = "refrt_daemon" if request.param == "refrt" else "dockerd"
    return str(request.getfixturevalue(name))


def docker(host: str, *args: str, timeout: float = 120, input: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Debian's docker client against ``host``; never lets it reach a registry it was not pointed at."""
    environ = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": os.environ.get("DOCKER_CONFIG", "/nonexistent"),
               **(env or {})}
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, input=input,
                          env=environ, check=False)
