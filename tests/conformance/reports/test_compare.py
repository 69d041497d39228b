"""The compatibility matrix and the run diff, on hand-made results.json documents (the renderer's unit test),
through the real ``conformance report`` command."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ReportError
from conformance.reports.compare import diff, load, merge, render_diff, render_html, render_markdown, render_terminal

CLI = [sys.executable, "-c", "import sys; from conformance.cli import main; sys.exit(main())"]


def case(suite: str, case_id: str, runtime: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"suite": suite, "case": case_id, "title": f"{case_id} title", "level": "MUST", "spec": "docker-cli",
            "runtime": runtime, "target": {"name": "local", "kernel": "6.18", "cgroup": "hybrid"},
            "status": status, "reason": reason, "message": message, "duration": 0.5}


def document(cases: list[dict[str, Any]], run_id: str = "run1") -> dict[str, Any]:
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("passed", "failed", "skipped", "error")}
    runtimes = {c["runtime"]: {"version": "1.0"} for c in cases}
    return {"format": "conformance-results/1", "run_id": run_id, "started": "2026-11-27T21:00:00+00:00",
            "finished": "2026-11-27T21:01:00+00:00", "target": {"name": "local", "backend": "local"},
            "runtimes": runtimes, "summary": {**counts, "total": len(cases)}, "exit_code": 0, "cases": cases}


BASE = [
    case("basics", "echo", "refrt", "passed"),
    case("basics", "echo", "podman", "passed"),
    case("basics", "exit-code", "refrt", "passed"),
    case("basics", "exit-code", "podman", "failed", message="expected exit 3, got 0\nmore"),
    case("limits", "oom", "refrt", "passed"),
    case("limits", "oom", "podman", "skipped", reason="requires runtime.oom_killed_flag"),
]


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def test_matrix_has_one_column_per_runtime_and_per_suite_totals() -> None:
    matrix = merge([("a.json", document(BASE))])
    assert [c.label for c in matrix.columns] == ["refrt@local", "podman@local"]
    assert [(r.suite, r.case) for r in matrix.rows] == [("basics", "echo"), ("basics", "exit-code"),
                                                        ("limits", "oom")]
    totals = matrix.totals()
    refrt, podman = matrix.columns
    assert totals["basics"][refrt]["passed"] == 2 and totals["basics"][podman]["failed"] == 1
    assert totals["limits"][podman]["skipped"] == 1
    text = render_terminal(matrix)
    assert "refrt@local" in text and "podman@local" in text and "FAIL" in text and "skip" in text
    assert "1/2 (1 failed)" in text


def test_merging_two_files_adds_columns_and_disambiguates_repeats() -> None:
    other = document([case("basics", "echo", "docker", "passed"), case("basics", "echo", "refrt", "error")], "r2")
    matrix = merge([("a.json", document(BASE)), ("b.json", other)])
    labels = [c.label for c in matrix.columns]
    assert labels == ["refrt@local", "podman@local", "docker@local", "refrt@local #2"]
    echo = matrix.rows[0]
    assert echo.cells[matrix.columns[3]].status == "error"
    assert "exit-code" in render_terminal(matrix)


def test_markdown_and_html_show_statuses_and_reasons() -> None:
    matrix = merge([("a.json", document(BASE))])
    md = render_markdown(matrix)
    assert "| suite | case | refrt@local | podman@local |" in md
    assert "**FAIL [1]**" in md and "expected exit 3, got 0" in md and "requires runtime.oom_killed_flag" in md
    assert "more" not in md.split("## Reasons")[1]  # only the message's first line
    html = render_html(matrix)
    assert html.count("<th>podman@local</th>") == 2  # totals table and cases table
    assert 'class="failed"' in html and 'class="skipped"' in html
    assert "<script" not in html and "http" not in html  # offline


def test_html_escapes_case_text() -> None:
    doc = document([case("s", "c", "refrt", "failed", message="<b>boom</b>")])
    assert "&lt;b&gt;boom&lt;/b&gt;" in render_html(merge([("x", doc)]))


def test_diff_classifies_changes() -> None:
    new_cases = copy.deepcopy(BASE)
    new_cases[0]["status"] = "failed"  # echo on refrt: regression
    new_cases[0]["message"] = "stdout differs"
    new_cases[3]["status"] = "passed"  # exit-code on podman: fixed
    new_cases[5]["reason"] = "requires cgroup.v2.memory"  # skip reason changed
    new_cases.append(case("net", "ping", "refrt", "passed"))
    d = diff(document(BASE), document(new_cases))
    assert [c.name for c in d.newly_failing] == ["basics/echo [refrt@local]"]
    assert [c.name for c in d.newly_passing] == ["basics/exit-code [podman@local]"]
    assert [c.name for c in d.skip_reason_changed] == ["limits/oom [podman@local]"]
    assert [c.name for c in d.added] == ["net/ping [refrt@local]"]
    assert d.regression
    text = render_diff(d)
    assert "basics/echo [refrt@local]: passed -> failed: stdout differs" in text
    assert "'requires runtime.oom_killed_flag' -> 'requires cgroup.v2.memory'" in text
    assert text.strip().endswith("REGRESSION: 1 case(s) newly failing")


def test_diff_without_regression() -> None:
    d = diff(document(BASE), document(BASE))
    assert not d.regression and render_diff(d) == "no regression\n"


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "conformance-results/1", "cases": [{"suite": "s", "status": "weird",
                                                                           "case": "c"}]}))
    with pytest.raises(ReportError, match="status 'weird'"):
        load([bad])
    with pytest.raises(ReportError):
        load([tmp_path / "missing.json"])


def test_report_merge_command_writes_html_and_markdown(tmp_path: Path) -> None:
    a = write(tmp_path, "a", document(BASE))
    b = write(tmp_path, "b", document([case("basics", "echo", "docker", "passed")]))
    out = tmp_path / "matrix"
    proc = conformance("report", "merge", str(a), str(b), "--report-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "docker@local" in proc.stdout and "podman@local" in proc.stdout
    assert "docker@local" in (out / "matrix.html").read_text()
    assert "docker@local" in (out / "matrix.md").read_text()


def test_report_diff_command_exits_1_naming_the_injected_regression(tmp_path: Path) -> None:
    old = write(tmp_path, "old", document(BASE))
    injected = copy.deepcopy(BASE)
    injected[4]["status"] = "failed"
    injected[4]["message"] = "container was not OOM-killed"
    new = write(tmp_path, "new", document(injected))
    proc = conformance("report", "diff", str(old), str(new))
    assert proc.returncode == 1
    assert "limits/oom [refrt@local]: passed -> failed" in proc.stdout
    same = conformance("report", "diff", str(old), str(old))
    assert same.returncode == 0 and "no regression" in same.stdout
    broken = conformance("report", "diff", str(old), str(tmp_path / "nope.json"))
    assert broken.returncode == 2 and "nope.json" in broken.stderr


@pytest.mark.slow
@pytest.mark.peer
def test_real_run_against_refrt_and_peers_fills_the_matrix(tmp_path: Path) -> None:
    """``conformance run`` of a small suite against refrt, podman (and docker where dockerd exists), then
    ``report merge`` shows one column per runtime, and an injected regression makes ``report diff`` exit 1."""
    import shutil

    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/apt/peers.txt)")
    runtimes = ["refrt", "podman"] + (["docker"] if shutil.which("dockerd") else [])
    suite = Path(__file__).with_name("data") / "compat_smoke.yaml"
    run_dir = tmp_path / "run"
    args = ["run", str(suite), "--report-dir", str(run_dir)]
    for runtime in runtimes:
        args += ["--runtime", runtime]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = run_dir / "results.json"
    document = json.loads(results.read_text())
    assert set(document["runtimes"]) == set(runtimes)

    merged = conformance("report", "merge", str(results), "--report-dir", str(tmp_path / "matrix"))
    assert merged.returncode == 0, merged.stderr
    header = merged.stdout.splitlines()[0]
    for runtime in runtimes:
        assert f"{runtime}@local" in header
    rows = {line.split()[1]: line.split()[2:] for line in merged.stdout.splitlines()[2:6]}
    assert rows["echo"] == ["pass"] * len(runtimes)
    assert rows["oom-flag"][1] == "skip"  # podman declares that inspect does not report OOMKilled
    html = (tmp_path / "matrix" / "matrix.html").read_text()
    assert "<th>refrt@local</th>" in html and "<th>podman@local</th>" in html

    regressed = copy.deepcopy(document)
    victim = next(c for c in regressed["cases"] if c["runtime"] == "podman" and c["case"] == "hostname")
    victim["status"], victim["message"] = "failed", "stdout: expected cf-compat"
    new = write(tmp_path, "regressed", regressed)
    proc = conformance("report", "diff", str(results), str(new))
    assert proc.returncode == 1
    assert "compat-smoke/hostname [podman@local]: passed -> failed" in proc.stdout
    assert "REGRESSION: 1 case(s) newly failing" in proc.stdout
    # the peers' per-run state is gone: podman's store directory, dockerd's directories and bridge
    tag = hashlib.sha256(document["run_id"].encode()).hexdigest()[:8]
    assert not Path(f"/var/tmp/cfpm/{tag}").exists()
    assert not Path(f"/run/cfdk-{tag}").exists() and not Path(f"/var/tmp/conformance/docker/{tag}").exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert f"cfdk{tag[:6]}" not in links
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=False).stdout
        assert f"cfdk{tag[:6]}" not in rules, table
