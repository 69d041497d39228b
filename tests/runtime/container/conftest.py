"""Fixtures for the container tests: a temporary refrt root holding busybox, and a ``refrt`` runner.

Every test talks to refrt through ``python -m runtime --root <tmp>`` subprocesses, as a user would. The root is
shared by the tests of one session (busybox is bootstrapped once); container names carry a random suffix so
concurrent sessions of other helpers never collide. Bytecode goes to a private cache so every subprocess does
not recompile refrt.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Refrt:
    root: Path
    env: dict[str, str]

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "runtime", "--root", str(self.root), *args]

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO
        )
        if check and result.returncode != 0:
            raise AssertionError(f"refrt {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=REPO, text=True, **kwargs)

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self("inspect", ref, check=True).stdout)
        return data[0]

    def state(self, container_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "containers" / container_id / "state.json").read_text())
        return data


@pytest.fixture(scope="session")
def refrt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refrt]:
    root = tmp_path_factory.mktemp("refrt-ctr")
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = ""
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    env["PYTHONPATH"] = str(REPO)
    runner = Refrt(root=root, env=env)
    runner("image", "bootstrap", "busybox", check=True)
    yield runner
    leftovers = [p.name for p in (root / "containers").glob("*")] if (root / "containers").exists() else []
    for cid in leftovers:
        runner("rm", "-f", cid)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(interval)


def cgroup_dirs(container_id: str) -> list[Path]:
    """Every directory the container's cgroup could have, in whichever hierarchy the host has."""
    base = Path("/sys/fs/cgroup")
    candidates = [base / "refrt" / container_id]
    candidates += [d / "refrt" / container_id for d in base.iterdir() if d.is_dir()]
    return [p for p in candidates if p.exists()]


def processes_in_cgroup_of(container_id: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "cgroup").read_text()
        except OSError:
            continue
        if f"/refrt/{container_id}" in text:
            found.append(int(entry.name))
    return found


def mounts_mentioning(text: str) -> list[str]:
    """Mount lines of *any* mount namespace on the host that mention ``text`` (one process per namespace)."""
    seen: set[int] = set()
    lines: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(entry / "ns" / "mnt").st_ino
            if ns in seen:
                continue
            seen.add(ns)
            lines += [line for line in (entry / "mountinfo").read_text().splitlines() if text in line]
        except OSError:
            continue
    return lines


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_nothing_left(refrt: Refrt, container_id: str, pids: list[int]) -> None:
    """No directory, mount, cgroup or process of the container is left on the host."""
    assert not (refrt.root / "containers" / container_id).exists()
    assert mounts_mentioning(container_id) == []
    assert cgroup_dirs(container_id) == []
    assert processes_in_cgroup_of(container_id) == []
    assert [p for p in pids if p and pid_alive(p)] == []
