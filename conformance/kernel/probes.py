"""Running the live probes on a target: ship ``probe_target.py`` over ``Target.run`` and read its JSON back.

One round trip (``python3 -`` with the program on stdin) serves local, ssh and VM targets alike, and brings back
the kernel config text too, so a whole check costs one command on the target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.errors import TargetError
from conformance.kernel.config import KernelConfig, parse_config, unavailable
from conformance.kernel.errors import KernelCheckError
from conformance.targets.base import Target

PROBE_PROGRAM = Path(__file__).with_name("probe_target.py")
PROBE_TIMEOUT = 120.0


@dataclass
class ProbeResult:
    """One live probe: did it work, and what shows it (the command run or file read, and its result)."""

    ok: bool
    evidence: str
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ok": self.ok, "evidence": self.evidence}
        if self.value is not None:
            data["value"] = self.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(ok=bool(data["ok"]), evidence=str(data.get("evidence", "")), value=data.get("value"))


@dataclass
class ProbeRun:
    """Everything one probe run on the target reported."""

    release: str
    machine: str
    boot_id: str
    config: KernelConfig
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    seconds: float = 0.0


def run_probes(target: Target) -> ProbeRun:
    """Run the probe program on ``target``. Raises KernelCheckError when it cannot run there."""
    try:
        result = target.run("python3 -", stdin=PROBE_PROGRAM.read_text(), timeout=PROBE_TIMEOUT)
    except TargetError as exc:
        raise KernelCheckError(f"probes could not run on {target.name}: {exc}") from exc
    if result.exit_status != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise KernelCheckError(
            f"probe program failed on {target.name} (exit {result.exit_status}): {' | '.join(tail)}"
        )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise KernelCheckError(f"probe program on {target.name} printed no JSON: {exc}") from None
    return parse_probe_output(data)


def parse_probe_output(data: dict[str, Any]) -> ProbeRun:
    cfg = data.get("config", {})
    if cfg.get("source"):
        config = parse_config(cfg.get("text", ""), cfg["source"])
    else:
        config = unavailable(cfg.get("tried", []))
    return ProbeRun(
        release=data["kernel"]["release"],
        machine=data["kernel"].get("machine", ""),
        boot_id=data.get("boot_id", ""),
        config=config,
        probes={k: ProbeResult.from_json(v) for k, v in data["probes"].items()},
        seconds=float(data.get("seconds", 0.0)),
    )


def boot_id(target: Target) -> str:
    """The target's boot id: a cached manifest is valid while it does not change."""
    try:
        return target.run("cat /proc/sys/kernel/random/boot_id", timeout=30).stdout.strip()
    except TargetError:
        return ""
