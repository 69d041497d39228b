"""``--runtime docker:unix:///path``: the docker driver in front of any Engine API socket (here refrt's daemon).

The driver must neither start nor stop a daemon then, must take refrt's features from a refrt server, and the
suites' steps must run through Debian's docker client against that socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
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


@pytest.mark.slow
def test_isolation_suite_through_the_docker_client_on_refrt(refrt_daemon: str, tmp_path: Path) -> None:  # noqa: F811
    """The matrix's ``docker:unix://…`` column: the isolation suite, run by Debian's docker client against refrt's
    daemon, passes as it does with the refrt CLI."""
    repo = Path(__file__).parents[3]
    run = subprocess.run(
        [sys.executable, "-m", "conformance", "run", str(repo / "suites" / "isolation.yaml"),
         "--runtime", f"docker:{refrt_daemon}", "--report-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    document = json.loads((tmp_path / "results.json").read_text())
    not_passed = {c["case"]: (c["status"], c["message"]) for c in document["cases"] if c["status"] != "passed"}
    assert not_passed == {}, run.stdout[-3000:]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert len(document["cases"]) >= 18
