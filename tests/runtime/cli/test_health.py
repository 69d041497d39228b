"""Health checks against a real dockerd: the same command lines on refrt and on docker 20.10 give the same health
states and transitions (``starting`` -> ``unhealthy`` -> ``healthy``, stop makes it ``unhealthy``, a start makes it
``starting`` again), the same ``inspect`` shapes (State.Health, Config.Healthcheck), ``ps`` words and filters,
timeouts, start periods, the image's HEALTHCHECK under the flags, ``commit -c HEALTHCHECK`` and the flag errors.

Every check is parametrized over the engine, refrt first, with the very same assertions (docker's behaviour as
measured here); intervals are 1 s to keep it short.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.container.conftest import Refrt, unique, wait_for
from tests.runtime.daemon.conftest import refrt_daemon, refrt_root  # noqa: F401 - fixtures (refrt's Engine API)

pytestmark = pytest.mark.slow

Cli = Callable[..., subprocess.CompletedProcess[str]]
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


DOCKER = pytest.param("docker", marks=pytest.mark.peer)


@pytest.fixture(params=["refrt", "refrt-api", DOCKER])
def cli(request: pytest.FixtureRequest, refrt: Refrt) -> Cli:
    """The command line of the engine under test: refrt's CLI; Debian's docker 20.10 client against refrt's
    Engine API (its daemon, on a root of its own); or that client against a real dockerd (which never pulls:
    ``--pull=never`` on run/create)."""
    return _engine(request, refrt)


def _engine(request: pytest.FixtureRequest, refrt: Refrt) -> Cli:
    if request.param == "refrt":
        return refrt
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd" if request.param == "docker" else "refrt_daemon")

    def run_docker(*args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        words = [args[0], "--pull=never", *args[1:]] if args[0] in ("run", "create") else list(args)
        result = docker(host, *words, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    return run_docker


def _health(cli: Cli, name: str) -> Any:
    return json.loads(cli("inspect", "-f", "{{json .State.Health}}", name, check=True).stdout)


def _status(cli: Cli, name: str) -> str:
    return cli("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Status}}", check=True).stdout.strip()


def _filtered(cli: Cli, value: str) -> list[str]:
    return cli("ps", "-a", "--filter", f"health={value}", "--format", "{{.Names}}", check=True).stdout.split()


def _state_is(cli: Cli, name: str, wanted: str) -> Callable[[], Any]:
    def check() -> Any:
        health = _health(cli, name)
        return health if health and health["Status"] == wanted else None
    return check


def test_states_and_transitions(cli: Cli) -> None:
    name = unique("health")
    probe = "test -f /tmp/ok && echo fine || { echo nope; exit 1; }"
    cli("run", "-d", "--name", name, "--health-cmd", probe, "--health-interval", "1s", "--health-retries", "3",
        "busybox", "sleep", "120", check=True)
    try:
        first = _health(cli, name)
        assert first["Status"] == "starting" and first["FailingStreak"] < 3, first
        config = json.loads(cli("inspect", "-f", "{{json .Config.Healthcheck}}", name, check=True).stdout)
        assert config == {"Test": ["CMD-SHELL", probe], "Interval": 1_000_000_000, "Retries": 3}

        sick = wait_for(_state_is(cli, name, "unhealthy"), timeout=30, interval=0.2)
        assert sick["FailingStreak"] >= 3 and 3 <= len(sick["Log"]) <= 5, sick
        for entry in sick["Log"]:
            assert entry["ExitCode"] == 1 and entry["Output"] == "nope\n", entry
            assert STAMP.match(entry["Start"]) and STAMP.match(entry["End"]) and entry["Start"] <= entry["End"]
        assert _status(cli, name).endswith("(unhealthy)") and _status(cli, name).startswith("Up ")
        assert name in _filtered(cli, "unhealthy") and name not in _filtered(cli, "healthy")

        cli("exec", name, "touch", "/tmp/ok", check=True)
        well = wait_for(_state_is(cli, name, "healthy"), timeout=30, interval=0.2)
        assert well["FailingStreak"] == 0 and well["Log"][-1]["ExitCode"] == 0 and well["Log"][-1]["Output"] == "fine\n"
        assert len(well["Log"]) <= 5
        assert _status(cli, name).endswith("(healthy)")
        assert name in _filtered(cli, "healthy") and name not in _filtered(cli, "none")

        cli("stop", "-t", "0", name, check=True)
        stopped = _health(cli, name)
        assert stopped["Status"] == "unhealthy" and stopped["Log"], stopped  # docker: unhealthy once stopped
        assert _status(cli, name).startswith("Exited (137)")
        cli("start", name, check=True)
        again = _health(cli, name)
        assert again["Status"] == "starting" and again["FailingStreak"] == 0 and again["Log"], again
        assert "(health: starting)" in _status(cli, name) or "(healthy)" in _status(cli, name)
    finally:
        cli("rm", "-f", name)


def test_paused_is_unhealthy_until_a_probe_after_unpause(cli: Cli) -> None:
    name = unique("hpause")
    cli("run", "-d", "--name", name, "--health-cmd", "true", "--health-interval", "1s", "busybox", "sleep", "120",
        check=True)
    try:
        wait_for(_state_is(cli, name, "healthy"), timeout=30, interval=0.2)
        cli("pause", name, check=True)
        paused = _health(cli, name)
        assert paused["Status"] == "unhealthy" and paused["FailingStreak"] == 0, paused
        assert _status(cli, name).endswith("(Paused)")
        logged = len(paused["Log"])
        time.sleep(2.5)
        assert len(_health(cli, name)["Log"]) == logged  # no probe while paused
        cli("unpause", name, check=True)
        wait_for(_state_is(cli, name, "healthy"), timeout=30, interval=0.2)
    finally:
        cli("unpause", name)
        cli("rm", "-f", name)


def test_timeout_exit_codes_and_output(cli: Cli) -> None:
    slow, odd = unique("hslow"), unique("hodd")
    cli("run", "-d", "--name", slow, "--health-cmd", "sleep 30", "--health-interval", "1s", "--health-timeout",
        "500ms", "--health-retries", "1", "busybox", "sleep", "120", check=True)
    cli("run", "-d", "--name", odd, "--health-cmd", "head -c 5000 /dev/zero | tr '\\0' a; exit 2",
        "--health-interval", "1s", "--health-retries", "1", "busybox", "sleep", "120", check=True)
    try:
        timed = wait_for(_state_is(cli, slow, "unhealthy"), timeout=30, interval=0.2)
        assert timed["Log"][0]["ExitCode"] == -1
        assert timed["Log"][0]["Output"] == "Health check exceeded timeout (500ms)"
        left = cli("exec", slow, "ps", "-o", "pid,stat,args", check=True).stdout
        assert "sleep 30" not in left and " Z " not in left, left  # the probe was killed and reaped
        bad = wait_for(_state_is(cli, odd, "unhealthy"), timeout=30, interval=0.2)
        assert bad["Log"][0]["ExitCode"] == 2  # any code but 0 is a failure, kept as it was
        assert bad["Log"][0]["Output"] == "a" * 4096 + "..."
    finally:
        cli("rm", "-f", slow, odd)


def test_start_period_keeps_failures_from_counting(cli: Cli) -> None:
    name = unique("hstart")
    cli("run", "-d", "--name", name, "--health-cmd", "exit 1", "--health-interval", "1s", "--health-retries", "1",
        "--health-start-period", "4s", "busybox", "sleep", "120", check=True)
    try:
        wait_for(lambda: len((_health(cli, name) or {}).get("Log") or []) >= 2, timeout=30, interval=0.2)
        during = _health(cli, name)
        if during["Status"] == "starting":  # the machine may be slow enough for the period to be over already
            assert during["FailingStreak"] == 0, during
        later = wait_for(_state_is(cli, name, "unhealthy"), timeout=30, interval=0.2)
        assert later["FailingStreak"] >= 1
    finally:
        cli("rm", "-f", name)


def test_image_healthcheck_flags_and_commit(cli: Cli, tmp_path: Path) -> None:
    tag = f"hcimg-{unique('t').split('-')[1]}"
    (tmp_path / "Dockerfile").write_text('FROM busybox\nHEALTHCHECK --interval=1s --timeout=3s --retries=4 '
                                         'CMD ["sh", "-c", "echo image"]\n')
    cli("build", "-q", "-t", tag, str(tmp_path), check=True, timeout=120)
    own, over, off = unique("himg"), unique("hover"), unique("hoff")
    try:
        image = json.loads(cli("image", "inspect", "-f", "{{json .Config.Healthcheck}}", tag, check=True).stdout)
        assert image == {"Test": ["CMD", "sh", "-c", "echo image"], "Interval": 10**9, "Timeout": 3 * 10**9,
                         "Retries": 4}
        cli("run", "-d", "--name", own, tag, "sleep", "120", check=True)
        cli("run", "-d", "--name", over, "--health-cmd", "echo mine", "--health-timeout", "2s", tag, "sleep", "120",
            check=True)
        cli("run", "-d", "--name", off, "--no-healthcheck", tag, "sleep", "120", check=True)

        def config(name: str) -> Any:
            return json.loads(cli("inspect", "-f", "{{json .Config.Healthcheck}}", name, check=True).stdout)

        assert config(over) == {"Test": ["CMD-SHELL", "echo mine"], "Interval": 10**9, "Timeout": 2 * 10**9,
                                "Retries": 4}
        assert config(off) == {"Test": ["NONE"], "Interval": 10**9, "Timeout": 3 * 10**9, "Retries": 4}
        assert _health(cli, off) is None and "(" not in _status(cli, off)
        assert off in _filtered(cli, "none")
        healthy = wait_for(_state_is(cli, own, "healthy"), timeout=30, interval=0.2)
        assert healthy["Log"][-1]["Output"] == "image\n"
        assert wait_for(_state_is(cli, over, "healthy"), timeout=30, interval=0.2)["Log"][-1]["Output"] == "mine\n"

        committed = cli("commit", "-c", "HEALTHCHECK --interval=5s CMD true", over, f"{tag}-c", check=True)
        assert committed.stdout.strip().startswith("sha256:")
        merged = json.loads(cli("image", "inspect", "-f", "{{json .Config.Healthcheck}}", f"{tag}-c",
                                check=True).stdout)
        assert merged == {"Test": ["CMD-SHELL", "true"], "Interval": 5 * 10**9, "Timeout": 2 * 10**9, "Retries": 4}
        cli("commit", "-c", "HEALTHCHECK NONE", over, f"{tag}-n", check=True)
        none = json.loads(cli("image", "inspect", "-f", "{{json .Config.Healthcheck}}", f"{tag}-n", check=True).stdout)
        assert none["Test"] == ["NONE"]
    finally:
        cli("rm", "-f", own, over, off)
        cli("rmi", f"{tag}-c", f"{tag}-n", tag)


def test_health_status_events(cli: Cli) -> None:
    name = unique("hevent")
    since = str(int(time.time()) - 1)
    cli("run", "-d", "--name", name, "--health-cmd", "true", "--health-interval", "1s", "busybox", "sleep", "120",
        check=True)
    try:
        wait_for(_state_is(cli, name, "healthy"), timeout=30, interval=0.2)
        seen = cli("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", f"container={name}",
                   "--format", "{{.Action}}", timeout=30)

        def actions() -> list[str]:
            return seen.stdout.splitlines()

        assert "health_status: healthy" in actions(), seen
        assert "exec_start: /bin/sh -c true" in actions() and "exec_die" in actions()
    finally:
        cli("rm", "-f", name)


FLAG_ERRORS = [
    (["--health-interval", "1"], 'invalid argument "1" for "--health-interval" flag: time: missing unit in duration'),
    (["--health-interval=-1s"], "--health-interval cannot be negative"),
    (["--health-timeout=-1s"], "--health-timeout cannot be negative"),
    (["--health-start-period=-1s"], "--health-start-period cannot be negative"),
    (["--health-retries", "-1"], "--health-retries cannot be negative"),
    (["--health-retries", "x"], 'invalid argument "x" for "--health-retries" flag: strconv.ParseInt'),
    (["--no-healthcheck", "--health-cmd", "true"], "--no-healthcheck conflicts with --health-* options"),
    (["--no-healthcheck", "--health-interval", "1s"], "--no-healthcheck conflicts with --health-* options"),
    (["--health-interval", "500us"], "Interval in Healthcheck cannot be less than 1ms"),
    (["--health-timeout", "100us"], "Timeout in Healthcheck cannot be less than 1ms"),
]


def test_flag_errors(cli: Cli) -> None:
    """docker's words; run exits 125 and creates nothing."""
    before = cli("ps", "-aq", check=True).stdout.split()
    for flags, words in FLAG_ERRORS:
        result = cli("run", "--rm", *flags, "busybox", "true")
        assert result.returncode == 125 and words in result.stderr, (flags, result.returncode, result.stderr)
    assert cli("ps", "-aq", check=True).stdout.split() == before
    unknown = cli("ps", "--filter", "health=bogus")
    assert unknown.returncode == 1 and "Unrecognised filter value for health: bogus" in unknown.stderr


