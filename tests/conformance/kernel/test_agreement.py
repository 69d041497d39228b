"""check-kernel agrees with moby's check-config.sh (Debian's docker.io copy) on every option both check, except
the differences documented in docs/features.md - on this machine's config and on a reduced copy of it."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from conformance.kernel import Manifest, check
from conformance.targets import Target

CHECK_CONFIG = Path("/usr/share/docker.io/contrib/check-config.sh")
DOCS = Path(__file__).resolve().parents[3] / "docs" / "features.md"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r"^\s*- (CONFIG_[A-Z0-9_]+): (enabled \(as module\)|enabled|missing)\s*$")

pytestmark = pytest.mark.skipif(not CHECK_CONFIG.exists(),
                                reason=f"{CHECK_CONFIG} absent (Debian package docker.io, scripts/apt/peers.txt)")


def check_config(config: Path) -> dict[str, str]:
    """Run check-config.sh on ``config``; its verdict per option in our vocabulary."""
    proc = subprocess.run(["bash", str(CHECK_CONFIG), str(config)], capture_output=True, text=True, timeout=60,
                          check=False)
    verdicts = {}
    for line in _ANSI.sub("", proc.stdout).splitlines():
        if (m := _LINE.match(line)) is not None:
            verdicts[m.group(1)] = {"enabled": "enabled", "missing": "missing"}.get(m.group(2), "module")
    assert len(verdicts) > 50, proc.stdout[-1000:] + proc.stderr
    return verdicts


def documented_differences() -> set[str]:
    text = DOCS.read_text()
    section = text.split("## Differences from check-config.sh", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(CONFIG_[A-Z0-9_]+)`", section, flags=re.M))


def disagreements(ours: Manifest, theirs: dict[str, str]) -> dict[str, tuple[str, str]]:
    both = set(ours.config) & set(theirs)
    assert len(both) > 50
    return {s: (ours.config[s], theirs[s]) for s in sorted(both) if ours.config[s] != theirs[s]}


def test_agrees_on_this_machine(local_target: Target, local_manifest: Manifest, tmp_path: Path) -> None:
    live = tmp_path / "config"
    live.write_bytes(gzip.decompress(Path("/proc/config.gz").read_bytes()))
    differ = disagreements(local_manifest, check_config(live))
    assert set(differ) <= documented_differences(), differ
    # The documented version-awareness is real: on this 6.x kernel MEMCG_SWAP is n/a for us, missing for them.
    assert differ.get("CONFIG_MEMCG_SWAP") == ("n/a", "missing")


def test_agrees_on_a_config_lacking_user_ns_and_memcg(local_target: Target, tmp_path: Path) -> None:
    lines = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines()
    dropped = {"CONFIG_USER_NS", "CONFIG_MEMCG", "CONFIG_VETH"}
    reduced = tmp_path / "config-reduced"
    reduced.write_text("\n".join(f"# {ln.split('=')[0]} is not set" if ln.split("=")[0] in dropped else ln
                                 for ln in lines) + "\n")
    ours = check(local_target, reduced)
    theirs = check_config(reduced)
    for symbol in dropped:
        assert ours.config[symbol] == theirs[symbol] == "missing"
    assert set(disagreements(ours, theirs)) <= documented_differences()
