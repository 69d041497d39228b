"""``--shard K/N`` and ``conformance report merge``: three shards of a run, joined, give what the whole run gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from conformance.reports.shards import in_shard, parse_shard

DATA = Path(__file__).parent / "data"
SUITE = DATA / "shardable.yaml"
REPO = Path(__file__).parents[2]
CASES = ["a", "b", "c", "d", "e", "f", "g", "fails", "skips", "flaky"]


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def statuses(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(c["suite"], c["case"], c["runtime"], c["status"]) for c in document["cases"]]


def junit_outcomes(path: Path) -> dict[str, list[str]]:
    tree = etree.parse(str(path))
    return {str(case.get("name")): [child.tag for child in case if child.tag != "system-out"]
            for case in tree.iter("testcase")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("shards")
    out: dict[str, Any] = {"root": root, "whole": conformance("run", str(SUITE), "--report-dir", str(root / "whole"))}
    for k in (1, 2, 3):
        out[k] = conformance("run", str(SUITE), "--shard", f"{k}/3", "--report-dir", str(root / f"s{k}"))
    out["merge"] = conformance("report", "merge", *(str(root / f"s{k}" / "results.json") for k in (1, 2, 3)),
                               "--report-dir", str(root / "merged"))
    return out


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def test_shards_split_the_cases_by_the_hash_of_their_ids(runs: dict[str, Any]) -> None:
    root = runs["root"]
    seen: list[str] = []
    for k in (1, 2, 3):
        document = load(root / f"s{k}" / "results.json")
        assert document["shard"] == {"index": k, "count": 3}
        mine = [c["case"] for c in document["cases"]]
        assert mine == [c for c in CASES if in_shard(f"shardable::{c}", k, 3)]  # stable: a function of the id
        seen += mine
        failed = "fails" in mine
        assert runs[k].returncode == (1 if failed else 0), runs[k].stdout[-2000:]
    assert sorted(seen) == sorted(CASES)  # disjoint, and together the whole run


def test_three_shards_merged_equal_one_whole_run(runs: dict[str, Any]) -> None:
    root = runs["root"]
    whole, merged = load(root / "whole" / "results.json"), load(root / "merged" / "results.json")
    assert runs["whole"].returncode == 1
    assert runs["merge"].returncode == 1, runs["merge"].stdout + runs["merge"].stderr  # the run's exit code
    assert statuses(merged) == statuses(whole)
    assert merged["summary"] == whole["summary"] == {"passed": 7, "flaky": 1, "failed": 1, "known_difference": 0,
                                                     "skipped": 1, "error": 0, "total": 10}
    assert merged["exit_code"] == whole["exit_code"] == 1
    assert merged["joined_shards"] == 3
    for key in ("target", "runtimes", "collect_errors", "strict_differences", "format"):
        assert merged[key] == whole[key], key
    assert junit_outcomes(root / "merged" / "junit.xml") == junit_outcomes(root / "whole" / "junit.xml")
    for name in ("summary.md", "report.html"):
        assert (root / "merged" / name).exists()
    table = [line for line in (root / "whole" / "summary.md").read_text().splitlines() if line.startswith("|")]
    assert table == [line for line in (root / "merged" / "summary.md").read_text().splitlines()
                     if line.startswith("|")]
    assert "joined 3 shards: 10 cases, exit code 1" in runs["merge"].stdout
    assert "FLAKY     shardable::flaky" in runs["merge"].stdout  # the run's terminal table, as the run printed it
    assert "FLAKY     shardable::flaky" in runs["whole"].stdout
    assert (root / "merged" / "matrix.html").exists()


def test_merge_refuses_a_missing_or_repeated_shard(runs: dict[str, Any]) -> None:
    root = runs["root"]
    one, two = (str(root / f"s{k}" / "results.json") for k in (1, 2))
    missing = conformance("report", "merge", one, two)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"conformance: error: shard 3/3 is missing (have {one}, {two})")
    twice = conformance("report", "merge", one, one, two)
    assert twice.returncode == 2 and "are both shard 1/3" in twice.stderr
    assert len(twice.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["4/3", "0/2", "x", "1/0"])
def test_bad_shard_is_one_line_and_exit_2(value: str, tmp_path: Path) -> None:
    result = conformance("run", str(SUITE), "--shard", value, "--report-dir", str(tmp_path / "r"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--shard" in result.stderr
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError):
        parse_shard(value)


def test_an_empty_shard_passes_and_still_writes_its_results(tmp_path: Path) -> None:
    count = 40
    empty = next(k for k in range(1, count + 1) if not any(in_shard(f"shardable::{c}", k, count) for c in CASES))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(SUITE), "--shard", f"{empty}/{count}",
         "--report-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    document = load(tmp_path / "results.json")
    assert document["cases"] == [] and document["shard"] == {"index": empty, "count": count}


def test_merge_joins_shards_next_to_another_run(runs: dict[str, Any]) -> None:
    """Shards and an ordinary results file: the shards become one column, the other run its own (matrix only)."""
    root = runs["root"]
    result = conformance("report", "merge", *(str(root / f"s{k}" / "results.json") for k in (1, 2, 3)),
                         str(root / "whole" / "results.json"))
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["suite", "case", "none@local", "none@local", "#2"]
    assert "joined" not in result.stdout  # no single run's reports from a mixed set
    rows = [line.split() for line in result.stdout.splitlines()[2:12]]
    assert {row[1]: row[2:] for row in rows}["flaky"] == ["flaky", "flaky"]
