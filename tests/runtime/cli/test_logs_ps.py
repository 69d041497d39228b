"""logs --since/--until (times, Unix stamps, durations) and ps -l/-n/-s, as docker's."""

from __future__ import annotations

import time

import pytest

from runtime.cli.timefilter import timestamp
from runtime.errors import UsageError
from tests.runtime.container.conftest import Refrt, unique


def test_timestamp_forms() -> None:
    now = 1_700_000_000.0
    assert timestamp("42m", "--since", now) == now - 42 * 60
    assert timestamp("1h30m", "--since", now) == now - 5400
    assert timestamp("1700000000.5", "--since", now) == 1_700_000_000.5
    assert timestamp("2023-11-14T22:13:20Z", "--since", now) == 1_700_000_000
    assert timestamp("2023-11-14T22:13:20.123456789Z", "--since", now) == pytest.approx(1_700_000_000.123456)
    assert timestamp("2023-11-14", "--since", now) == 1_699_920_000
    with pytest.raises(UsageError, match="failed to parse value as time or duration"):
        timestamp("bogus", "--since", now)


def test_logs_since_until_and_ps_latest_size(refrt: Refrt) -> None:
    name = unique("logs")
    refrt("run", "--name", name, "busybox", "sh", "-c", "echo early; sleep 2; echo late", check=True)
    try:
        assert refrt("logs", "--since", "1s", name).stdout == "late\n"
        assert refrt("logs", "--until", "1s", name).stdout == "early\n"
        assert refrt("logs", "--since", str(int(time.time()) - 3600), name).stdout == "early\nlate\n"
        assert refrt("logs", "--since", "bogus", name).returncode == 125
        latest = refrt("ps", "-l", "--format", "{{.Names}}")
        assert latest.stdout.strip() == name
        sized = refrt("ps", "-s", "-n", "1").stdout.splitlines()
        assert sized[0].split()[-1] == "SIZE" and "(virtual " in sized[1]
    finally:
        refrt("rm", "-f", name)
