"""Verdicts you can trust: reports that stay valid whatever a container prints, flaky passes and known differences
kept apart in every format, ``-k`` that matches cases (not runtime paths), and testinfra's ``--hosts`` honoured
or refused - never ignored. Runs ``conformance run`` / pytest for real on the local target."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from conformance.reports import write_all
from conformance.reports.compare import merge, render_html, render_markdown, render_terminal
from conformance.reports.junit import SCHEMA
from conformance.reports.status import exit_code
from conformance.reports.text import visible, visible_tree

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parents[2]
FORBIDDEN = [chr(c) for c in (*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF)]


def conformance(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_pytest(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_valid_junit(path: Path) -> etree._ElementTree:
    """Parses with ElementTree and lxml, and validates against the project's schema."""
    ET.parse(path)
    tree = etree.parse(str(path))
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    assert schema.validate(tree), schema.error_log
    return tree


def junit_text(tree: etree._ElementTree) -> str:
    """Every text and attribute value in the document, joined."""
    parts: list[str] = []
    for element in tree.iter():
        parts += [element.text or "", *element.attrib.values()]
    return "\n".join(parts)


def raw_forbidden(text: str) -> list[str]:
    return [hex(ord(ch)) for ch in set(text) if ch in FORBIDDEN or 0xD800 <= ord(ch) <= 0xDFFF]


