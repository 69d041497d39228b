"""``conformance check-kernel`` end to end: exit statuses, report files, and a fed-in config that lacks
CONFIG_USER_NS and CONFIG_MEMCG changing the verdicts and the exit status."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "import sys; from conformance.cli import main; sys.exit(main())"]


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def live_config_without(tmp_path: Path, *symbols: str) -> Path:
    """This machine's config with ``symbols`` switched off the way kconfig writes it."""
    lines = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines()
    out = [f"# {line.split('=')[0]} is not set" if line.split("=")[0] in symbols else line for line in lines]
    path = tmp_path / "config-reduced"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.fixture(scope="module")
def live_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    report_dir = tmp_path_factory.mktemp("check-kernel")
    return conformance("check-kernel", "--report-dir", str(report_dir)), report_dir


def test_this_machine_passes_and_writes_reports(live_report: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, report_dir = live_report
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Generally Necessary:" in proc.stdout and "- Storage Drivers:" in proc.stdout
    assert "Verdict: OK" in proc.stdout
    data = json.loads((report_dir / "features.json").read_text())
    assert data["verdict"]["status"] == "ok"
    for key in ("ns.mount", "ns.pid", "ns.net", "ns.ipc", "ns.uts", "ns.user", "ns.cgroup", "cgroup.v1",
                "cgroup.v2", "cgroup.hybrid", "cgroup.v1.memory", "cgroup.v1.pids", "cgroup.v1.cpu",
                "cgroup.v2.memory", "cgroup.v2.pids", "cgroup.v2.cpu", "cgroup.memory.enforced",
                "cgroup.pids.enforced", "overlay", "overlay.max_lowerdirs", "net.veth", "net.bridge",
                "net.iptables_nat", "net.nft_nat", "seccomp", "kvm"):
        assert key in data["probes"] and key in data["features"], key
    assert "Verdict:" in (report_dir / "check-kernel.md").read_text()
    html = (report_dir / "check-kernel.html").read_text()
    assert "<h2>Generally Necessary</h2>" in html and "CONFIG_OVERLAY_FS" in html


def test_json_format_prints_the_manifest() -> None:
    proc = conformance("check-kernel", "--format", "json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["config"]["CONFIG_NAMESPACES"] == "enabled"
    assert data["probes"]["overlay"]["ok"] is True


def test_config_without_user_ns_and_memcg_changes_verdicts_and_exit(tmp_path: Path) -> None:
    reduced = live_config_without(tmp_path, "CONFIG_USER_NS", "CONFIG_MEMCG")
    proc = conformance("check-kernel", "--kernel-config", str(reduced), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["config"]["CONFIG_USER_NS"] == "missing"
    assert data["config"]["CONFIG_MEMCG"] == "missing"
    assert data["config"]["CONFIG_NAMESPACES"] == "enabled"
    assert data["config_source"] == str(reduced)
    assert "CONFIG_MEMCG" in data["verdict"]["missing_necessary"]
    assert "CONFIG_USER_NS" in data["verdict"]["missing_optional"]
    assert data["probes"]["ns.user"]["ok"] is True  # probes still describe the live target
    table = conformance("check-kernel", "--kernel-config", str(reduced))
    assert table.returncode == 1
    assert "- CONFIG_MEMCG: missing" in table.stdout and "Verdict: MISSING" in table.stdout
    assert "CONFIG_MEMCG" in table.stdout.splitlines()[-1]


def test_config_without_only_an_optional_option_still_passes(tmp_path: Path) -> None:
    reduced = live_config_without(tmp_path, "CONFIG_USER_NS")
    proc = conformance("check-kernel", "--kernel-config", str(reduced), "--format", "md")
    assert proc.returncode == 0
    assert "| `CONFIG_USER_NS` | missing |" in proc.stdout


def test_older_kernel_config_is_judged_by_its_own_version(tmp_path: Path) -> None:
    config = tmp_path / "config-4.19"
    config.write_text("# Linux/x86 4.19.0 Kernel Configuration\nCONFIG_NAMESPACES=y\nCONFIG_NF_NAT_IPV4=m\n")
    data = json.loads(conformance("check-kernel", "--kernel-config", str(config), "--format", "json").stdout)
    assert data["config_version"] == "4.19"
    assert data["config"]["CONFIG_NF_NAT_IPV4"] == "module"
    assert data["config"]["CONFIG_MEMCG_SWAP"] == "missing"  # it still existed in 4.19
    assert data["config"]["CONFIG_TIME_NS"] == "n/a"


def test_unreadable_inputs_exit_2(tmp_path: Path) -> None:
    assert conformance("check-kernel", "--kernel-config", str(tmp_path / "missing")).returncode == 2
    bogus = tmp_path / "bogus"
    bogus.write_text("not a config\n")
    proc = conformance("check-kernel", "--kernel-config", str(bogus))
    assert proc.returncode == 2 and "not a kernel config" in proc.stderr
    proc = conformance("check-kernel", "--target", "nosuchscheme")
    assert proc.returncode == 2 and "unknown target" in proc.stderr
