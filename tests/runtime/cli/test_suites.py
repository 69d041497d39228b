"""suites/cli.yaml and suites/lifecycle.yaml: well-formed, pass on refrt and on docker, and on podman pass or
show only the differences its driver declares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.drivers.docker import DockerDriver
from conformance.drivers.podman import PodmanDriver
from conformance.drivers.refrt import RefrtDriver
from conformance.suite.loader import load_suite

REPO = Path(__file__).resolve().parents[3]
SUITES = ["cli", "lifecycle"]


def _run(suite: str, runtime: str, report: Path) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-m", "conformance", "run", str(REPO / "suites" / f"{suite}.yaml"),
                             "--runtime", runtime, "--report-dir", str(report)], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    document: dict[str, Any] = json.loads((report / "results.json").read_text())
    assert result.returncode == document["exit_code"], result.stdout[-3000:] + result.stderr[-3000:]
    bad = [(c["case"], c["status"], c["message"][:600]) for c in document["cases"]
           if c["status"] not in ("passed", "known_difference")]
    assert not bad, bad
    return {c["case"]: c["status"] for c in document["cases"]}


@pytest.mark.parametrize("suite", SUITES)
def test_well_formed_with_declared_difference_keys(suite: str) -> None:
    loaded = load_suite(REPO / "suites" / f"{suite}.yaml")
    assert len(loaded.cases) >= 8
    used = set()
    for case in loaded.cases:
        assert case.spec and case.level in ("MUST", "SHOULD", "MAY"), case.id
        used |= set(case.differences)
    drivers = {"refrt": RefrtDriver.__new__(RefrtDriver), "docker": DockerDriver.__new__(DockerDriver),
               "podman": PodmanDriver.__new__(PodmanDriver)}
    for name, driver in drivers.items():
        missing = used - set(driver.features())
        assert not missing, f"the {name} driver declares nothing about {missing}"
    assert all(drivers["refrt"].features()[key] for key in used), "refrt has every property"


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_passes_on_refrt(suite: str, tmp_path: Path) -> None:
    assert set(_run(suite, "refrt", tmp_path).values()) == {"passed"}


@pytest.mark.slow
@pytest.mark.peer
@pytest.mark.parametrize("suite", SUITES)
def test_passes_on_docker(suite: str, tmp_path: Path) -> None:
    assert set(_run(suite, "docker", tmp_path).values()) == {"passed"}


@pytest.mark.slow
@pytest.mark.peer
@pytest.mark.parametrize("suite", SUITES)
def test_podman_passes_or_shows_declared_differences(suite: str, tmp_path: Path) -> None:
    statuses = _run(suite, "podman", tmp_path)
    assert set(statuses.values()) <= {"passed", "known_difference"}, statuses