# --- the sanitiser --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "shown"), [
    ("nul\x00", "nul\\x00"),
    ("bell\x07 esc\x1b[31m", "bell\\x07 esc\\x1b[31m"),
    ("tab\tnl\ncr\r", "tab\tnl\ncr\r"),  # the three C0 controls XML allows stay as they are
    ("\ufffe\uffff", "\\ufffe\\uffff"),
    (b"\xff\xfe".decode("utf-8", "surrogateescape"), "\\xff\\xfe"),  # undecodable bytes: the byte itself
    ("lone \ud800", "lone \\ud800"),
    ("del\x7f c1\x85", "del\\x7f c1\\x85"),
    ("caf\u00e9 \U0001f600 \ufffd", "caf\u00e9 \U0001f600 \ufffd"),  # ordinary text is untouched
])
def test_visible_escapes_what_xml_forbids_and_keeps_the_rest(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_visible_tree_covers_keys_and_nested_values() -> None:
    assert visible_tree({"k\x00": ["a\x01", 2, None, {"x": "\ufffe"}]}) == {"k\\x00": ["a\\x01", 2, None,
                                                                                         {"x": "\\ufffe"}]}


def _document(cases: list[dict[str, Any]], *, strict: bool = False) -> dict[str, Any]:
    from conformance.reports.status import counts

    return {"format": "conformance-results/1", "run_id": "r\x00id", "started": "2026-12-01T10:00:00+00:00",
            "finished": "2026-12-01T10:00:05+00:00", "duration": 5.0,
            "target": {"name": "local", "kernel": "6.1", "cgroup": "v2", "backend": "local"},
            "runtimes": {"podman": {"version": "4.3"}}, "summary": counts(cases),
            "exit_code": exit_code(cases, [], strict=strict), "strict_differences": strict,
            "collect_errors": [], "cases": cases}


def _case(case_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"suite": "s", "case": case_id, "name": f"{case_id}[podman]", "title": f"title {case_id}",
            "spec": "", "level": "MUST", "runtime": "podman", "file": "s.yaml", "line": 1, "status": status,
            "reason": "", "message": "", "duration": 0.1, "steps": [], "captured": {}, **extra}


def test_undecodable_bytes_round_trip_in_json_and_show_escaped_elsewhere(tmp_path: Path) -> None:
    """A target that decodes with surrogateescape hands undecodable bytes on as U+DC80..U+DCFF: results.json
    keeps them (JSON writes "\\udcff"), every other format shows the byte (\\xff)."""
    printed = b"nul:\x00|bytes:\xff\xfe|fffe:\xef\xbf\xbe|end".decode("utf-8", "surrogateescape")
    step = {"phase": "steps", "label": "run: x", "action": "run", "line": 3, "command": "x", "exit_status": 1,
            "stdout": printed, "stderr": "", "duration": 0.1, "status": "failed", "message": "m", "attempts": 1}
    case = _case("c", "failed", message=f"stdout was {printed}", details=printed, steps=[step])
    paths = write_all(_document([case]), tmp_path)
    again = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert again["cases"][0]["steps"][0]["stdout"] == printed
    assert printed.encode("utf-8", "surrogateescape").startswith(b"nul:\x00|bytes:\xff\xfe")
    assert "\\udcff" in paths["json"].read_text(encoding="utf-8")
    tree = assert_valid_junit(paths["junit"])
    assert "nul:\\x00|bytes:\\xff\\xfe|fffe:\\ufffe|end" in junit_text(tree)
    for name in ("html", "markdown"):
        text = paths[name].read_text(encoding="utf-8")
        assert "bytes:\\xff\\xfe" in text and not raw_forbidden(text), name
    matrix = merge([("x", _document([_case("c", "failed", message=printed)]))])
    assert "bytes:\\xff\\xfe" in render_markdown(matrix) and "bytes:\\xff\\xfe" in render_html(matrix)


@pytest.fixture(scope="module")
def nasty(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("nasty")
    return conformance("run", str(DATA / "nasty_output.yaml"), "--report-dir", str(out)), out


def test_output_with_nul_controls_and_fffe_gives_valid_reports(nasty: tuple[Any, Path]) -> None:
    result, out = nasty
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    tree = assert_valid_junit(out / "junit.xml")
    text = junit_text(tree)
    assert not raw_forbidden(text)
    for escaped in ("nul:\\x00|", "bell:\\x07|", "esc:\\x1b[31m|", "fffe:\\ufffe|"):
        assert escaped in text, escaped
    failure = tree.find(".//failure")
    assert failure is not None and "nul:\\x00|" in (failure.text or "")
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    stdout = document["cases"][0]["steps"][0]["stdout"]
    assert stdout.startswith("nul:\x00|bell:\x07|esc:\x1b[31m|fffe:\ufffe|bytes:")  # exact text in JSON
    # The two bytes \377\376 are never dropped: the targets decode with surrogateescape, so results.json keeps
    # them (as U+DCFF U+DCFE) and every rendered report shows them as \xff\xfe.
    assert "bytes:\udcff\udcfe|end" in stdout
    assert "bytes:\\xff\\xfe|end" in text
    assert stdout.encode("utf-8", "surrogateescape").endswith(b"bytes:\xff\xfe|end\n")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert not raw_forbidden(html) and "nul:\\x00|bell:\\x07|esc:\\x1b[31m|fffe:\\ufffe|" in html
    parser = HTMLParser()
    parser.feed(html)
    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert not raw_forbidden(markdown) and "\\x00" in markdown
    assert not raw_forbidden(result.stdout)  # the terminal table and the failure text too


@pytest.mark.slow
def test_run_of_a_real_suite_writes_junit_that_parses(tmp_path: Path) -> None:
    """isolation.yaml reads /proc/1/cmdline in a container: NUL-separated; junit.xml must still parse."""
    result = conformance("run", "suites/isolation.yaml", "--report-dir", str(tmp_path))
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr
    tree = assert_valid_junit(tmp_path / "junit.xml")
    assert len(tree.findall(".//testcase")) >= 10
    document = json.loads((tmp_path / "results.json").read_text())
    printed = [s["stdout"] for c in document["cases"] for s in c["steps"] if "\x00" in s["stdout"]]
    assert printed, "no step printed a NUL: the test no longer covers what it should"
    assert "\\x00" in junit_text(tree)


# --- flaky ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("flaky")
    return conformance("run", str(DATA / "flaky.yaml"), "--report-dir", str(out)), out


def test_pass_on_the_second_attempt_is_flaky_and_exit_0(flaky: tuple[Any, Path]) -> None:
    result, out = flaky
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    document = json.loads((out / "results.json").read_text())
    status = {c["case"]: c for c in document["cases"]}
    assert status["second-attempt"]["status"] == "flaky" and status["steady"]["status"] == "passed"
    assert status["second-attempt"]["retried"] == [{"phase": "steps", "label": "count attempts", "attempts": 2}]
    assert document["summary"]["flaky"] == 1 and document["summary"]["passed"] == 1
    # terminal table: a flaky column and the case listed with its attempts
    assert "FLAKY" in result.stdout and "count attempts (attempt 2)" in result.stdout


def test_flaky_in_junit_html_and_markdown(flaky: tuple[Any, Path]) -> None:
    out = flaky[1]
    tree = assert_valid_junit(out / "junit.xml")
    case = tree.find(".//testcase[@name='second-attempt']")
    assert case is not None
    assert [child.tag for child in case] == ["properties", "system-out"]  # still a passing testcase
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props == {"status": "flaky", "attempts": "count attempts: 2"}
    steady = tree.find(".//testcase[@name='steady']")
    assert steady is not None and steady.find("properties") is None
    html = (out / "report.html").read_text()
    assert '<span class="flaky">FLAKY</span> flaky :: second-attempt' in html
    assert "count attempts (attempt 2)" in html
    markdown = (out / "summary.md").read_text()
    assert "| flaky" in markdown and "FLAKY" in markdown and "count attempts (attempt 2)" in markdown


def test_flaky_in_the_matrix_and_in_report_diff(flaky: tuple[Any, Path], tmp_path: Path) -> None:
    results = flaky[1] / "results.json"
    merged = conformance("report", "merge", str(results), "--report-dir", str(tmp_path / "m"))
    assert merged.returncode == 0, merged.stderr
    row = next(line for line in merged.stdout.splitlines() if "second-attempt" in line)
    assert row.split()[-1] == "flaky"
    assert "2/2 (1 flaky)" in merged.stdout
    assert 'class="flaky"' in (tmp_path / "m" / "matrix.html").read_text()
    assert "flaky [1]" in (tmp_path / "m" / "matrix.md").read_text()
    before = json.loads(results.read_text())
    for case in before["cases"]:
        if case["status"] == "flaky":
            case["status"], case["reason"] = "passed", ""
    old = tmp_path / "old.json"
    old.write_text(json.dumps(before))
    diff = conformance("report", "diff", str(old), str(results))
    assert diff.returncode == 0, diff.stdout + diff.stderr  # flaky is not a regression
    assert "newly flaky (passed only on a retry): 1" in diff.stdout
    assert "flaky/second-attempt [none@local]: passed -> flaky: passed after retries" in diff.stdout


# --- known differences ----------------------------------------------------------------------------------------


def _known(strict: bool) -> dict[str, Any]:
    difference = {"key": "runtime.network_isolation", "note": "user networks reach each other"}
    cases = [_case("isolated", "known_difference", difference=difference, message="ping got through",
                   reason="known difference runtime.network_isolation: user networks reach each other",
                   details="ping got through\n--- stdout ---\n1 packets"),
             _case("echo", "passed")]
    return _document(cases, strict=strict)


def test_known_difference_exit_code_only_fails_a_strict_run() -> None:
    cases = _known(False)["cases"]
    assert exit_code(cases, []) == 0
    assert exit_code(cases, [], strict=True) == 1
    assert exit_code([*cases, _case("x", "failed")], []) == 1


def test_known_difference_in_every_format(tmp_path: Path) -> None:
    paths = write_all(_known(False), tmp_path / "lenient")
    tree = assert_valid_junit(paths["junit"])
    case = tree.find(".//testcase[@name='isolated[podman]']")
    assert case is not None
    skipped = case.find("skipped")
    assert skipped is not None and "runtime.network_isolation" in skipped.get("message", "")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["status"] == "known_difference" and props["difference"] == "runtime.network_isolation"
    assert tree.getroot().get("failures") == "0" and tree.getroot().get("skipped") == "1"
    html = paths["html"].read_text()
    assert "KNOWN DIFF" in html and "Known difference runtime.network_isolation: user networks" in html
    markdown = paths["markdown"].read_text()
    assert "KNOWN_DIFFERENCE" in markdown and "runtime.network_isolation" in markdown
    matrix = merge([("x", _known(False))])
    assert "known-diff" in render_terminal(matrix) and "1 known difference" in render_terminal(matrix)
    assert 'class="known_difference"' in render_html(matrix)
    assert "known-diff [1]" in render_markdown(matrix)

    strict = write_all(_known(True), tmp_path / "strict")
    tree = assert_valid_junit(strict["junit"])
    failure = tree.find(".//testcase[@name='isolated[podman]']/failure")
    assert failure is not None and failure.get("type") == "KnownDifference"
    assert tree.getroot().get("failures") == "1"
    assert "strict" in strict["markdown"].read_text()


def test_report_diff_shows_a_new_known_difference(tmp_path: Path) -> None:
    old = copy.deepcopy(_known(False))
    old["cases"][0]["status"] = "passed"
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(_known(False)))
    diff = conformance("report", "diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"))
    assert diff.returncode == 0
    assert "newly known differences: 1" in diff.stdout and "runtime.network_isolation" in diff.stdout