def test_go_durations_and_merge() -> None:
    """The flag values and the timeout message as Go writes them; docker's field-by-field merge over the image."""
    from runtime.container import health
    from runtime.errors import UsageError

    assert health.go_duration("1m30s", "--health-interval") == 90 * 10**9
    assert health.go_duration("1.5s", "--health-interval") == 1_500_000_000
    assert health.go_duration("-2s", "--health-interval") == -2 * 10**9
    for bad, words in (("1", 'missing unit in duration "1"'), ("x", 'invalid duration "x"'),
                       ("5q", 'unknown unit "q" in duration "5q"')):
        with pytest.raises(UsageError, match=words):
            health.go_duration(bad, "--health-timeout")
    texts = {500 * 10**6: "500ms", 30 * 10**9: "30s", 90 * 10**9: "1m30s", 3600 * 10**9: "1h0m0s",
             1_500_000_000: "1.5s", 100_000: "100µs", 0: "0s"}
    assert {ns: health.go_duration_text(ns) for ns in texts} == texts
    image = {"Test": ["CMD", "true"], "Interval": 2, "Retries": 4}
    assert health.merged(None, image) == image
    assert health.merged({"Interval": 5}, image) == {"Test": ["CMD", "true"], "Interval": 5, "Retries": 4}
    assert list(health.merged({"Retries": 1, "Test": ["NONE"]}, image) or {}) == ["Test", "Interval", "Retries"]
    assert health.merged({"Test": ["CMD-SHELL", "x"]}, None) == {"Test": ["CMD-SHELL", "x"]}
