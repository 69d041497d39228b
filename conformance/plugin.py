"""pytest plugin: every ``*.yaml`` suite file becomes a collector, every case (per runtime) an item.

The verdicts map onto pytest's own outcomes so that pytest, JUnit consumers and our reports agree: the case's
``setup:`` *and* ``steps:`` run during the item's setup phase, so anything the harness cannot do there surfaces
as a pytest *error*; a failed expectation in ``steps:`` is stored and raised from ``runtest`` - a *failure*;
``teardown:`` runs in the item's teardown (an error there is an *error*); a missing feature is a *skip* raised in
setup with the key in its reason. Each item's full record travels in ``report.user_properties`` so reports also
work under pytest-xdist, where items run in worker processes.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Generator, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import ConformanceError, SuiteError, TargetError
from conformance.features import missing
from conformance.session import RunSession
from conformance.suite.loader import load_suite
from conformance.suite.model import Case, Suite
from conformance.suite.runner import CaseRunner, ExpectationFailed, StepResult

RECORD_KEY = "conformance_record"
_session_key = pytest.StashKey[RunSession]()
_results_key = pytest.StashKey[dict[str, Any]]()


class SetupFailed(ConformanceError):
    """A case's ``setup:`` steps did not do what they should: the case cannot be judged."""


class TeardownFailed(ConformanceError):
    """A case's ``teardown:`` steps failed: the target may hold leftovers."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "conformance suites")
    group.addoption("--target", default="local", help="target host: local, ssh://user@host, qemu, vagrant")
    group.addoption("--runtime", action="append", default=None,
                    help="runtime under test (repeatable): refrt, podman, docker. Default: refrt")
    group.addoption("--report-dir", default=None, help="write junit.xml, results.json, report.html, summary.md")
    group.addoption("--destroy", default="always", choices=("always", "passing", "never"),
                    help="what to do with a disposable VM target at the end (as Test Kitchen)")


def pytest_configure(config: pytest.Config) -> None:
    runtimes = config.getoption("runtime") or ["refrt"]
    worker = getattr(config, "workerinput", None)
    run_id = worker.get("conformance_run_id") if worker else None
    config.stash[_session_key] = RunSession(config.getoption("target"), runtimes, run_id=run_id,
                                            destroy=config.getoption("destroy"))
    config.stash[_results_key] = {"cases": [], "collect_errors": [], "started": time.time()}
    for level in ("must", "should", "may"):
        config.addinivalue_line("markers", f"{level}: a suite case of level {level.upper()} (select with -m)")
    # SIGTERM unwinds like Ctrl-C, so sessionfinish still destroys VMs and removes containers.
    if worker is None and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure_node(node: Any) -> None:
    """(xdist) Every worker shares the controller's run id; each brings up its own target."""
    node.workerinput["conformance_run_id"] = node.config.stash[_session_key].run_id


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and not file_path.name.startswith("_"):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    suite: Suite

    def collect(self) -> Iterator[pytest.Item]:
        self.suite = load_suite(self.path)
        runtimes = self.config.stash[_session_key].runtimes
        for case in self.suite.cases:
            for runtime in (runtimes if case.uses_runtime else [None]):
                name = f"{case.id}[{runtime}]" if runtime else case.id
                item = CaseItem.from_parent(self, name=name, suite=self.suite, case=case, runtime=runtime)
                item.add_marker(getattr(pytest.mark, case.level.lower()))
                item.extra_keyword_matches.add(self.suite.name)
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, SuiteError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))