_GAPPY_DRIVER = """
from conformance.drivers.base import RuntimeDriver, register_driver


@register_driver
class GappyDriver(RuntimeDriver):
    \"\"\"A runtime that fails every container step (exit 3) and declares one difference.\"\"\"

    name = "gappy"

    def argv(self, args):
        return ["/bin/sh", "-c", "echo gappy cannot $0; exit 3", " ".join(args)]

    def prepare(self):
        pass

    def version(self):
        return "0.0"

    def features(self):
        return {
            "runtime.gap": False,  # gappy has this gap, documented
            "runtime.no_gap": True,
        }
"""

_GAPPY_SUITE = """name: gaps
description: failures that are, and are not, declared differences
cases:
  - id: declared
    title: fails where the driver declares the gap
    differences: [runtime.gap]
    steps:
      - container: run --rm busybox true
  - id: undeclared
    title: names a key the driver declares present, so its failure is a failure
    differences: [runtime.no_gap]
    steps:
      - container: run --rm busybox true
"""


def test_known_difference_through_the_plugin(tmp_path: Path) -> None:
    """A driver (registered by a pytest plugin here) declares runtime.gap absent: the case naming it fails as a
    known difference with the driver's own comment, pytest shows an xfail, the run exits 0 - unless strict."""
    (tmp_path / "gappy_driver.py").write_text(_GAPPY_DRIVER)
    suite = tmp_path / "gaps.yaml"
    suite.write_text(_GAPPY_SUITE)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "gappy_driver",
                               str(suite), "--runtime", "gappy", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(tmp_path)})

    both = run("--report-dir", str(tmp_path / "both"))
    assert both.returncode == 1, both.stdout[-3000:]
    records = {c["case"]: c for c in json.loads((tmp_path / "both" / "results.json").read_text())["cases"]}
    assert records["undeclared"]["status"] == "failed"
    declared = records["declared"]
    assert declared["status"] == "known_difference"
    assert declared["difference"] == {"key": "runtime.gap", "note": "gappy has this gap, documented"}
    assert declared["reason"] == "known difference runtime.gap: gappy has this gap, documented"
    assert "exit status 3" in declared["message"]
    assert "1 failed, 1 xfailed" in both.stdout

    lenient = run("-k", "declared and not undeclared", "--report-dir", str(tmp_path / "lenient"))
    assert lenient.returncode == 0, lenient.stdout[-3000:]
    strict = run("-k", "declared and not undeclared", "--strict-differences", "--report-dir", str(tmp_path / "s"))
    assert strict.returncode == 1, strict.stdout[-3000:]
    document = json.loads((tmp_path / "s" / "results.json").read_text())
    assert document["strict_differences"] is True and document["summary"]["known_difference"] == 1
    failure = etree.parse(str(tmp_path / "s" / "junit.xml")).find(".//failure")
    assert failure is not None and failure.get("type") == "KnownDifference"


