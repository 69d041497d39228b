"""``conformance run PATH...``: load the suites, then hand them to pytest with the conformance plugin.

Suites are loaded once up front so that a malformed file stops the run with one line naming file, line and key
(exit 2) before any target is booted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conformance.errors import ConformanceError, SuiteError
from conformance.reports.shards import parse_shard
from conformance.suite.loader import load_suite


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("run", help="run suites against a target and runtimes, write reports")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="suite files or directories")
    parser.add_argument("--target", default="local", help="local (default), ssh://user@host[:port], qemu, vagrant")
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
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in target.split("?")[0])
    return Path("reports") / f"{stamp}-{safe}"


def run(args: argparse.Namespace) -> int:
    if args.shard is not None:
        try:
            parse_shard(args.shard)
        except ValueError as exc:
            raise ConformanceError(str(exc)) from None
    files = suite_files(args.paths)
    for file in files:
        load_suite(file)  # raises SuiteError: one line, exit 2
    report_dir = Path(args.report_dir) if args.report_dir else default_report_dir(args.target)
    pytest_args = [str(f) for f in files]
    pytest_args += ["--target", args.target, "--report-dir", str(report_dir), "--destroy", args.destroy,
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
    if args.junitxml and (report_dir / "junit.xml").exists():
        shutil.copyfile(report_dir / "junit.xml", args.junitxml)
    if code not in (0, 1, 2):
        print(f"conformance: error: pytest ended with status {code}", file=sys.stderr)
        return 2
    return code
