"""``system df`` and ``system prune`` in docker's shape (columns, rows, ``{{json .}}`` keys, the prompt)."""

from __future__ import annotations

import json

import pytest

from tests.runtime.container.conftest import Refrt, unique


def test_system_df_shape(refrt: Refrt) -> None:
    table = refrt("system", "df")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line[:16].strip() for line in lines[1:]] == ["Images", "Containers", "Local Volumes", "Build Cache"]
    rows = [json.loads(line) for line in refrt("system", "df", "--format", "{{json .}}").stdout.splitlines()]
    assert list(rows[0]) == ["Active", "Reclaimable", "Size", "TotalCount", "Type"]  # Go's sorted map keys
    assert int(rows[0]["TotalCount"]) >= 1


def test_system_prune_removes_stopped_containers(refrt: Refrt) -> None:
    name = unique("prune")
    refrt("run", "--name", name, "busybox", "true", check=True)
    asked = refrt("system", "prune", input="n\n")
    assert asked.returncode == 0 and "WARNING! This will remove:" in asked.stdout
    assert refrt("inspect", name).returncode == 0
    done = refrt("system", "prune", "-f")
    assert done.returncode == 0, done.stderr
    assert refrt("inspect", name).returncode == 1


@pytest.mark.peer
def test_df_header_as_docker(request: pytest.FixtureRequest, refrt: Refrt) -> None:
    from tests.runtime.daemon.conftest import docker

    theirs = docker(request.getfixturevalue("dockerd"), "system", "df").stdout.splitlines()
    ours = refrt("system", "df").stdout.splitlines()
    assert ours[0] == theirs[0]
    assert [line[:16] for line in ours] == [line[:16] for line in theirs]
