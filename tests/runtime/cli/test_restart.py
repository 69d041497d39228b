"""--restart as docker's daemon applies it: always and on-failure[:N] restart (RestartCount counts), stop, kill and
rm -f are never undone, bad policies and --rm with --restart are refused."""

from __future__ import annotations

import pytest

from tests.runtime.container.conftest import Refrt, unique, wait_for

pytestmark = pytest.mark.slow


def _count(refrt: Refrt, name: str) -> int:
    return int(refrt("inspect", "-f", "{{.RestartCount}}", name).stdout.strip() or -1)


def test_on_failure_with_a_maximum(refrt: Refrt) -> None:
    name = unique("onfail")
    refrt("run", "-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3", check=True)
    try:
        wait_for(lambda: _count(refrt, name) == 2, timeout=30)
        wait_for(lambda: refrt.inspect(name)["State"]["Status"] == "exited", timeout=30)
        data = refrt.inspect(name)
        assert data["State"]["ExitCode"] == 3
        assert data["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert _count(refrt, name) == 2
    finally:
        refrt("rm", "-f", name)


def test_always_restarts_until_stopped(refrt: Refrt) -> None:
    name = unique("always")
    refrt("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "sleep 0.5; exit 0", check=True)
    try:
        wait_for(lambda: _count(refrt, name) >= 2, timeout=30)
        assert refrt("stop", "-t", "1", name).returncode == 0
        settled = _count(refrt, name)
        wait_for(lambda: refrt.inspect(name)["State"]["Status"] == "exited", timeout=30)
        import time

        time.sleep(2)
        assert _count(refrt, name) == settled and refrt.inspect(name)["State"]["Status"] == "exited"
        assert refrt("start", name).returncode == 0  # a start clears the stop: the policy applies again
        wait_for(lambda: _count(refrt, name) > settled, timeout=30)
    finally:
        assert refrt("rm", "-f", name).returncode == 0
    assert refrt("inspect", name).returncode == 1


def test_refusals(refrt: Refrt) -> None:
    bad = refrt("run", "--rm", "--restart", "bogus", "busybox", "true")
    assert bad.returncode == 125 and "invalid restart policy 'bogus'" in bad.stderr
    both = refrt("run", "--rm", "--restart", "always", "busybox", "true")
    assert both.returncode == 125 and "Conflicting options: --restart and --rm" in both.stderr
    count = refrt("run", "--restart", "always:3", "busybox", "true")
    assert count.returncode == 125 and "maximum retry count cannot be used" in count.stderr