@pytest.mark.slow
@pytest.mark.peer
def test_failure_of_a_declared_difference_on_podman_is_a_known_difference(tmp_path: Path) -> None:
    """podman's driver declares runtime.inspect_oom_killed absent; a case naming that key fails on podman as a
    known difference (exit 0), fails plainly on refrt (exit 1), and fails a --strict run."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/apt/peers.txt)")
    suite = tmp_path / "diff.yaml"
    suite.write_text(
        "name: diffs\ndescription: a failure podman's driver declares\ncases:\n"
        "  - id: oom-flag\n    title: fails wherever it runs\n    differences: [runtime.inspect_oom_killed]\n"
        "    steps:\n      - container: run --rm busybox sh -c 'exit 3'\n")
    lenient = conformance("run", str(suite), "--runtime", "podman", "--report-dir", str(tmp_path / "p"))
    assert lenient.returncode == 0, lenient.stdout[-3000:] + lenient.stderr
    record = json.loads((tmp_path / "p" / "results.json").read_text())["cases"][0]
    assert record["status"] == "known_difference"
    assert record["difference"] == {"key": "runtime.inspect_oom_killed",
                                    "note": "State.OOMKilled stays false after an OOM kill"}
    assert "exit status 3" in record["message"]
    assert "KNOWN_DIFFERENCE" in lenient.stdout
    strict = conformance("run", str(suite), "--runtime", "podman", "--strict", "--report-dir", str(tmp_path / "s"))
    assert strict.returncode == 1, strict.stdout[-3000:]
    plain = conformance("run", str(suite), "--runtime", "refrt", "--report-dir", str(tmp_path / "r"))
    assert plain.returncode == 1
    assert json.loads((tmp_path / "r" / "results.json").read_text())["cases"][0]["status"] == "failed"


# --- -k and --hosts -------------------------------------------------------------------------------------------


def _collected(result: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(line.split("::", 1)[1] for line in result.stdout.splitlines() if "::" in line)


def test_k_matches_case_ids_and_titles_not_the_runtime_path() -> None:
    suite = str(DATA / "keywords.yaml")
    runtime = "custom:/x/no-user"
    by_word = run_pytest(suite, "--collect-only", "-q", "--runtime", runtime, "-k", "user")
    assert by_word.returncode == 0, by_word.stdout + by_word.stderr
    label = next(name for name in _collected(by_word) if name.startswith("user-namespace"))[len("user-namespace"):]
    assert label.startswith("[custom-") and "/" not in label
    assert _collected(by_word) == [f"hostname{label}", f"user-namespace{label}"]  # id, title (any case)
    assert _collected(run_pytest(suite, "--collect-only", "-q", "--runtime", runtime, "-k", "no-user")) == []
    assert _collected(run_pytest(suite, "--collect-only", "-q", "--runtime", runtime, "-k", "keywords")) == [
        "host-only", f"hostname{label}", f"plain{label}", f"user-namespace{label}"]
    assert _collected(run_pytest(suite, "--collect-only", "-q", "--runtime", runtime, "-k", "runtime")) == [
        "host-only"]  # its title; no item matches on the runtime spec


def test_k_on_conformance_run_records_the_full_runtime(tmp_path: Path) -> None:
    result = conformance("run", str(DATA / "keywords.yaml"), "--runtime", "custom:/x/no-user", "-k",
                         "host-only or plain", "--report-dir", str(tmp_path))
    document = json.loads((tmp_path / "results.json").read_text())
    assert sorted(c["case"] for c in document["cases"]) == ["host-only", "plain"], result.stdout[-2000:]
    assert {c["runtime"] for c in document["cases"]} == {"none", "custom:/x/no-user"}


def test_testinfra_hosts_is_honoured_as_the_target(tmp_path: Path) -> None:
    here = run_pytest(str(DATA / "flaky.yaml"), "--hosts=local://", "--report-dir", str(tmp_path / "l"))
    assert here.returncode == 0, here.stdout[-2000:]
    assert json.loads((tmp_path / "l" / "results.json").read_text())["target"]["name"] == "local"
    away = run_pytest(str(DATA / "flaky.yaml"), "--hosts=ssh://root@127.0.0.1:1?timeout=3",
                      "--report-dir", str(tmp_path / "s"))
    assert away.returncode == 2, away.stdout[-2000:]  # the host is unreachable: it was used, not ignored
    document = json.loads((tmp_path / "s" / "results.json").read_text())
    assert document["target"]["name"] == "ssh://root@127.0.0.1:1?timeout=3"
    assert all("127.0.0.1:1" in c["message"] for c in document["cases"])


@pytest.mark.parametrize(("args", "words"), [
    (["--hosts=docker://web"], "'docker' backend cannot be a conformance target"),
    (["--hosts=docker://web", "-n", "2"], "'docker' backend cannot be a conformance target"),  # xdist controller
    (["--hosts=ssh://a,ssh://b"], "a conformance run has one target"),
    (["--hosts=ssh://root@h?controlpath=/x"], "option 'controlpath' is not supported"),
    (["--hosts=ssh://root@h", "--target", "qemu"], "name different targets"),
    (["--hosts=ssh://root@h", "--ssh-config", "/etc/ssh/ssh_config"], "--ssh-config is not supported"),
])
def test_testinfra_hosts_it_cannot_honour_is_refused_in_one_line(args: list[str], words: str,
                                                                  tmp_path: Path) -> None:
    result = run_pytest(str(DATA / "flaky.yaml"), *args, "--report-dir", str(tmp_path))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    # (a run may also report, on a line of its own, what it cleaned up after an earlier interrupted run)
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("conformance: error: --hosts=") and words in lines[0], lines
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results.json").exists()


def test_hosts_without_suites_is_left_to_testinfra(tmp_path: Path) -> None:
    """A plain test module in the same pytest: --hosts with a backend we cannot use is testinfra's business."""
    module = tmp_path / "test_plain.py"
    module.write_text("def test_nothing():\n    assert True\n")
    result = run_pytest(str(module), "--hosts=docker://web", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
