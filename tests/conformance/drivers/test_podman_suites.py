"""podman 4.3 on the networking and limits suites: exit 0, its two declared differences shown as such.

podman's driver declares ``runtime.network_isolation`` and ``runtime.inspect_oom_killed`` False (user networks
reach each other; ``State.OOMKilled`` stays false after an OOM kill). The cases that check those promises name
the keys in ``differences``, so on podman their failure is a ``known_difference`` - in results.json, in JUnit (a
property naming the key) and in the terminal table - and not a pass, and not a reason to exit 1. The failing step
must be the one the difference is about: a known difference must not hide another fault of the same case.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.fixtures.peer_runs import NOTHING_LEFT, run_suites, settled_leftovers

from .conftest import host_state

pytestmark = [pytest.mark.peer, pytest.mark.slow]

#: case -> (difference key, the step that must be the one failing)
DIFFERENCES = {
    "networking::user-networks-isolated": ("runtime.network_isolation",
                                           "a container on the other user network cannot reach it"),
    "limits::memory-oom-kill": ("runtime.inspect_oom_killed", "inspect reports State.OOMKilled true"),
}


def test_podman_networking_and_limits_exit_0_with_known_differences(tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/apt/peers.txt)")
    run, document = run_suites(tmp_path, "podman", "networking", "limits")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    cases = {f"{c['suite']}::{c['case']}": c for c in document["cases"]}
    assert {name for name, c in cases.items() if c["status"] != "passed"} == set(DIFFERENCES), {
        name: (c["status"], c["message"]) for name, c in cases.items() if c["status"] != "passed"}
    for name, (key, step) in DIFFERENCES.items():
        case = cases[name]
        assert case["status"] == "known_difference"
        assert case["difference"]["key"] == key
        assert case["message"].startswith(step), case["message"]
    assert document["summary"]["known_difference"] == 2 and document["summary"]["failed"] == 0
    assert document["exit_code"] == 0
    # JUnit keeps the state and names the key; the terminal table shows the state
    junit = ET.parse(tmp_path / "junit.xml")
    for name, (key, _) in DIFFERENCES.items():
        case_id = name.split("::")[1]
        testcase = next(t for t in junit.iter("testcase") if t.get("name") == f"{case_id}[podman]")
        properties = {p.get("name"): p.get("value") for p in testcase.iter("property")}
        assert properties.get("status") == "known_difference" and properties.get("difference") == key
        assert testcase.find("failure") is None and testcase.find("error") is None
    assert run.stdout.count("KNOWN_DIFFERENCE") == 2
    assert settled_leftovers(host_state, document["run_id"]) == NOTHING_LEFT