class CaseItem(pytest.Item):
    def __init__(self, *, suite: Suite, case: Case, runtime: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.case = case
        self.runtime = runtime
        self.runner: CaseRunner | None = None
        self.failure: ExpectationFailed | None = None
        self.tmp = ""
        self.record: dict[str, Any] | None = None

    @property
    def session_state(self) -> RunSession:
        return self.config.stash[_session_key]

    def setup(self) -> None:
        state = self.session_state
        self.started = time.monotonic()
        requires = [*self.suite.requires, *self.case.requires]
        features = dict(state.features())
        driver = state.driver(self.runtime) if self.runtime else None
        if self.runtime:
            features.update(state.runtime_features(self.runtime))
        reason = missing(requires, features)
        if reason:
            pytest.skip(reason)
        variables = {**self.suite.vars, "runtime": self.runtime or "none", "target": state.target.name,
                     "run_id": state.run_id, "unique": f"cf-{_token()}"}
        if "registry" in self.suite.services:
            variables["registry"] = state.service("registry").address
        made = state.target.run("mktemp -d /tmp/conformance-case.XXXXXX", timeout=30)
        if made.exit_status != 0:
            raise TargetError(f"cannot create a temporary directory on the target: {made.stderr.strip()}")
        self.tmp = variables["tmp"] = made.stdout.strip()
        self.runner = CaseRunner(state.target, driver, variables, time.monotonic() + self.case.timeout)
        try:
            self.runner.run_steps("setup", self.case.setup)
        except ExpectationFailed as exc:
            raise SetupFailed(f"setup failed: {exc}") from None
        try:
            self.runner.run_steps("steps", self.case.steps)
        except ExpectationFailed as exc:
            self.failure = exc

    def runtest(self) -> None:
        if self.failure is not None:
            raise self.failure

    def teardown(self) -> None:
        if self.runner is None:
            return
        state = self.session_state
        # Teardown gets its own time budget: it must run even when the case used up its timeout.
        self.runner.deadline = time.monotonic() + max(60.0, self.case.timeout / 2)
        try:
            self.runner.run_steps("teardown", self.case.teardown)
        except ExpectationFailed as exc:
            raise TeardownFailed(f"teardown failed: {exc}") from None
        finally:
            if self.tmp:
                state.target.run(f"rm -rf {self.tmp}", timeout=60)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        exc = excinfo.value
        if isinstance(exc, ExpectationFailed):
            return _describe_failure(exc.result)
        if isinstance(exc, ConformanceError):
            evidence = getattr(exc, "evidence", "")
            return f"{type(exc).__name__}: {exc}" + (f"\n--- evidence ---\n{evidence}" if evidence else "")
        return str(super().repr_failure(excinfo))

    def _repr_failure_py(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # pytest renders setup/teardown exceptions with this private hook; harness errors get one clear line.
        if isinstance(excinfo.value, (ConformanceError, ExpectationFailed)):
            return self.repr_failure(excinfo)
        return super()._repr_failure_py(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.line - 1, f"{self.suite.name}::{self.name}"


def _describe_failure(result: StepResult) -> str:
    lines = [f"{result.label} (line {result.line}): {result.message}"]
    if result.command:
        lines.append(f"command: {result.command}")
    for stream in ("stdout", "stderr"):
        text = getattr(result, stream).strip()
        if text:
            lines.append(f"--- {stream} ---\n{text[-2000:]}")
    return "\n".join(lines)


def _token() -> str:
    import secrets

    return secrets.token_hex(4)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if not isinstance(item, CaseItem):
        return report
    if item.record is None:
        item.record = _new_record(item)
    record = item.record
    record["duration"] = round(record["duration"] + report.duration, 3)
    if report.skipped and record["status"] == "passed":
        record["status"] = "skipped"
        longrepr = report.longrepr
        record["reason"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    elif report.failed:
        message = str(report.longrepr) if report.longrepr else "failed"
        if report.when == "call":
            record["status"] = "failed"
            record["message"] = message.split("\n", 1)[0]
        elif record["status"] != "failed":
            record["status"] = "error"
            record["message"] = message.split("\n", 1)[0]
        record["details"] = (record.get("details", "") + "\n" + message).strip()
        if call.excinfo is not None and isinstance(call.excinfo.value, TargetError):
            record["evidence"] = call.excinfo.value.evidence
    if report.when == "teardown":
        state = item.session_state
        if item.runner is not None:
            record["steps"] = [r.to_dict() for r in item.runner.results]
            record["captured"] = item.runner.captured
        record["target"] = {"name": state.target_spec, **state.facts}
        if item.runtime and record["status"] != "skipped":
            record["runtime_version"] = _safe_version(state, item.runtime)
        report.user_properties.append((RECORD_KEY, json.dumps(record)))
    return report


def _safe_version(state: RunSession, runtime: str) -> str:
    try:
        return state.runtime_versions().get(runtime, "unknown")
    except Exception:
        return "unknown"


def _new_record(item: CaseItem) -> dict[str, Any]:
    return {
        "suite": item.suite.name, "case": item.case.id, "name": item.name, "title": item.case.title,
        "spec": item.case.spec, "level": item.case.level, "runtime": item.runtime or "none",
        "file": str(item.path), "line": item.case.line, "status": "passed", "reason": "", "message": "",
        "duration": 0.0, "steps": [], "captured": {},
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == RECORD_KEY:
            results = _controller_results(report)
            if results is not None:
                results["cases"].append(json.loads(str(value)))


_CONFIG: list[pytest.Config] = []


def _controller_results(report: pytest.TestReport) -> dict[str, Any] | None:
    return _CONFIG[0].stash[_results_key] if _CONFIG else None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[:] = [session.config]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed and _CONFIG:
        _CONFIG[0].stash[_results_key]["collect_errors"].append(
            {"file": report.nodeid, "message": str(report.longrepr).strip().splitlines()[-1]})


def exit_code(cases: list[dict[str, Any]], collect_errors: list[Any]) -> int:
    """0 all passed (skips allowed); 1 any conformance failure; 2 any harness error or nothing ran."""
    statuses = {case["status"] for case in cases}
    if collect_errors or not cases:
        return 2
    if "failed" in statuses:
        return 1
    if "error" in statuses:
        return 2
    return 0


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash[_session_key]
    results = config.stash[_results_key]
    state.any_failed = any(c["status"] in ("failed", "error") for c in results["cases"])
    state.close()
    if hasattr(config, "workerinput"):
        return
    conformance_mode = bool(results["cases"]) or any(
        e["file"].endswith((".yaml", ".yml")) for e in results["collect_errors"])
    if not conformance_mode:
        return
    code = exit_code(results["cases"], results["collect_errors"])
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        code = 2
    document = build_document(state, results, code)
    config.stash[_document_key] = document
    report_dir = config.getoption("report_dir")
    if report_dir:
        from conformance.reports import write_all

        write_all(document, Path(report_dir))
    session.exitstatus = code


_document_key = pytest.StashKey[dict[str, Any]]()


def build_document(state: RunSession, results: dict[str, Any], code: int) -> dict[str, Any]:
    """The results.json document: the run's header, its summary and every case record."""
    cases = results["cases"]
    counts = {status: sum(1 for c in cases if c["status"] == status)
              for status in ("passed", "failed", "skipped", "error")}
    target = next((c["target"] for c in cases if c.get("target")), {"name": state.target_spec})
    runtimes: dict[str, dict[str, str]] = {}
    for case in cases:
        if case["runtime"] != "none":
            runtimes.setdefault(case["runtime"], {"version": case.get("runtime_version", "unknown")})
    return {
        "format": "conformance-results/1",
        "run_id": state.run_id,
        "started": _iso(results["started"]),
        "finished": _iso(time.time()),
        "duration": round(time.time() - results["started"], 3),
        "target": target,
        "runtimes": runtimes,
        "summary": {**counts, "total": len(cases)},
        "exit_code": code,
        "collect_errors": results["collect_errors"],
        "cases": cases,
    }


def _iso(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    document = config.stash.get(_document_key, None)
    if document is None:
        return
    from conformance.reports.summary import terminal_table

    terminalreporter.write_sep("=", "conformance summary")
    terminalreporter.write_line(terminal_table(document))
    report_dir = config.getoption("report_dir")
    if report_dir:
        terminalreporter.write_line(f"reports: {report_dir}")
