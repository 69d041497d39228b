"""``conformance run`` end to end on the local target: verdicts, exit codes and every report format."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from conformance.reports.junit import SCHEMA

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parents[2]


def conformance(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("four")
    result = conformance("run", str(DATA / "four_statuses.yaml"), "--report-dir", str(out),
                         "--junitxml", str(out / "copy.xml"))
    return result, out


def test_four_statuses_exit_code_1(four: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, _ = four
    assert result.returncode == 1, result.stdout + result.stderr


def test_results_json_has_every_status_with_details(four: tuple[Any, Path]) -> None:
    document = json.loads((four[1] / "results.json").read_text())
    status = {c["case"]: c for c in document["cases"]}
    assert {k: v["status"] for k, v in status.items()} == {
        "passes": "passed", "fails": "failed", "skipped": "skipped", "errors": "error"}
    assert document["summary"] == {"passed": 1, "flaky": 0, "failed": 1, "known_difference": 0, "skipped": 1,
                                   "error": 1, "total": 4}
    assert document["exit_code"] == 1
    assert status["skipped"]["reason"].startswith("missing feature feature.nobody-has")
    assert "expected lt 2" in status["fails"]["message"]
    assert status["passes"]["captured"] == {"greeting": "hello"}
    assert status["errors"]["message"].startswith("SetupFailed: setup failed")
    # teardown ran although setup failed
    assert [s["phase"] for s in status["errors"]["steps"]] == ["setup", "teardown"]
    assert document["target"]["kernel"] and document["target"]["cgroup"] in ("v1", "v2", "hybrid")


def test_junit_validates_and_has_unique_ids(four: tuple[Any, Path]) -> None:
    tree = etree.parse(str(four[1] / "junit.xml"))
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    assert schema.validate(tree), schema.error_log
    cases = tree.findall(".//testcase")
    ids = [(c.get("classname"), c.get("name")) for c in cases]
    assert len(ids) == len(set(ids)) == 4
    assert {c.get("classname") for c in cases} == {"sample.local"}
    outcome = {c.get("name"): [child.tag for child in c if child.tag != "system-out"] for c in cases}
    assert outcome == {"passes": [], "fails": ["failure"], "skipped": ["skipped"], "errors": ["error"]}
    skipped = tree.find(".//skipped")
    assert skipped is not None and "feature.nobody-has" in skipped.get("message", "")
    props = {p.get("name") for p in tree.findall(".//property")}
    assert {"kernel", "cgroup", "target", "backend"} <= props
    assert (four[1] / "copy.xml").read_bytes() == (four[1] / "junit.xml").read_bytes()


def test_junit_schema_rejects_duplicate_ids(four: tuple[Any, Path]) -> None:
    tree = etree.parse(str(four[1] / "junit.xml"))
    suite = tree.find(".//testsuite")
    assert suite is not None
    suite.append(etree.fromstring('<testcase classname="sample.local" name="passes" time="0"/>'))
    assert not etree.XMLSchema(etree.parse(str(SCHEMA))).validate(tree)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.append(str(values["id"]))
        for key in ("src", "href"):
            if values.get(key):
                self.external.append(str(values[key]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_renders_summary_then_failures_first(four: tuple[Any, Path]) -> None:
    parser = _Collector()
    parser.feed((four[1] / "report.html").read_text())
    case_ids = [i for i in parser.ids if i.startswith("case-")]
    assert case_ids == ["case-sample-fails", "case-sample-errors", "case-sample-skipped", "case-sample-passes"]
    assert parser.ids.index("summary") < parser.ids.index("case-sample-fails")
    text = " ".join(parser.text)
    assert "expected lt 2" in text and "echo 3" in text
    assert parser.external == []  # opens offline


def test_markdown_and_terminal_summary(four: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    markdown = (four[1] / "summary.md").read_text()
    assert "| sample" in markdown and "FAILED" in markdown
    assert "conformance summary" in four[0].stdout
    assert "TOTAL" in four[0].stdout


def test_malformed_suite_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = DATA / "malformed" / "unknown_key.yaml"
    result = conformance("run", str(bad), "--report-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"conformance: error: {bad}:8: unknown key 'expcet' in step of case 'a' steps "
                     "(allowed: capture, check, container, expect, file, name, retry, run, stdin, timeout)"]
    assert not (tmp_path / "r").exists()


def test_pytest_collects_suites_directly_with_the_plugin(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(DATA / "four_statuses.yaml"), "-p", "no:cacheprovider",
         "--report-dir", str(tmp_path), "-k", "passes or skipped", "-q"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    document = json.loads((tmp_path / "results.json").read_text())
    assert sorted(c["case"] for c in document["cases"]) == ["passes", "skipped"]


def test_main_job_passes_on_this_host(tmp_path: Path) -> None:
    """The README's main job on its default target: the shipped suites pass here (skips allowed)."""
    result = conformance("run", "suites/host.yaml", "--report-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["summary"]["failed"] == document["summary"]["error"] == 0
    assert document["summary"]["passed"] >= 8


def test_unreachable_target_is_a_harness_error_exit_2(tmp_path: Path) -> None:
    result = conformance("run", "suites/host.yaml", "-k", "ns-pid or ns-uts", "--target",
                         "ssh://root@127.0.0.1:1?timeout=3", "--report-dir", str(tmp_path))
    assert result.returncode == 2, result.stdout[-2000:]
    document = json.loads((tmp_path / "results.json").read_text())
    assert {c["status"] for c in document["cases"]} == {"error"}
    assert all("127.0.0.1:1" in c["message"] for c in document["cases"])
