"""The verdict rules on real probe output with parts taken away: no config on the target, a failed necessary
probe, a probe program that cannot run (a check that could not run is an error, never a verdict)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.kernel.errors import KernelCheckError
from conformance.kernel.manifest import build_manifest, check
from conformance.kernel.probes import PROBE_PROGRAM, parse_probe_output, run_probes
from conformance.targets import Target
from conformance.targets.base import CommandResult, TargetSpec


class ScriptedTarget(Target):
    """A target whose every command answers with a fixed result (for the harness-error paths)."""

    scheme = "scripted"

    def __init__(self, result: CommandResult) -> None:
        super().__init__(TargetSpec.parse("scripted"))
        self.result = result

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        return self.result

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError


@pytest.fixture(scope="module")
def raw_output(local_target: Target) -> dict[str, Any]:
    result = local_target.run("python3 -", stdin=PROBE_PROGRAM.read_text(), timeout=120)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_without_a_config_the_probes_decide_and_the_report_says_so(raw_output: dict[str, Any]) -> None:
    data = copy.deepcopy(raw_output)
    data["config"] = {"source": None, "tried": ["/proc/config.gz", "/boot/config-x"]}
    run = parse_probe_output(data)
    manifest = build_manifest("local", run, run.config)
    assert manifest.config == {}
    assert manifest.verdict.ok
    assert "kernel config unavailable" in manifest.verdict.summary
    assert manifest.to_json()["config_tried"] == ["/proc/config.gz", "/boot/config-x"]


def test_a_failed_necessary_probe_fails_the_verdict(raw_output: dict[str, Any]) -> None:
    data = copy.deepcopy(raw_output)
    data["probes"]["ns.net"] = {"ok": False, "evidence": "unshare(CLONE_NEWNET): EPERM"}
    data["probes"]["kvm"] = {"ok": False, "evidence": "open /dev/kvm: No such file"}
    run = parse_probe_output(data)
    manifest = build_manifest("local", run, run.config)
    assert not manifest.verdict.ok and manifest.exit_code == 1
    assert manifest.verdict.missing_necessary == ["probe ns.net"]
    assert "probe kvm" in manifest.verdict.missing_optional


def test_pure_v2_layout_makes_v1_options_not_applicable(raw_output: dict[str, Any]) -> None:
    data = copy.deepcopy(raw_output)
    data["probes"]["cgroup.hybrid"]["value"] = "v2"
    run = parse_probe_output(data)
    config = build_manifest("local", run, run.config).config
    assert config["CONFIG_CGROUP_FREEZER"] == "n/a"
    assert config["CONFIG_CGROUP_BPF"] == "enabled"


def test_probe_program_failure_is_a_check_error() -> None:
    target = ScriptedTarget(CommandResult("python3 -", 127, "", "sh: python3: not found", 0.0))
    with pytest.raises(KernelCheckError, match="python3: not found"):
        run_probes(target)
    garbage = ScriptedTarget(CommandResult("python3 -", 0, "not json", "", 0.0))
    with pytest.raises(KernelCheckError, match="no JSON"):
        check(garbage)
