"""refrt events: docker's lines and filters for a container's life (create, start, die, destroy), compared with
docker 20.10's own stream of the same commands."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest

from tests.runtime.container.conftest import Refrt, unique

Cli = Callable[..., subprocess.CompletedProcess[str]]
LIFE = ["--filter", "event=create", "--filter", "event=start", "--filter", "event=die", "--filter", "event=destroy"]


def _life(cli: Cli, name: str) -> list[str]:
    since = f"{time.time() - 1:.3f}"
    assert cli("run", "--name", name, "-l", "team=a", "busybox", "sh", "-c", "exit 2").returncode == 2
    assert cli("rm", name).returncode == 0
    until = f"{time.time() + 0.5:.3f}"
    time.sleep(0.7)
    shown = cli("events", "--since", since, "--until", until, "--filter", f"container={name}", *LIFE,
                "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.team}} "
                            "{{.Actor.Attributes.image}} {{.Actor.Attributes.exitCode}}")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.splitlines()


EXPECTED = ["container create {n} a busybox <no value>", "container start {n} a busybox <no value>",
            "container die {n} a busybox 2", "container destroy {n} a busybox <no value>"]


def test_life_events(refrt: Refrt) -> None:
    name = unique("events")
    assert _life(refrt, name) == [line.format(n=name) for line in EXPECTED]
    plain = refrt("events", "--since", "1m", "--until", "0s", "--filter", f"container={name}",
                  "--filter", "event=die").stdout.strip()
    assert plain.endswith(f"(exitCode=2, image=busybox, name={name}, team=a)") and " container die " in plain
    assert refrt("events", "--filter", "bogus=1", "--until", "0s").returncode == 125


@pytest.mark.peer
def test_same_as_docker(request: pytest.FixtureRequest) -> None:
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        words = list(args)
        if words[0] == "run":
            words.insert(1, "--pull=never")
        return docker(host, *words)

    name = unique("events")
    assert _life(cli, name) == [line.format(n=name) for line in EXPECTED]
