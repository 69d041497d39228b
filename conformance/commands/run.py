"""``conformance run PATH...``: load the suites, then hand them to pytest with the conformance plugin.

Suites are loaded once up front so that a malformed file stops the run with one line naming file, line and key
(exit 2) before any target is booted.

Several ``--target`` options (``--target qemu:bullseye --target qemu:trixie --target 'qemu?cgroup=v1'``) run the
suites on each target in turn, each into a directory of its own under the report directory, then write one
``results.json`` (and the other reports) holding every case, and ``matrix.md``/``matrix.html``: a column per
runtime@target whose header names the target's kernel and cgroup layout. The exit code is the worst of the runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError, SuiteError
from conformance.reports.shards import parse_shard
from conformance.suite.loader import load_suite


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("run", help="run suites against a target and runtimes, write reports")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="suite files or directories")
    parser.add_argument("--target", action="append",
                        help="local (default), ssh://user@host[:port], qemu[:RELEASE][?cgroup=v1], vagrant; "
                             "repeatable: one results file with a column per runtime@target")
    parser.add_argument("--runtime", action="append", help="runtime under test, repeatable (default: refrt)")
    parser.add_argument("--report-dir", help="where reports go (default reports/<timestamp>-<target>/)")
    parser.add_argument("-k", dest="keyword",
                        help="only cases matching this pytest -k expression (case ids, titles, suite names)")
    parser.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failure or error")
    parser.add_argument("-n", dest="workers", type=int, help="run N targets in parallel (pytest-xdist)")
    parser.add_argument("--junitxml", help="also write the JUnit report to this path")
    parser.add_argument("--destroy", choices=("always", "passing", "never"), default="always",
                        help="what happens to a disposable VM at the end (default: always)")
    parser.add_argument("--strict", action="store_true",
                        help="known differences (a case's declared runtime.* differences) fail the run: exit 1")
    parser.add_argument("--shard", metavar="K/N",
                        help="run only shard K of N (a stable split by case id); join with 'report merge'")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.set_defaults(func=run)


def suite_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if p.suffix in (".yaml", ".yml")
                            and not p.name.startswith("_"))
        elif path.is_file():
            files.append(path)
        else:
            raise SuiteError("no such file or directory", path=raw)
    if not files:
        raise SuiteError("no suite files (*.yaml) found", path=" ".join(paths))
    return files


def default_report_dir(target: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"{stamp}-{safe_name(target.split('?')[0])}"


def run(args: argparse.Namespace) -> int:
    if args.shard is not None:
        try:
            parse_shard(args.shard)
        except ValueError as exc:
            raise ConformanceError(str(exc)) from None
    files = suite_files(args.paths)
    for file in files:
        load_suite(file)  # raises SuiteError: one line, exit 2
    targets = list(dict.fromkeys(args.target or ["local"]))
    if len(targets) == 1:
        report_dir = Path(args.report_dir) if args.report_dir else default_report_dir(targets[0])
        code = run_one(args, files, targets[0], report_dir)
        if args.junitxml and (report_dir / "junit.xml").exists():
            shutil.copyfile(report_dir / "junit.xml", args.junitxml)
        return code
    report_dir = Path(args.report_dir) if args.report_dir else default_report_dir("multi")
    runs: list[tuple[Path, int]] = []
    for spec in targets:
        print(f"conformance: target {spec}", file=sys.stderr, flush=True)
        sub_dir = report_dir / safe_name(spec)
        runs.append((sub_dir, run_one(args, files, spec, sub_dir)))
    return combine_runs(runs, report_dir, args.junitxml)


def safe_name(target: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target)


def run_one(args: argparse.Namespace, files: list[Path], target: str, report_dir: Path) -> int:
    """One pytest session of the suites against one target; its exit code (0, 1, or 2 for anything else)."""
    pytest_args = [str(f) for f in files]
    pytest_args += ["--target", target, "--report-dir", str(report_dir), "--destroy", args.destroy,
                    "-p", "no:cacheprovider", "-o", "addopts=", "-o", "testpaths=", "-rfEs",
                    # `python -m conformance` imported the plugin before pytest could rewrite it: harmless.
                    "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    for runtime in args.runtime or ["refrt"]:
        pytest_args += ["--runtime", runtime]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    if args.exitfirst:
        pytest_args.append("-x")
    if args.strict:
        pytest_args.append("--strict-differences")
    if args.shard:
        pytest_args += ["--shard", args.shard]
    if args.workers:
        pytest_args += ["-n", str(args.workers)]
    pytest_args.append("-v" * args.verbose if args.verbose else "-q")
    code = int(pytest.main(pytest_args))
    if code not in (0, 1, 2):
        print(f"conformance: error: pytest ended with status {code}", file=sys.stderr)
        return 2
    return code


def combine_runs(runs: list[tuple[Path, int]], report_dir: Path, junitxml: str | None) -> int:
    """One results document (and matrix) from the runs of several targets; the worst exit code of them."""
    from conformance.reports import load_results, write_all
    from conformance.reports.compare import merge, render_html, render_markdown, render_terminal
    from conformance.reports.status import counts

    code = max(c for _, c in runs)
    documents = [(str(d / "results.json"), load_results(d / "results.json")) for d, _ in runs
                 if (d / "results.json").exists()]
    if not documents:
        raise ConformanceError(f"no target produced results (see {report_dir})")
    cases = [case for _, document in documents for case in document["cases"]]
    for position, case in enumerate(cases):
        case["position"] = position
    runtimes: dict[str, Any] = {}
    for _, document in documents:
        for name, info in document.get("runtimes", {}).items():
            runtimes.setdefault(name, info)
    first, last = documents[0][1], documents[-1][1]
    combined = {
        **first,
        "finished": last["finished"],
        "duration": round(sum(float(d.get("duration", 0)) for _, d in documents), 3),
        "target": {"name": " + ".join(str(d["target"].get("name")) for _, d in documents), "backend": "multi"},
        "targets": [d["target"] for _, d in documents],
        "runtimes": runtimes,
        "summary": counts(cases),
        "exit_code": code,
        "collect_errors": [e for _, d in documents for e in d.get("collect_errors", [])],
        "cases": cases,
    }
    write_all(combined, report_dir)
    matrix = merge(documents)
    facts = {str(d["target"].get("name")): d["target"] for _, d in documents}
    relabel = {}
    for column in matrix.columns:
        target = facts.get(column.target, {})
        relabel[column] = replace(column, label=f"{column.label} (Linux {target.get('kernel', '?')}, "
                                                f"cgroup {target.get('cgroup', '?')})")
    matrix.columns = [relabel[c] for c in matrix.columns]
    for row in matrix.rows:
        row.cells = {relabel[c]: cell for c, cell in row.cells.items()}
    (report_dir / "matrix.md").write_text(render_markdown(matrix), encoding="utf-8")
    (report_dir / "matrix.html").write_text(render_html(matrix), encoding="utf-8")
    print(render_terminal(matrix))
    print(f"reports: {report_dir} (exit code {code})")
    if junitxml:
        shutil.copyfile(report_dir / "junit.xml", junitxml)
    return code
