"""Fixtures of the peer-driver tests: the local target, and a snapshot of what a peer runtime could leak."""

from __future__ import annotations

import glob
import subprocess
from pathlib import Path


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def host_state(run_id: str, tag: str) -> dict[str, object]:
    """Mounts, links, processes and directories a driver run could leave; ``tag`` names its session dirs."""
    needles = [run_id, tag]
    return {
        "mounts": [ln for ln in Path("/proc/mounts").read_text().splitlines() if any(n in ln for n in needles)],
        "links": [ln for ln in _out(["ip", "-o", "link"]).splitlines() if f"cfdk{tag[:6]}" in ln],
        "processes": [ln for ln in _out(["ps", "-eo", "args"]).splitlines()
                      if any(n in ln for n in needles) and "pytest" not in ln],
        "rules": [ln for table in ("filter", "nat") for ln in _out(["iptables", "-t", table, "-S"]).splitlines()
                  if f"cfdk{tag[:6]}" in ln],
        "dirs": glob.glob(f"/var/tmp/cf*/{tag}") + glob.glob(f"/var/tmp/conformance/*/{tag}")
        + glob.glob(f"/run/cfdk-{tag}"),
    }
