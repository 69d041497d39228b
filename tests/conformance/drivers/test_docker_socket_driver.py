"""``--runtime docker:unix:///path``: the docker driver in front of any Engine API socket (here refrt's daemon).

The driver must neither start nor stop a daemon then, must take refrt's features from a refrt server, and the
suites' steps must run through Debian's docker client against that socket.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conformance.drivers import driver_class
from conformance.drivers.refrt import RefrtDriver
from conformance.errors import DriverError
from conformance.targets import Target
from tests.runtime.daemon.conftest import refrt_daemon, refrt_root  # noqa: F401 - fixtures used here too


def test_the_argument_must_be_a_unix_socket() -> None:
    cls = driver_class("docker:unix:///run/x/api.sock")
    assert cls.name == "docker:unix:///run/x/api.sock"
    assert cls.external_socket == "/run/x/api.sock"  # type: ignore[attr-defined]
    with pytest.raises(DriverError, match="unix:///path"):
        driver_class("docker:tcp://127.0.0.1:2375")
    assert driver_class("docker").external_socket == ""  # type: ignore[attr-defined]


@pytest.mark.slow
def test_drives_refrt_daemon_without_owning_it(refrt_daemon: str, local_target: Target) -> None:  # noqa: F811
    driver = driver_class(f"docker:{refrt_daemon}")(local_target, f"socket-driver-{uuid.uuid4().hex[:8]}")
    assert driver.argv(["ps"])[:3] == ["/usr/bin/docker", "-H", refrt_daemon]
    driver.prepare()
    assert driver.features() == RefrtDriver(local_target, "x").features()
    result = driver.cli(["run", "--rm", "busybox", "echo", "through the socket"], timeout=60)
    assert (result.exit_status, result.stdout) == (0, "through the socket\n"), result.stderr
    kept = driver.cli(["run", "-d", "busybox", "sleep", "60"], timeout=60)
    assert kept.exit_status == 0, kept.stderr
    driver.cleanup()  # removes what the run labelled
    assert driver.cli(["ps", "-aq"], timeout=60).stdout.strip() == ""
    driver.close()
    assert Path(refrt_daemon.removeprefix("unix://")).is_socket()
    assert driver.cli(["version", "--format", "{{.Server.Version}}"], timeout=60).exit_status == 0
