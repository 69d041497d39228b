"""The README's two fresh-machine commands are true: CI calls the test command, and the set-up command installs
everything and runs the main job successfully from a clean clone of this repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (\S.*)$", section, re.MULTILINE)


def test_readme_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    assert readme_commands() == ["scripts/setup.sh", "scripts/test"]
    assert "scripts/test" in (REPO / ".ci/run").read_text()


@pytest.mark.slow
def test_setup_command_works_on_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "CONFORMANCE_REFRT_ROOT": str(tmp_path / "refrt")}
    env.pop("VIRTUAL_ENV", None)
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=1800)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    reports = list((clone / "reports").glob("*-local/results.json"))
    assert len(reports) == 1
    document = json.loads(reports[0].read_text())
    assert document["exit_code"] == 0
    assert document["summary"]["failed"] == document["summary"]["error"] == 0
    suites = {case["suite"] for case in document["cases"]}
    assert {"host", "isolation", "limits", "layering"} <= suites
    again = subprocess.run(["bash", "scripts/setup.sh", "--no-run"], cwd=clone, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0
    assert "installing" not in again.stdout + again.stderr  # idempotent: nothing installed the second time
