"""podman 4.3 on the networking and limits suites: exit 0, its two declared differences shown as such.

podman's driver declares ``runtime.network_isolation`` and ``runtime.inspect_oom_killed`` False (user networks
reach each other; ``State.OOMKilled`` stays false after an OOM kill). The cases that check those promises name
the keys in ``differences``, so on podman their failure is a ``known_difference`` - in results.json, in JUnit (a
property naming the key) and in the terminal table - and not a pass, and not a reason to exit 1. The failing step
must be the one the difference is about: a known difference must not hide another fault of the same case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import host_state

pytestmark = [pytest.mark.peer, pytest.mark.slow]

REPO = Path(__file__).parents[3]
#: case -> (difference key, the step that must be the one failing)
DIFFERENCES = {
    "networking::user-networks-isolated": ("runtime.network_isolation",
                                           "a container on the other user network cannot reach it"),
    "limits::memory-oom-kill": ("runtime.inspect_oom_killed", "inspect reports State.OOMKilled true"),
}


def test_podman_networking_and_limits_exit_0_with_known_differences(tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/apt/peers.txt)")
    run = subprocess.run(
        [sys.executable, "-m", "conformance", "run", str(REPO / "suites" / "networking.yaml"),
         str(REPO / "suites" / "limits.yaml"), "--runtime", "podman", "--report-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    document = json.loads((tmp_path / "results.json").read_text())
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
    run_id = document["run_id"]
    tag = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    assert _settled_state(run_id, tag) == {"mounts": [], "links": [], "processes": [], "rules": [], "dirs": []}


def _settled_state(run_id: str, tag: str, wait: float = 15.0) -> dict[str, object]:
    """What the run left, once helpers still exiting when the driver's close returned (e.g. a DNS server of the
    network stack) have had ``wait`` seconds to go; whatever is still there then is a leak."""
    deadline = time.monotonic() + wait
    state = host_state(run_id, tag)
    while any(state.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = host_state(run_id, tag)
    return state
