"""A ``refrt`` runner for end-to-end tests of networking and volumes: ``python -m runtime --root <tmp>``.

The root is per test session and area (busybox is bootstrapped once into it); names carry a random suffix so
concurrent sessions of other helpers never collide.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
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

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60,
                 check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout,
                                env=self.env, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(f"refrt {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), env=self.env, cwd=REPO, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self("inspect", ref, check=True).stdout)
        return data[0]


def make_refrt(tmp_path_factory: pytest.TempPathFactory, label: str) -> Refrt:
    root = tmp_path_factory.mktemp(label)
    env = dict(os.environ)
    env.pop("REFRT_ROOT", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    env["PYTHONPATH"] = str(REPO)
    runner = Refrt(root=root, env=env)
    runner("image", "bootstrap", "busybox", check=True)
    return runner


def remove_all(refrt: Refrt) -> None:
    """Remove every container, user network and volume of the root (what a test left after a failure)."""
    ids = refrt("ps", "-aq", "--no-trunc").stdout.split()
    if ids:
        refrt("rm", "-f", "-v", *ids)
    for name in refrt("network", "ls", "--format", "{{.Name}}").stdout.split():
        if name not in ("bridge", "host", "none"):
            refrt("network", "rm", name)
    vols = refrt("volume", "ls", "-q").stdout.split()
    if vols:
        refrt("volume", "rm", "-f", *vols)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def mounts_mentioning(text: str) -> list[str]:
    """Mount lines of any mount namespace on the host that mention ``text``."""
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
            lines += [ln for ln in (entry / "mountinfo").read_text().splitlines() if text in ln]
        except OSError:
            continue
    return lines
